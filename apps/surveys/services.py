"""Writes for NPS surveys: inviting a customer (the journey node's side
effect), recording an answer (the survey page's POST, an SMS reply), and
nothing else.

An answer is recorded once per invitation: the response row is unique on its
invitation, and writers of one invitation queue on its row lock, so two
POSTs at once (a double click, two tabs) make one response, the later one an
update. Each change of the answer is also a customer Event `nps_responded`
(score, category, survey, journey, comment) and the traits `nps_score`,
`nps_category`, `nps_responded_at`, written through `customers.ingest` in the
same transaction with source "api", so segments, branches, goals,
`wait_for_event` and event-triggered journeys hear it like any live event.
"""

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction

from apps.customers.models import Customer
from apps.customers.schemas import IdentifyIn, TrackIn
from apps.customers.services import ingest
from apps.messaging.models import Channel, Message

from . import links
from .models import Survey, SurveyInvitation, SurveyResponse, category_of

NPS_RESPONDED = "nps_responded"
MAX_COMMENT = 2000
# In the event's properties (the whole comment stays on the response).
EVENT_COMMENT_CHARS = 1000
# A message in one of these states reaches (or will reach) the customer.
GOING_OUT = {
    Message.Status.QUEUED,
    Message.Status.DEFERRED,
    Message.Status.SENDING,
    Message.Status.SENT,
    Message.Status.DELIVERED,
    Message.Status.OPENED,
    Message.Status.CLICKED,
}


class UnknownSurvey(LookupError):
    """A survey slug that does not exist."""


class SurveyClosed(Exception):
    """The invitation no longer takes answers (its links expired). The
    message is safe to show."""


# --- inviting --------------------------------------------------------------------------


@dataclass(frozen=True)
class Invited:
    """What `survey_invite` did: the invitation and its message, or, when
    the customer was surveyed too recently, neither and `skipped` says why."""

    invitation: SurveyInvitation | None
    message: Message | None
    skipped: str = ""


def resurvey_window() -> timedelta:
    return timedelta(days=settings.NPS_RESURVEY_AFTER_DAYS)


def survey_get(survey: Survey | str) -> Survey:
    if isinstance(survey, Survey):
        return survey
    found = Survey.objects.select_related("email_template", "sms_template").filter(slug=survey)
    if not found:
        raise UnknownSurvey(f"survey {survey!r} does not exist")
    return found[0]


def survey_invite(
    *,
    customer: Customer,
    survey: Survey | str,
    channel: str,
    idempotency_key: str,
    now: datetime,
    context: dict | None = None,
    journey: str = "",
    node_id: str = "",
    enrollment_id: int | None = None,
) -> Invited:
    """Ask `customer` to answer `survey` by `channel` (email: the eleven
    score links; SMS: "reply with a number"), once per `idempotency_key`.

    Re-survey throttling: a customer surveyed (an invitation that went out)
    within NPS_RESURVEY_AFTER_DAYS of `now` is not asked again; the result's
    `skipped` says when they were. Otherwise the message is sent through
    `message_send` with the invitation's links as `links.nps` in its context,
    and its policies decide as for any message (a refused message leaves the
    invitation unsent: `sent_at` empty, so it does not count as surveyed).

    Raises UnknownSurvey, and ValueError naming the problem for a channel
    the survey has no template for."""
    from apps.messaging.services import message_send

    if channel not in Channel.values:
        raise ValueError(f"channel: must be 'email' or 'sms', got {channel!r}")
    survey = survey_get(survey)
    template = survey.template_for(channel)
    if template is None:
        raise ValueError(f"survey {survey.slug!r} has no {channel} template")
    existing = (
        SurveyInvitation.objects.select_related("message")
        .filter(idempotency_key=idempotency_key)
        .first()
    )
    if existing is not None and existing.message is not None:
        return Invited(existing, existing.message)

    with transaction.atomic():
        if existing is None:
            # Two journeys surveying one customer at once: one waits for the
            # other's invitation, then sees it and is throttled.
            list(Customer.objects.select_for_update().filter(pk=customer.pk).values("pk"))
            last = last_surveyed(customer.pk, now=now)
            if last is not None:
                return Invited(None, None, skipped=throttled_reason(last, now=now))
        token = existing.token if existing is not None else links.new_token()
        message = message_send(
            customer=customer,
            template=template,
            idempotency_key=idempotency_key,
            now=now,
            context={**(context or {}), "links": {"nps": links.score_urls(token)}},
            journey=journey,
            node_id=node_id,
            enrollment_id=enrollment_id,
        )
        goes_at = message.send_after or now
        fields = {
            "message": message,
            "sent_at": goes_at if message.status in GOING_OUT else None,
            "expires_at": goes_at + timedelta(days=settings.NPS_LINK_VALID_DAYS),
        }
        if existing is not None:
            for name, value in fields.items():
                setattr(existing, name, value)
            existing.save(update_fields=list(fields))
            return Invited(existing, message)
        invitation = SurveyInvitation.objects.create(
            survey=survey,
            customer=customer,
            channel=channel,
            token=token,
            idempotency_key=idempotency_key,
            journey=journey,
            node_id=node_id,
            enrollment_id=enrollment_id,
            created_at=now,
            **fields,
        )
    return Invited(invitation, message)


def last_surveyed(customer_id: int, *, now: datetime) -> SurveyInvitation | None:
    """The customer's latest invitation that went out within the re-survey
    window, as of `now` (an invitation made after `now`, seen by a
    backtest, does not count)."""
    return (
        SurveyInvitation.objects.select_related("survey")
        .filter(
            customer_id=customer_id,
            sent_at__isnull=False,
            sent_at__gt=now - resurvey_window(),
            created_at__lte=now,
        )
        .order_by("-sent_at", "-pk")
        .first()
    )


def throttled_reason(last: SurveyInvitation, *, now: datetime) -> str:
    days = max((now - last.sent_at).days, 0)
    ago = "today" if days == 0 else f"{days} day{'s' if days != 1 else ''} ago"
    return (
        f"skipped: surveyed {ago} ({last.survey.slug!r} on {last.sent_at:%Y-%m-%d}); no "
        f"customer is surveyed twice within {settings.NPS_RESURVEY_AFTER_DAYS} days "
        "(NPS_RESURVEY_AFTER_DAYS)"
    )


# --- answering -------------------------------------------------------------------------


@dataclass(frozen=True)
class Answered:
    response: SurveyResponse
    created: bool  # the first answer to this invitation
    changed: bool  # created, or the score or comment changed (an event was recorded)


def score_check(score: object) -> int:
    if isinstance(score, bool) or not isinstance(score, int) or not 0 <= score <= 10:
        raise ValueError(f"score: must be a whole number from 0 to 10, got {score!r}")
    return score


def comment_check(comment: str | None) -> str | None:
    if comment is None:
        return None
    if not isinstance(comment, str):
        raise ValueError("comment: must be text")
    comment = comment.replace("\x00", "").strip()
    if len(comment) > MAX_COMMENT:
        raise ValueError(f"comment: at most {MAX_COMMENT} characters, got {len(comment)}")
    return comment


def survey_respond(
    *,
    invitation: SurveyInvitation,
    score: int,
    now: datetime,
    comment: str | None = None,
    channel: str | None = None,
) -> Answered:
    """Record or update the one response to `invitation`. `comment` None
    keeps the stored one (an SMS score correction); a string replaces it.
    An answer identical to the stored one changes nothing and records no
    event. Raises ValueError naming a bad score or comment, SurveyClosed
    after the invitation's `expires_at`."""
    score = score_check(score)
    comment = comment_check(comment)
    channel = channel or invitation.channel
    with transaction.atomic():
        # Writers of one invitation queue here: the second sees the first's
        # response.
        locked = SurveyInvitation.objects.select_for_update().select_related("survey")
        invitation = locked.get(pk=invitation.pk)
        if now >= invitation.expires_at:
            raise SurveyClosed(f"this survey closed on {invitation.expires_at:%B %d, %Y}")
        response = SurveyResponse.objects.filter(invitation=invitation).first()
        created = response is None
        if created:
            response = SurveyResponse(
                invitation=invitation,
                customer_id=invitation.customer_id,
                survey_id=invitation.survey_id,
                score=score,
                category=category_of(score),
                comment=comment or "",
                channel=channel,
                responded_at=now,
                updated_at=now,
            )
            try:
                with transaction.atomic():
                    response.save(force_insert=True)
            except IntegrityError:
                # Only possible without the row lock; the other answer stands
                # and this one updates it.
                response = SurveyResponse.objects.get(invitation=invitation)
                created = False
        if not created:
            new_comment = response.comment if comment is None else comment
            if (response.score, response.comment) == (score, new_comment):
                return Answered(response, created=False, changed=False)
            response.score, response.category = score, category_of(score)
            response.comment, response.channel = new_comment, channel
            response.updated_at, response.revision = now, response.revision + 1
            response.save(
                update_fields=["score", "category", "comment", "channel", "updated_at", "revision"]
            )
        if invitation.responded_at is None:
            invitation.responded_at = now
            invitation.save(update_fields=["responded_at"])
        _record(invitation, response, now=now)
    return Answered(response, created=created, changed=True)


def _record(invitation: SurveyInvitation, response: SurveyResponse, *, now: datetime) -> None:
    customer_ref = Customer.objects.filter(pk=response.customer_id).values_list(
        "external_id", flat=True
    )[0]
    traits = {
        "nps_score": response.score,
        "nps_category": response.category,
        "nps_responded_at": now.isoformat(),
    }
    properties = {
        "score": response.score,
        "category": response.category,
        "survey": invitation.survey.slug,
        "journey": invitation.journey,
        "node_id": invitation.node_id,
        "channel": response.channel,
        "comment": response.comment[:EVENT_COMMENT_CHARS],
        "invitation_id": invitation.pk,
        "response_id": response.pk,
        "revision": response.revision,
    }
    ingest(
        [
            IdentifyIn(userId=customer_ref, traits=traits, timestamp=now),
            TrackIn(
                userId=customer_ref,
                event=NPS_RESPONDED,
                properties=properties,
                timestamp=now,
                messageId=f"nps:{response.pk}:{response.revision}",
            ),
        ],
        received_at=now,
        source="api",
    )


def invitation_open(token: str) -> SurveyInvitation | None:
    """The invitation of a link's token (expired or not), or None."""
    if not links.TOKEN_RE.match(token) or token == links.PREVIEW_TOKEN:
        return None  # not one of ours (a cut-short link, a NUL byte): never a query
    return SurveyInvitation.objects.select_related("survey", "response").filter(token=token).first()


# --- SMS replies -------------------------------------------------------------------------

# A reply that is a score: "9", "9.", "9/10", "9 out of 10", "7, support was slow"
# (the rest is the comment). "100", "1st", "-5" and "11" are not scores.
_SEP = r"[\s.,;:!?)\-\u2013\u2014]"
_SCORE_REPLY = re.compile(
    rf"^\s*(10|[0-9])(?:\s*/\s*10|\s+out\s+of\s+10)?(?=$|{_SEP}){_SEP}*(.*)$",
    re.DOTALL | re.IGNORECASE,
)


def parse_score_reply(text: str) -> tuple[int, str] | None:
    """(score, the rest as a comment) when a text answers with a score."""
    match = _SCORE_REPLY.match(text or "")
    if match is None:
        return None
    return int(match.group(1)), match.group(2).strip()


def sms_invitation_open(customer_ids, *, now: datetime) -> SurveyInvitation | None:
    """The latest SMS invitation of these customers (the ones with the
    texting number) that went out within NPS_SMS_REPLY_HOURS and still takes
    answers."""
    if not customer_ids:
        return None
    window = timedelta(hours=settings.NPS_SMS_REPLY_HOURS)
    return (
        SurveyInvitation.objects.select_related("survey")
        .filter(
            customer_id__in=list(customer_ids),
            channel=Channel.SMS,
            sent_at__isnull=False,
            sent_at__lte=now,
            sent_at__gt=now - window,
            expires_at__gt=now,
        )
        .order_by("-sent_at", "-pk")
        .first()
    )


def sms_reply_take(*, body: str, customer_ids, now: datetime) -> str | None:
    """Take an inbound text as an answer to the sender's open SMS survey:
    a score (with an optional comment after it) records or updates the
    response and is answered with the follow-up question (or the thank-you
    when it came with a comment); free text after a score without a comment
    is that comment. Returns the text to send back, or None when the text
    is not for a survey (it is then kept as an ordinary reply)."""
    invitation = sms_invitation_open(customer_ids, now=now)
    if invitation is None:
        return None
    parsed = parse_score_reply(body)
    if parsed is not None:
        score, rest = parsed
        answered = survey_respond(
            invitation=invitation,
            score=score,
            comment=rest[:MAX_COMMENT] or None,
            channel=Channel.SMS,
            now=now,
        )
        survey = invitation.survey
        if answered.response.comment:
            return survey.thank_you_text
        return f"Thanks! {survey.follow_up_question}"  # the comment may come next
    response = SurveyResponse.objects.filter(invitation=invitation).first()
    text = (body or "").strip()
    if response is None or response.comment or not text:
        return None
    survey_respond(
        invitation=invitation,
        score=response.score,
        comment=text[:MAX_COMMENT],
        channel=Channel.SMS,
        now=now,
    )
    return invitation.survey.thank_you_text
