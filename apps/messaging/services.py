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

    message_send_many(requests: Sequence[SendRequest], *, now) -> list[Message]

is the same for a batch (a journey tick's sends), in a fixed number of
statements whatever its size; `message_send` is a batch of one.

How: a message renders with its id (its unsubscribe and preferences links
and the click-tracking hooks, `render_hooks`, need it). The ids are drawn
from the table's sequence first, so each message is rendered and then
inserted once, snapshot included (subject, HTML, text; the SMS body in
`text`); the hooks' rows reference it before it is inserted, which the
deferred foreign keys allow. The insert is in a savepoint: a concurrent send
with the same key loses the race and returns the winner's row. A refused
send is not rendered.
"""

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from apps.core.bulk import rows_insert
from apps.customers.models import Customer

from . import policies, render_hooks
from .accounts_context import accounts_prefetch
from .models import Channel, Message, Template
from .rendering import TemplateRenderError, render, uses_accounts

logger = logging.getLogger(__name__)

S = Message.Status


class UnknownTemplate(LookupError):
    """`message_send` was given a template slug that does not exist."""


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
    to_address: str | None = None
    is_test: bool = False


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
    request = SendRequest(
        customer=customer,
        template=template,
        idempotency_key=idempotency_key,
        context=context,
        journey=journey,
        node_id=node_id,
        enrollment_id=enrollment_id,
        over_cap=over_cap,
        to_address=to_address,
        is_test=is_test,
    )
    return message_send_many([request], now=now)[0]


def message_send_many(requests: Sequence[SendRequest], *, now: datetime) -> list[Message]:
    """`message_send` for each request, in the caller's transaction, with the
    same contract per request (idempotent per key, policies, render, one
    Message each, deliveries published on commit); one Message per request,
    in order. A request's frequency cap counts the sends before it in the
    batch; a key given twice is sent once.

    The batch costs a fixed number of statements, not a number per send:
    one read of the keys already sent, the policies' three reads, one
    read of the ids from the sequence, one insert of the rendered rows,
    and the tracking hooks' one insert. Raises UnknownTemplate
    (naming it) or ValueError before writing anything if a request not sent
    before has an unknown template, or any has a bad argument."""
    for request in requests:
        _check_request(request)
    if not requests:
        return []
    sent = _sent_before([request.idempotency_key for request in requests])
    fresh: dict[str, SendRequest] = {}
    for request in requests:
        if request.idempotency_key not in sent:
            fresh.setdefault(request.idempotency_key, request)
    if fresh:
        templates = _templates([request.template for request in fresh.values()])
        customers = _customers([request.customer for request in fresh.values()])
        sent |= _send_new(list(fresh.values()), templates, customers, now=now)
    return [sent[request.idempotency_key] for request in requests]


def _check_request(request: SendRequest) -> None:
    if not request.idempotency_key or len(request.idempotency_key) > 200:
        raise ValueError("idempotency_key: must be 1 to 200 characters")
    if request.over_cap not in policies.OVER_CAP_CHOICES:
        raise ValueError(f"over_cap: must be 'skip' or 'defer', got {request.over_cap!r}")


def _slug(template: Template | str) -> str:
    return template.slug if isinstance(template, Template) else template


def _templates(given: Sequence[Template | str]) -> dict[str, Template]:
    """{slug: Template} for the templates given, reading only the slugs."""
    found = {t.slug: t for t in given if isinstance(t, Template)}
    wanted = {t for t in given if isinstance(t, str) and t not in found}
    if wanted:
        found |= {t.slug: t for t in Template.objects.filter(slug__in=wanted)}
        if missing := sorted(wanted - found.keys()):
            raise UnknownTemplate(f"template {missing[0]!r} does not exist")
    return found


def _customers(given: Sequence[Customer | int]) -> dict[int, Customer]:
    found = {c.pk: c for c in given if isinstance(c, Customer)}
    wanted = {c for c in given if not isinstance(c, Customer)} - found.keys()
    if wanted:
        found |= Customer.objects.in_bulk(wanted)
        if missing := sorted(wanted - found.keys()):
            raise Customer.DoesNotExist(f"customer {missing[0]} does not exist")
    return found


def _customer_id(customer: Customer | int) -> int:
    return customer.pk if isinstance(customer, Customer) else int(customer)


def _sent_before(keys: Sequence[str]) -> dict[str, Message]:
    return {m.idempotency_key: m for m in Message.objects.filter(idempotency_key__in=set(keys))}


def _send_new(
    requests: list[SendRequest],
    templates: dict[str, Template],
    customers: dict[int, Customer],
    *,
    now: datetime,
) -> dict[str, Message]:
    """Policies, insert, render and publish for requests whose keys were not
    sent before; {key: Message}."""
    asks = [
        policies.Ask(
            customer=customers[_customer_id(r.customer)],
            template=templates[_slug(r.template)],
            to_address=r.to_address,
            over_cap=r.over_cap,
            is_test=r.is_test,
        )
        for r in requests
    ]
    decisions = policies.evaluate_many(asks, now=now)
    messages = {
        r.idempotency_key: _new_message(r, ask, decision, now=now)
        for r, ask, decision in zip(requests, asks, decisions, strict=True)
    }
    to_render = {
        r.idempotency_key: (message, ask, r)
        for r, ask in zip(requests, asks, strict=True)
        # Refused before rendering: the reason is the record.
        if (message := messages[r.idempotency_key]).status != S.SUPPRESSED
    }
    _ids_allocate(list(messages.values()))
    stored = _insert(
        messages,
        before=lambda keys: _render([to_render[k] for k in keys if k in to_render], now=now),
    )
    rendering = [to_render[key] for key in to_render if messages[key] is stored[key]]
    queued = [message.pk for message, _, _ in rendering if message.status == S.QUEUED]
    if queued:
        from .delivery import delivery_enqueue  # loads the providers' SDKs: only when sending

        delivery_enqueue(queued, now=now, stamped=True)
    return stored


def _ids_allocate(messages: list[Message]) -> None:
    """Give each new message its id from the table's sequence, as its insert
    would, in one statement (the sequence looked up once, in the subquery:
    as nextval's argument it was looked up again for every id)."""
    table = Message._meta.db_table
    with transaction.get_connection().cursor() as cursor:
        cursor.execute(
            "SELECT nextval((SELECT pg_get_serial_sequence(%s, 'id')::regclass)) "
            "FROM generate_series(1, %s)",
            [table, len(messages)],
        )
        for message, (pk,) in zip(messages, cursor.fetchall(), strict=True):
            message.pk = pk


# Every column, the id included: it is drawn beforehand.
_MESSAGE_FIELDS = [f.name for f in Message._meta.concrete_fields]


def _insert(
    messages: dict[str, Message], *, before: Callable[[list[str]], None]
) -> dict[str, Message]:
    """Insert the new messages in one statement, in a savepoint, after
    `before(keys)` (rendering, whose hooks write rows) in the same savepoint.
    A key that a concurrent send stored meanwhile is theirs: their row
    stands, ours is dropped, and the rest is inserted again (and `before`
    run again for them: the savepoint took its rows away). {key: the stored
    Message}."""
    stored: dict[str, Message] = {}
    pending = dict(messages)
    while pending:
        try:
            with transaction.atomic():
                before(list(pending))
                rows_insert(Message, list(pending.values()), _MESSAGE_FIELDS)
        except IntegrityError:
            taken = _sent_before(list(pending))
            if not taken:
                raise
            stored |= taken
            pending = {key: m for key, m in pending.items() if key not in taken}
            continue
        return stored | pending
    return stored


def _render(items: list[tuple[Message, policies.Ask, SendRequest]], *, now: datetime) -> None:
    """Render each new message (its id is in its links) and run the
    post-render hooks over the emails (click tracking). A render error fails
    that message only, and so does a hook's error (the batch's hooks run
    again one message at a time to find it)."""
    htmls: list[tuple[Message, str]] = []
    # The accounts of the customers whose template names them, in one query.
    accounts_prefetch(ask.customer for _, ask, _ in items if uses_accounts(ask.template))
    for message, ask, request in items:
        try:
            rendered = render(
                ask.template, customer=ask.customer, now=now, message=message,
                context=request.context,
            )  # fmt: skip
        except TemplateRenderError as exc:
            _fail(message, str(exc), now=now)
            continue
        if message.channel == Channel.SMS:
            message.text = rendered.body
        else:
            message.subject, message.html, message.text = (
                rendered.subject,
                rendered.html,
                rendered.text,
            )
            if rendered.html:
                htmls.append((message, rendered.html))
    _post_render(htmls, now=now)


def _post_render(htmls: list[tuple[Message, str]], *, now: datetime) -> None:
    if not htmls:
        return
    try:
        # Hooks may write rows: a savepoint keeps their failure from
        # spoiling the caller's transaction.
        with transaction.atomic():
            done = render_hooks.post_render_many(htmls)
    except Exception:
        done = None
    if done is not None:
        for (message, _), html in zip(htmls, done, strict=True):
            message.html = html
        return
    for message, html in htmls:  # one at a time, to fail only the culprit
        try:
            with transaction.atomic():
                message.html = render_hooks.post_render(message=message, html=html)
        except Exception as exc:
            logger.exception("message %s: post-render hook failed", message.pk)
            _fail(message, f"after rendering: {type(exc).__name__}: {exc}", now=now)


# Every column's default, in the model's order (constants: none is callable).
_MESSAGE_DEFAULTS = {f.attname: f.get_default() for f in Message._meta.concrete_fields}
assert not any(f.has_default() and callable(f.default) for f in Message._meta.concrete_fields)
_CUSTOMER, _TEMPLATE = Message._meta.get_field("customer"), Message._meta.get_field("template")


def _new_message(
    request: SendRequest, ask: policies.Ask, decision: policies.Decision, *, now: datetime
) -> Message:
    template = ask.template
    values = _MESSAGE_DEFAULTS | {
        "customer_id": ask.customer.pk,
        "channel": template.channel,
        "category": template.category,
        "topic": template.topic,
        "template_id": template.pk,
        "journey": request.journey,
        "node_id": request.node_id,
        "enrollment_id": request.enrollment_id,
        "idempotency_key": request.idempotency_key,
        "is_test": request.is_test,
        "to_address": decision.address or (request.to_address or "")[:254],
        "from_address": _from_address(template),
        "reply_to": template.reply_to if template.channel == Channel.EMAIL else "",
        "status": {policies.SEND: S.QUEUED, policies.DEFER: S.DEFERRED}.get(
            decision.outcome, S.SUPPRESSED
        ),
        "reason": decision.reason[:300],
        "send_after": decision.send_after,
        # Queued now: its delivery is published when this transaction commits
        # (delivery_enqueue(stamped=True); a render failure takes it off).
        "published_at": now if decision.outcome == policies.SEND else None,
        "created_at": now,
        "updated_at": now,  # rows_insert runs no pre_save (auto_now)
    }
    # By position, Django's quick way (by keyword, each value goes through
    # its field's descriptor: 27 us a message, a tenth of a journey's send).
    message = Message(*values.values())
    _CUSTOMER.set_cached_value(message, ask.customer)
    _TEMPLATE.set_cached_value(message, template)
    return message


def _from_address(template: Template) -> str:
    if template.channel == Channel.EMAIL:
        return template.from_email or settings.DEFAULT_FROM_EMAIL
    return settings.TWILIO_FROM_NUMBER or settings.TWILIO_MESSAGING_SERVICE_SID


def _fail(message: Message, error: str, *, now: datetime) -> None:
    """Mark a message being rendered failed (inserted so)."""
    message.status, message.error, message.failed_at = S.FAILED, error, now
    message.send_after = message.published_at = None
    message.subject = message.html = message.text = ""


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
