"""What a provider's answer to a call means, and the write that records it
(run in the transaction of the next group's claims): sent, a retry with
backoff, failed (with what the error says about the address), or unknown."""

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import transaction

from ..consent import consent_record, suppression_add
from ..models import ConsentRecord, Message
from ..providers import OutcomeUnknownError, PermanentError, Provider, TransientError
from ..transitions import message_settle, messages_record_sent

logger = logging.getLogger(__name__)

S = Message.Status
# ± this share of the backoff, so messages failing together do not retry together.
JITTER = 0.25


def _call(
    message: Message, provider: Provider, *, clock: Callable[[], datetime]
) -> tuple[str, Callable[[], object]]:
    """The one provider call for a claimed message: its outcome (a
    DeliveryReport field name) and the write that records it, to be run in a
    transaction."""
    try:
        answer: str | Exception = provider.send(message)
    except Exception as exc:
        answer = exc
    return _outcome(message, answer, provider, clock=clock)


def _outcome(
    message: Message,
    answer: str | Exception,
    provider: Provider,
    *,
    clock: Callable[[], datetime],
) -> tuple[str, Callable[[], object]]:
    """What a provider's answer to a call means: the provider's id (sent) or
    the error the call raised."""
    if isinstance(answer, TransientError):
        now = clock()
        if message.attempts >= settings.DELIVERY_MAX_ATTEMPTS:
            error = f"{answer} (gave up after {message.attempts} attempts)"
            return "failed", partial(
                _settle, message, S.FAILED, now=now, error=error, failed_at=now
            )
        if answer.retry_after is not None:
            # The provider said when; a little spread so a whole batch does
            # not come back in the same instant.
            spread = min(5.0, 0.1 * answer.retry_after + 0.5)
            wait = answer.retry_after + random.uniform(0, spread)
        else:
            wait = backoff(message.attempts)
        return "retrying", partial(
            _settle,
            message,
            S.QUEUED,
            now=now,
            error=str(answer),
            send_after=now + timedelta(seconds=wait),
            published_at=None,  # the sweeper publishes it when it is due
        )
    if isinstance(answer, PermanentError):
        return "failed", partial(_fail, message, answer, now=clock())
    if isinstance(answer, OutcomeUnknownError):
        # The request may have reached the provider: sending it again could
        # send it twice. Known and described, so no traceback.
        logger.warning("delivery: message %s: outcome unknown: %s", message.pk, answer)
        return "unknown", partial(_settle, message, S.UNKNOWN, now=clock(), error=str(answer))
    if isinstance(answer, Exception):
        # A bug or an interruption mid-call: the provider may have the
        # message. Never guess: `unknown` is for a person to review.
        logger.error("delivery: message %s: unexpected error", message.pk, exc_info=answer)
        error = f"{provider.name}: {type(answer).__name__}: {answer}"
        return "unknown", partial(_settle, message, S.UNKNOWN, now=clock(), error=error)
    return "sent", _Sent(message, answer, clock())


@dataclass(frozen=True)
class _Sent:
    """The write recording a successful call; a group's are written together."""

    message: Message
    provider_message_id: str
    now: datetime

    @property
    def record(self) -> tuple[int, str, datetime]:
        """As transitions.messages_record_sent takes it."""
        return (self.message.pk, self.provider_message_id, self.now)

    def __call__(self) -> None:
        _record_sent([self])


def _write_results(writes: Sequence[Callable[[], object]]) -> None:
    """A group's results, in the caller's transaction: the sent ones in one
    statement, the others (retries, failures) one by one."""
    _record_sent([write for write in writes if isinstance(write, _Sent)])
    for write in writes:
        if not isinstance(write, _Sent):
            write()


def _record_sent(sent: Sequence[_Sent]) -> None:
    """Recorded even if a provider event overtook us (a status callback
    before the response): the status moves only if it may (to `sent` from
    `sending` or `unknown`), the provider's id is kept either way."""
    if not sent:
        return
    messages_record_sent([one.record for one in sent])
    _mark_sent(sent)


def _mark_sent(sent: Sequence[_Sent]) -> None:
    for one in sent:
        one.message.status, one.message.sent_at = S.SENT, one.now
        one.message.provider_message_id = one.provider_message_id


def backoff(attempts: int) -> float:
    """Seconds before retry number `attempts`: min(cap, base * 2**attempts), ±JITTER."""
    base = min(settings.DELIVERY_BACKOFF_CAP_S, settings.DELIVERY_BACKOFF_BASE_S * 2**attempts)
    return base * random.uniform(1 - JITTER, 1 + JITTER)


def _fail(message: Message, exc: PermanentError, *, now: datetime) -> None:
    """Fail the message and record what the error says about its address, in
    one transaction: an invalid number is suppressed, an SMS STOP both
    suppresses the number and revokes consent in the ledger."""
    with transaction.atomic():
        if not _settle(message, S.FAILED, now=now, error=str(exc), failed_at=now):
            return
        if exc.suppress:
            try:
                suppression_add(
                    channel=message.channel,
                    address=message.to_address,
                    reason=exc.suppress,
                    source=f"{message.provider} error {exc.code}",
                    now=now,
                    detail=str(exc),
                )
            except ValueError as problem:
                # Not even an address we can store (the provider agrees): the
                # failure itself is the record.
                logger.warning("delivery: message %s: not suppressed: %s", message.pk, problem)
        if exc.revoke_consent:
            consent_record(
                customer=message.customer_id,
                channel=message.channel,
                status=ConsentRecord.Status.REVOKED,
                source=ConsentRecord.Source.PROVIDER,
                recorded_at=now,
                wording=str(exc),
            )


def _settle(message: Message, status: str, *, now: datetime, **fields) -> bool:
    """Move a message this worker claimed out of `sending`. False when it is
    no longer ours (the sweeper already marked it unknown)."""
    moved = message_settle(message.pk, status, now=now, **fields)
    if moved:
        message.status = status
        for name, value in fields.items():
            setattr(message, name, value)
    return moved
