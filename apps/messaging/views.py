"""Messaging pages: the template editor's preview and test send (staff-only,
wrapped by the admin), and the customer's unsubscribe and preference pages
(public, reached by a signed link in a message).

Every view is thin: it reads the request, calls one service and shows what
happened."""

import ipaddress
import logging
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.admin.utils import unquote
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from apps.customers.models import Customer

from . import consent, links
from . import preview as messaging_preview
from .forms import PreferencesForm, PreviewForm, SendTestForm, masked
from .models import Channel, ConsentRecord, Message
from .services import message_send_test

if TYPE_CHECKING:
    from .admin import TemplateAdmin

logger = logging.getLogger(__name__)

# --- the template editor (staff) ---------------------------------------------------


def _form_errors(form) -> str:
    return " ".join(
        f"{form.fields[name].label or name}: {error}" if name != "__all__" else str(error)
        for name, errors in form.errors.items()
        for error in errors
    )


@require_POST
def template_preview(request: HttpRequest, *, model_admin: "TemplateAdmin") -> JsonResponse:
    """The editor's unsaved template rendered for a customer: subject, HTML and
    text (email) or the body with its segment count (SMS), and the problems
    that would refuse it at save. Reads only; nothing is saved or sent."""
    if not (model_admin.has_add_permission(request) or model_admin.has_change_permission(request)):
        raise PermissionDenied
    form = PreviewForm(request.POST)
    if not form.is_valid():
        return JsonResponse({"error": _form_errors(form)}, status=400)
    template = form.template()
    customer = form.cleaned_data["customer"]
    preview = messaging_preview.template_preview(template, customer=customer, now=timezone.now())
    return JsonResponse({"channel": template.channel, **preview})


def message_outcome(message: Message) -> dict:
    return {
        "message_id": message.pk,
        "status": message.status,
        "status_label": message.get_status_display(),
        "reason": message.reason,
        "error": message.error,
        "to": message.to_address,
        "provider": message.provider,
        "provider_message_id": message.provider_message_id,
        "url": reverse("admin:messaging_message_change", args=[message.pk]),
    }


@require_POST
def template_send_test(
    request: HttpRequest, object_id: str, *, model_admin: "TemplateAdmin"
) -> JsonResponse:
    """Send the saved template as a test and say what happened."""
    template = model_admin.get_object(request, unquote(object_id))
    if template is None:
        raise Http404(f"No template with id {object_id!r}.")
    if not model_admin.has_change_permission(request, template):
        raise PermissionDenied
    form = SendTestForm(request.POST, template=template)
    if not form.is_valid():
        return JsonResponse({"error": _form_errors(form)}, status=400)
    try:
        message = message_send_test(
            template=template,
            customer=form.cleaned_data["customer"],
            to=form.cleaned_data["to"],
            now=timezone.now(),
        )
    except ImproperlyConfigured as exc:
        return JsonResponse({"error": f"Not sent: {exc}"}, status=400)
    logger.info(
        "test send of %s by %s: message %s %s", template.slug, request.user, message.pk,
        message.status,
    )  # fmt: skip
    return JsonResponse(message_outcome(message))


# --- public pages (customers) --------------------------------------------------------


def public_context(**extra) -> dict:
    return {
        "company_name": settings.COMPANY_NAME,
        "company_postal_address": settings.COMPANY_POSTAL_ADDRESS,
        **extra,
    }


def link_invalid(request: HttpRequest, problem: str, *, status: int = 400) -> TemplateResponse:
    """A friendly page for a link that does not work (tampered, cut short by
    a mail client, expired, or its message gone): never a server error."""
    return TemplateResponse(
        request,
        "messaging/link_invalid.html",
        public_context(problem=problem[:1].upper() + problem[1:] + "."),
        status=status,
    )


def client_ip(request: HttpRequest) -> str | None:
    """The address the request came from (behind a proxy, configure it to
    set REMOTE_ADDR; X-Forwarded-For is not trusted here), None when it is
    not an IP address (a Unix socket, an odd server): the consent ledger
    stores only addresses."""
    address = request.META.get("REMOTE_ADDR") or ""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def user_agent(request: HttpRequest) -> str:
    # gunicorn refuses control characters in headers; other servers may not,
    # and PostgreSQL text cannot hold NUL.
    return request.META.get("HTTP_USER_AGENT", "")[:500].replace("\x00", "")


@csrf_exempt
@never_cache
@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    """GET shows what the button would do and changes nothing (mail scanners
    follow links). POST unsubscribes at once and answers 200 without a
    redirect: it is both RFC 8058's one-click POST (the mailbox provider
    posts `List-Unsubscribe=One-Click` with no cookies, hence no CSRF token)
    and the confirmation page's button. Repeating it changes nothing more."""
    try:
        message_id = links.read_unsubscribe_token(token)
    except links.InvalidToken as exc:
        return link_invalid(request, str(exc))
    message = Message.objects.filter(pk=message_id).first()
    if message is None:
        return link_invalid(request, "the message this link came in no longer exists", status=404)
    context = public_context(
        channel=message.channel,
        address_shown=masked(message.to_address),
        what="text messages" if message.channel == Channel.SMS else "marketing email",
        preferences_url=links.preferences_url(message),
    )
    if request.method == "GET":
        return TemplateResponse(request, "messaging/unsubscribe.html", context)
    consent.unsubscribe_from_link(
        message,
        now=timezone.now(),
        source=ConsentRecord.Source.UNSUBSCRIBE,
        wording=f"Unsubscribe link in message {message.pk}"
        + (" (one-click)" if request.POST.get("List-Unsubscribe") == "One-Click" else ""),
        ip_address=client_ip(request),
        user_agent=user_agent(request),
    )
    return TemplateResponse(request, "messaging/unsubscribed.html", context)


@never_cache
@require_http_methods(["GET", "POST"])
def preferences(request: HttpRequest, token: str) -> HttpResponse:
    """The preference centre: the customer's channels and email topics, as
    the ledger has them; saving appends their choices to it (PreferencesForm)
    and shows the page again with a thank-you."""
    try:
        link = links.read_preferences_token(token)
    except links.InvalidToken as exc:
        return link_invalid(request, str(exc))
    customer = Customer.objects.filter(pk=link.customer_id).first()
    if customer is None:
        return link_invalid(request, "we could not find whom this link was for", status=404)
    if request.method == "POST":
        form = PreferencesForm(request.POST, customer=customer)
        if form.is_valid():
            form.save(
                now=timezone.now(), ip_address=client_ip(request), user_agent=user_agent(request)
            )
            return redirect(f"{request.path}?saved=1")
    else:
        form = PreferencesForm(customer=customer)
    context = public_context(
        form=form,
        groups=form.groups(),
        notes=form.blocked_notes(),
        saved=request.method == "GET" and request.GET.get("saved") == "1",
    )
    return TemplateResponse(request, "messaging/preferences.html", context)
