"""Inbound SMS: a text sent to one of our numbers, handled at once, since its
answer (TwiML) is the webhook's response. Keywords opt the number out or back
in, or ask for help; other text is offered to the listeners
(`hooks.on_inbound_sms`) or kept for review.
"""

from collections.abc import Sequence
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction

from apps.customers.models import Customer
from apps.customers.schemas import TrackIn
from apps.customers.services import ingest
from apps.messaging import consent
from apps.messaging.models import Channel, ConsentRecord, Suppression
from apps.messaging.selectors import normalize_address

from .. import hooks, twilio_events
from ..events import SMS_OPTED_IN, SMS_OPTED_OUT, SMS_REPLIED
from ..models import InboundSms


def inbound_sms_receive(*, text: twilio_events.InboundText, now: datetime) -> InboundSms:
    """Store and act on an inbound text (Twilio's posted parameters, read by
    `twilio_events.inbound_text`). Keywords
    act at once: STOP-type opt the number out (suppression + a consent
    record per customer with that number), START/YES/UNSTOP opt it back in,
    HELP answers with SMS_HELP_TEXT. Other text is offered to the listeners
    (`hooks.on_inbound_sms`: an NPS score), else kept as free text, flagged
    for review when it reads like a request to stop. A repeated MessageSid
    (Twilio retrying) returns the stored message and does nothing again."""
    existing = InboundSms.objects.filter(message_sid=text.sid).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            return _inbound_act(text, now=now)
    except IntegrityError:
        # The same message delivered twice at once: the other one acted.
        return InboundSms.objects.get(message_sid=text.sid)


def _inbound_act(text: twilio_events.InboundText, *, now: datetime) -> InboundSms:
    sid, number, body = text.sid, text.number, text.body
    customers = list(Customer.objects.filter(phone=number).order_by("id"))
    kind = twilio_events.keyword(body)
    if kind in (InboundSms.Kind.OPT_OUT, InboundSms.Kind.OPT_IN) and not _is_phone(number):
        # A keyword from a sender that is no phone number (an alphanumeric or
        # channel-prefixed sender) can suppress nothing: kept as text, for review.
        kind = None
    inbound = InboundSms.objects.create(
        message_sid=sid,
        from_number=number,
        to_number=text.to,
        body=body,
        customer=customers[0] if customers else None,
        kind=kind or InboundSms.Kind.TEXT,
        received_at=now,
        payload=text.params,
    )
    event = None
    if kind == InboundSms.Kind.OPT_OUT:
        sms_opt_out(number, customers, now=now, source=ConsentRecord.Source.SMS_KEYWORD,
                    wording=body)  # fmt: skip
        event = SMS_OPTED_OUT
    elif kind == InboundSms.Kind.OPT_IN:
        sms_opt_in(number, customers, now=now, wording=body)
        event = SMS_OPTED_IN
    elif kind == InboundSms.Kind.HELP:
        inbound.reply = settings.SMS_HELP_TEXT
    else:
        taken = hooks.offer(inbound=inbound, customer_ids=[c.pk for c in customers], now=now)
        if taken is not None:
            inbound.kind, inbound.handled_by, inbound.reply = (
                InboundSms.Kind.REPLY,
                taken[0][:200],
                taken[1].text,
            )
        # Even a reply a listener took ("6, and stop texting me" as a survey
        # comment) is flagged: a request to stop is never left unread.
        inbound.needs_review = twilio_events.asks_to_stop(body)
        event = SMS_REPLIED
    inbound.save(update_fields=["kind", "handled_by", "reply", "needs_review"])
    if event and customers:
        properties = {"inbound_sms_id": inbound.pk, "kind": inbound.kind}
        if event == SMS_REPLIED:
            properties |= {"text": body[:500], "handled_by": inbound.handled_by}
        ingest(
            [
                TrackIn(
                    userId=c.external_id,
                    event=event,
                    properties=properties,
                    timestamp=now,
                    messageId=f"sms-in:{sid}:{c.pk}",
                )
                for c in customers
            ],
            received_at=now,
            source="api",
        )
    return inbound


def _is_phone(number: str) -> bool:
    try:
        normalize_address(Channel.SMS, number)
    except ValueError:
        return False
    return True


def sms_opt_out(
    number: str, customers: Sequence[Customer], *, now: datetime, source: str, wording: str
) -> None:
    """Suppress `number` for SMS (everyone, whatever customer it belongs to)
    and record the revocation in each customer's consent ledger."""
    consent.suppression_add(
        channel=Channel.SMS,
        address=number,
        reason=Suppression.Reason.SMS_OPT_OUT,
        source=source,
        now=now,
        detail=wording[:500],
    )
    for customer in customers:
        consent.consent_record(
            customer=customer.pk,
            channel=Channel.SMS,
            status=ConsentRecord.Status.REVOKED,
            source=source,
            recorded_at=now,
            wording=wording[:500],
        )


def sms_opt_in(number: str, customers: Sequence[Customer], *, now: datetime, wording: str) -> None:
    """Lift an SMS opt-out of `number` (only an opt-out: never a block added
    for another reason) and record consent granted for each customer."""
    active = Suppression.objects.filter(
        channel=Channel.SMS, address=number, lifted_at__isnull=True
    ).first()
    if active is not None and active.reason == Suppression.Reason.SMS_OPT_OUT:
        consent.suppression_lift(channel=Channel.SMS, address=number, now=now, by="sms_keyword")
    for customer in customers:
        consent.consent_record(
            customer=customer.pk,
            channel=Channel.SMS,
            status=ConsentRecord.Status.GRANTED,
            source=ConsentRecord.Source.SMS_KEYWORD,
            recorded_at=now,
            wording=wording[:500],
        )


def inbound_sms_opt_out(inbound: InboundSms, *, now: datetime, by: str) -> None:
    """A person read a free-text request to stop and acts on it (the admin's
    action): the number is opted out as if it had sent STOP, and the message
    is marked reviewed."""
    with transaction.atomic():
        customers = list(Customer.objects.filter(phone=inbound.from_number).order_by("id"))
        sms_opt_out(
            inbound.from_number,
            customers,
            now=now,
            source=ConsentRecord.Source.ADMIN,
            wording=f"Inbound SMS #{inbound.pk} read by {by}: {inbound.body}",
        )
        inbound_sms_mark_reviewed([inbound.pk], now=now, by=by)


def inbound_sms_mark_reviewed(ids: Sequence[int], *, now: datetime, by: str) -> int:
    return InboundSms.objects.filter(pk__in=ids, reviewed_at__isnull=True).update(
        reviewed_at=now, reviewed_by=by[:150]
    )
