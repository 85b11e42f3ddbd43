"""Public tracking endpoints: the open pixel, the click redirect and the
providers' webhooks. Thin: verify, then one service call.

- The pixel answers the same GIF with `Cache-Control: no-store` for any
  token, valid or not (nothing to learn by probing), even if the database is
  down.
- The redirect goes only to the URL stored for the token's message and
  position; any other token gets a page of ours, never a redirect elsewhere.
- Webhooks verify before parsing: a bad or missing signature is 403, a
  malformed body 400, never a 500.
"""

import base64
import logging
from dataclasses import asdict
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST
from twilio.twiml.messaging_response import MessagingResponse

from . import sendgrid_events, twilio_events
from .services import hits, inbound_sms, provider_events
from .tokens import read_click_token, read_open_token

logger = logging.getLogger(__name__)

# A transparent 1x1 GIF (43 bytes).
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==")
USER_AGENT = "HTTP_USER_AGENT"


def _user_agent(request: HttpRequest) -> str:
    # gunicorn refuses control characters in headers; other servers may not,
    # and PostgreSQL text cannot hold NUL.
    return request.META.get(USER_AGENT, "").replace("\x00", "")


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    return response


@require_http_methods(["GET", "HEAD"])
def open_pixel(request: HttpRequest, token: str) -> HttpResponse:
    message_id = read_open_token(token)
    if message_id is not None:
        try:
            hits.open_record(
                message_id=message_id,
                now=timezone.now(),
                method=request.method,
                user_agent=_user_agent(request),
            )
        except DatabaseError:
            # An open lost is better than a broken image in someone's inbox.
            logger.exception("tracking: open of message %s not recorded", message_id)
    return _no_store(HttpResponse(PIXEL_GIF, content_type="image/gif"))


@require_http_methods(["GET", "HEAD"])
def click_redirect(request: HttpRequest, token: str) -> HttpResponse:
    found = read_click_token(token)
    url = None
    if found is not None:
        message_id, position = found
        try:
            url = hits.click_record(
                message_id=message_id,
                position=position,
                now=timezone.now(),
                method=request.method,
                user_agent=_user_agent(request),
            )
        except DatabaseError:
            logger.exception("tracking: click of message %s: database unavailable", message_id)
            page = render(request, "tracking/link_unavailable.html", status=503)
            return _no_store(page)
    if url is None or not url.lower().startswith(("http://", "https://")):
        page = render(request, "tracking/link_invalid.html", status=404)
        return _no_store(page)
    return _no_store(HttpResponseRedirect(url))


def _refused(status: int, problem: str) -> JsonResponse:
    return JsonResponse({"error": problem}, status=status)


@csrf_exempt
@require_POST
def sendgrid_webhook(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    problem = sendgrid_events.verify(
        request.body,
        signature=request.META.get(sendgrid_events.SIGNATURE_HEADER, ""),
        timestamp=request.META.get(sendgrid_events.TIMESTAMP_HEADER, ""),
        public_key=settings.SENDGRID_WEBHOOK_PUBLIC_KEY,
        now=now,
        max_age=timedelta(seconds=settings.SENDGRID_WEBHOOK_MAX_AGE_S),
    )
    if problem is not None:
        logger.warning("tracking: SendGrid webhook refused: %s", problem)
        return _refused(403, problem)
    try:
        events = sendgrid_events.parse(request.body, received_at=now)
    except sendgrid_events.PayloadError as exc:
        return _refused(400, str(exc))
    result = provider_events.provider_events_store(events, now=now)
    if result.refused:
        first = next(e.error for e in events if e.error)
        logger.warning(
            "tracking: SendGrid webhook: %s of %s events refused (stored with their error), "
            "first: %s", result.refused, result.received, first[:300],
        )  # fmt: skip
    return JsonResponse(asdict(result))


@csrf_exempt
@require_POST
def twilio_status(request: HttpRequest) -> HttpResponse:
    problem = twilio_events.verify(request)
    if problem is not None:
        logger.warning("tracking: Twilio status callback refused: %s", problem)
        return _refused(403, problem)
    now = timezone.now()
    try:
        event = twilio_events.status_event(request.POST, received_at=now)
    except ValueError as exc:
        return _refused(400, str(exc))
    provider_events.provider_events_store([event], now=now)
    return HttpResponse(status=204)


@csrf_exempt
@require_POST
def twilio_inbound(request: HttpRequest) -> HttpResponse:
    """Answers TwiML: a message back for HELP (or a listener's reply), an
    empty response otherwise (Twilio itself confirms STOP and START)."""
    problem = twilio_events.verify(request)
    if problem is not None:
        logger.warning("tracking: Twilio inbound SMS refused: %s", problem)
        return _refused(403, problem)
    try:
        text = twilio_events.inbound_text(request.POST)
    except ValueError as exc:
        return _refused(400, str(exc))
    inbound = inbound_sms.inbound_sms_receive(text=text, now=timezone.now())
    twiml = MessagingResponse()
    if inbound.reply:
        twiml.message(inbound.reply)
    return HttpResponse(str(twiml), content_type="text/xml")
