"""Writes for messaging. The one way to send is `message_send`: journeys, the
admin's "send test" and `manage.py send_test` all call it.

CONTRACT (journeys and tracking rely on it; keep it):

    message_send(*, customer, template, idempotency_key, now, context=None,
                 journey="", node_id="", enrollment_id=None, over_cap="skip",
                 to_address=None, is_test=False) -> Message

- Idempotent: a Message with `idempotency_key` already stored is returned as it
  is (no policy runs again, nothing is enqueued again).
- Otherwise the policies run (apps.messaging.policies, in this order: address
  present, suppression list, consent, frequency cap for marketing, quiet hours)
  and the template renders (apps.messaging.rendering). The Message row is
  written in the caller's transaction with one of:
    queued      → a delivery is published when the transaction commits;
    deferred    → quiet hours (or a cap with over_cap="defer"): `send_after`
                  holds when it may go; the sweeper publishes it then;
    suppressed  → refused by a policy; `reason` says why in words
                  ("skipped: frequency cap 3/7d", "suppressed: unsubscribed",
                  "no consent: sms");
    failed      → the render failed; `error` holds the template error.
- `context` adds to the documented render context (`event`, `journey`, ...).

How: the row is inserted first (in a savepoint: a concurrent send with the
same key loses the race and returns the winner's row), then rendered, since
its unsubscribe and preferences links and the click-tracking hooks
(`render_hooks`) need its id, then updated with the snapshot of what goes out
(subject, HTML, text; the SMS body in `text`). A refused send is not rendered.
"""

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from apps.customers.models import Customer

from . import policies, render_hooks
from .models import Channel, Message, Template
from .rendering import TemplateRenderError, render

logger = logging.getLogger(__name__)

S = Message.Status


class UnknownTemplate(LookupError):
    """`message_send` was given a template slug that does not exist."""


def _template(template: Template | str) -> Template:
    if isinstance(template, Template):
        return template
    found = Template.objects.filter(slug=template).first()
    if found is None:
        raise UnknownTemplate(f"template {template!r} does not exist")
    return found


def _customer(customer: Customer | int) -> Customer:
    return customer if isinstance(customer, Customer) else Customer.objects.get(pk=customer)


def message_send(
    *,
    customer: Customer | int,
    template: Template | str,
    idempotency_key: str,
    now: datetime,
    context: Mapping[str, Any] | None = None,
    journey: str = "",
    node_id: str = "",
    enrollment_id: int | None = None,
    over_cap: str = "skip",
    to_address: str | None = None,
    is_test: bool = False,
) -> Message:
    """Send `template` to `customer` once per `idempotency_key` (see the
    module docstring for the contract). Raises UnknownTemplate for a slug
    that does not exist and ValueError for a bad argument; a template that
    does not render is a failed Message, never an exception, so one bad
    template cannot fail the batch it is sent in."""
    if not idempotency_key or len(idempotency_key) > 200:
        raise ValueError("idempotency_key: must be 1 to 200 characters")
    if over_cap not in policies.OVER_CAP_CHOICES:
        raise ValueError(f"over_cap: must be 'skip' or 'defer', got {over_cap!r}")
    existing = Message.objects.filter(idempotency_key=idempotency_key).first()
    if existing is not None:
        return existing
    template = _template(template)
    customer = _customer(customer)

    decision = policies.evaluate(
        customer=customer,
        template=template,
        now=now,
        to_address=to_address,
        over_cap=over_cap,
        is_test=is_test,
    )
    status = {policies.SEND: S.QUEUED, policies.DEFER: S.DEFERRED}.get(
        decision.outcome, S.SUPPRESSED
    )
    message = Message(
        customer=customer,
        channel=template.channel,
        category=template.category,
        topic=template.topic,
        template=template,
        journey=journey,
        node_id=node_id,
        enrollment_id=enrollment_id,
        idempotency_key=idempotency_key,
        is_test=is_test,
        to_address=decision.address or (to_address or "")[:254],
        from_address=_from_address(template),
        reply_to=template.reply_to if template.channel == Channel.EMAIL else "",
        status=status,
        reason=decision.reason[:300],
        send_after=decision.send_after,
        created_at=now,
    )
    try:
        with transaction.atomic():
            message.save(force_insert=True)
    except IntegrityError:
        # The same send, made at the same moment by someone else: theirs stands.
        return Message.objects.get(idempotency_key=idempotency_key)
    if status == S.SUPPRESSED:
        return message  # refused before rendering: the reason is the record

    try:
        rendered = render(template, customer=customer, now=now, message=message, context=context)
        html = rendered.html
        if html:
            # Hooks (click tracking) may write rows: a savepoint keeps their
            # failure from spoiling the caller's transaction.
            with transaction.atomic():
                html = render_hooks.post_render(message=message, html=html)
    except TemplateRenderError as exc:
        _fail(message, str(exc), now=now)
        return message
    except Exception as exc:  # a post-render hook failed: this send fails, not the batch
        logger.exception("message %s: post-render hook failed", message.pk)
        _fail(message, f"after rendering: {type(exc).__name__}: {exc}", now=now)
        return message

    if template.channel == Channel.SMS:
        message.text = rendered.body
    else:
        message.subject, message.html, message.text = rendered.subject, html, rendered.text
    message.save(update_fields=["subject", "html", "text", "updated_at"])
    if status == S.QUEUED:
        from .delivery import delivery_enqueue  # loads the providers' SDKs: only when sending

        delivery_enqueue([message.pk], now=now)
    return message


@dataclass(frozen=True)
class SendRequest:
    """One send for `message_send_many`: `message_send`'s arguments less `now`."""

    customer: Customer | int
    template: Template | str
    idempotency_key: str
    context: Mapping[str, Any] | None = None
    journey: str = ""
    node_id: str = ""
    enrollment_id: int | None = None
    over_cap: str = "skip"


def message_send_many(requests: Sequence[SendRequest], *, now: datetime) -> list[Message]:
    """`message_send` for each request, in order, in the caller's transaction:
    the same contract per request (idempotent per key, policies, render, one
    Message each, deliveries published on commit), one Message per request
    in the same order. A request's frequency cap counts the sends before it
    in the same batch."""
    return [
        message_send(
            customer=request.customer,
            template=request.template,
            idempotency_key=request.idempotency_key,
            now=now,
            context=request.context,
            journey=request.journey,
            node_id=request.node_id,
            enrollment_id=request.enrollment_id,
            over_cap=request.over_cap,
        )
        for request in requests
    ]


def _from_address(template: Template) -> str:
    if template.channel == Channel.EMAIL:
        return template.from_email or settings.DEFAULT_FROM_EMAIL
    return settings.TWILIO_FROM_NUMBER or settings.TWILIO_MESSAGING_SERVICE_SID


def _fail(message: Message, error: str, *, now: datetime) -> None:
    message.status, message.error, message.failed_at = S.FAILED, error, now
    message.send_after = None
    message.save(update_fields=["status", "error", "failed_at", "send_after", "updated_at"])


def message_send_test(*, template: Template, customer: Customer, to: str, now: datetime) -> Message:
    """Render and send a test now: a Message with its own key (a test is never
    "already sent"), then delivered in this process through the configured
    provider, so the outcome is known when this returns. Shared by the
    admin's button and `manage.py send_test`.

    The send also publishes its delivery task (as every send does); if a
    worker claims the message first, the delivery here finds nothing to
    claim, so this waits (a provider call's timeout at most) for the
    worker's answer. Either way there is one provider call.

    Raises ImproperlyConfigured (naming the setting) before writing anything
    when the channel's provider is not set up."""
    from .delivery import messages_deliver  # loads the providers' SDKs: only when sending
    from .providers import get_provider

    get_provider(template.channel)
    with transaction.atomic():
        message = message_send(
            customer=customer,
            template=template,
            idempotency_key=f"test:{uuid.uuid4().hex}",
            now=now,
            to_address=to,
            is_test=True,
        )
    if message.status != Message.Status.QUEUED:
        return message  # suppressed, failed to render (or deferred, which tests never are)
    messages_deliver([message.pk], now=now)
    message.refresh_from_db()
    give_up = time.monotonic() + settings.DELIVERY_TIMEOUT_S + 2
    while message.status == Message.Status.SENDING and time.monotonic() < give_up:
        time.sleep(0.2)
        message.refresh_from_db()
    return message


# --- resending ----------------------------------------------------------------------

# What a person may send again: the provider refused it (failed), bounced it,
# or we never learned whether it went (unknown, after a lease expired — the
# person resending has judged it did not go).
RESENDABLE = (S.FAILED, S.UNKNOWN, S.BOUNCED)


class NotResendable(ValueError):
    """`message_resend` was asked to resend a message it must not."""


def message_resend(message: Message, *, now: datetime, by: str = "") -> Message:
    """Send `message` again as a NEW message (the old row stays the record of
    what happened to it), through `message_send` with the same template,
    customer, journey, node and enrollment, so every policy runs again: an
    address suppressed since (a bounce usually is) gives a `suppressed`
    message saying so rather than a send.

    The key is `resend:<old id>:<n>`, n counting this message's resends, so
    asking twice resends twice but a retried request for the same resend (the
    same n, computed at the same moment) finds the first one. The address is
    the customer's current one (fixing a bounced address and resending is the
    usual repair), except for a test send, which goes to its own address.
    Over a frequency cap the resend waits until it fits (over_cap="defer"):
    a person asked for it to go. The event that triggered the original is
    not stored, so a template reading `event` renders without it.

    Raises NotResendable (naming the message and why) for a message in any
    other status or whose template was deleted."""
    if message.status not in RESENDABLE:
        allowed = ", ".join(str(status) for status in RESENDABLE)
        raise NotResendable(
            f"message {message.pk}: status is {message.status!r}; only {allowed} messages "
            "can be resent"
        )
    if message.template_id is None:
        raise NotResendable(f"message {message.pk}: its template was deleted, nothing to resend")
    prefix = f"resend:{message.pk}:"
    n = Message.objects.filter(idempotency_key__startswith=prefix).count() + 1
    resent = message_send(
        customer=message.customer_id,
        template=message.template,
        idempotency_key=f"{prefix}{n}",
        now=now,
        journey=message.journey,
        node_id=message.node_id,
        enrollment_id=message.enrollment_id,
        over_cap="defer",
        to_address=message.to_address if message.is_test else None,
        is_test=message.is_test,
    )
    logger.info(
        "message %s resent as %s (%s) by %s", message.pk, resent.pk, resent.status, by or "?"
    )
    return resent
