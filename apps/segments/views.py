"""The segment admin's own pages: preview, members, list upload, refresh.

Each takes the SegmentAdmin it belongs to (for permissions and the admin's
context) and is wrapped by `admin_site.admin_view` in `SegmentAdmin.get_urls`,
so it is staff-only and CSRF-protected."""

import logging
from contextlib import contextmanager
from typing import TYPE_CHECKING

from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db import OperationalError, connection, transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from . import selectors, services
from .conditions import ConditionError, segment_queryset
from .forms import PreviewForm, StaticUploadForm
from .models import Segment

if TYPE_CHECKING:
    from .admin import SegmentAdmin

logger = logging.getLogger(__name__)

PREVIEW_SAMPLE = 20
# A preview counts the whole segment; at a million customers a careless
# condition must not hold a connection for minutes.
PREVIEW_TIMEOUT_MS = 15_000
MEMBERS_PER_PAGE = 50
UNKNOWN_IDS_SHOWN = 1_000


@contextmanager
def _statement_timeout(ms: int):
    """Cancel any statement in the block that runs longer than `ms`."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", [str(ms)])
        yield


def customer_row(customer) -> dict:
    return {
        "external_id": customer.external_id,
        "email": customer.email,
        "plan": _trait_text(customer.traits.get("plan")),
        "status": _trait_text(customer.traits.get("status")),
        "url": reverse("admin:customers_customer_change", args=[customer.pk]),
    }


def _trait_text(value) -> str:
    return "" if value is None else str(value)


def _segment_or_404(request: HttpRequest, model_admin: "SegmentAdmin", object_id: str) -> Segment:
    segment = model_admin.get_object(request, unquote(object_id))
    if segment is None:
        raise Http404(f"No segment with id {object_id!r}.")
    return segment


@require_POST
def segment_preview(request: HttpRequest, *, model_admin: "SegmentAdmin") -> JsonResponse:
    """The members an unsaved definition would have now: their count and a
    sample. Reads only; nothing is saved."""
    if not (model_admin.has_add_permission(request) or model_admin.has_change_permission(request)):
        raise PermissionDenied
    form = PreviewForm(request.POST)
    if not form.is_valid():
        errors = [str(e) for field_errors in form.errors.values() for e in field_errors]
        return JsonResponse({"error": " ".join(errors)}, status=400)
    now = timezone.now()
    try:
        with _statement_timeout(PREVIEW_TIMEOUT_MS):
            members = segment_queryset(form.cleaned_data["definition"], now=now)
            count = members.count()
            sample = list(
                members.order_by("-pk").only("pk", "external_id", "email", "traits")[
                    :PREVIEW_SAMPLE
                ]
            )
    except ConditionError as exc:  # a referenced segment changed since validation
        return JsonResponse({"error": str(exc)}, status=400)
    except OperationalError:
        logger.warning("segment preview timed out", exc_info=True)
        return JsonResponse(
            {
                "error": f"The preview took longer than {PREVIEW_TIMEOUT_MS // 1000} s and was "
                "stopped. Narrow the condition (an event or trait that few customers have) "
                "and try again."
            },
            status=400,
        )
    return JsonResponse(
        {
            "count": count,
            "as_of": now.isoformat(),
            "sample": [customer_row(c) for c in sample],
        }
    )


def segment_members(
    request: HttpRequest, object_id: str, *, model_admin: "SegmentAdmin"
) -> TemplateResponse:
    """The current members, newest customers first, a page at a time. Pages are
    found without counting (one row past the page says whether there is a
    next); the total shown is the count of the last refresh."""
    segment = _segment_or_404(request, model_admin, object_id)
    if not model_admin.has_view_permission(request, segment):
        raise PermissionDenied
    try:
        page = max(1, int(request.GET.get("p", "1")))
    except ValueError:
        page = 1
    members = selectors.segment_members(segment)
    if not members.ordered:
        members = members.order_by("-pk")
    start = (page - 1) * MEMBERS_PER_PAGE
    rows = list(
        members.only("pk", "external_id", "email", "traits")[start : start + MEMBERS_PER_PAGE + 1]
    )
    shown = [customer_row(c) for c in rows[:MEMBERS_PER_PAGE]]
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": f"Members of {segment.name}",
        "subtitle": segment.name,
        "segment": segment,
        "rows": shown,
        "page": page,
        "first_index": start + 1,
        "last_index": start + len(shown),
        "has_previous": page > 1,
        "has_next": len(rows) > MEMBERS_PER_PAGE,
    }
    return TemplateResponse(request, "admin/segments/segment/members.html", context)


def segment_upload(
    request: HttpRequest, object_id: str, *, model_admin: "SegmentAdmin"
) -> HttpResponse:
    """A static segment's list from a CSV of external ids, replacing or
    appending as the marketer chose; the report lists the unknown ids."""
    segment = _segment_or_404(request, model_admin, object_id)
    if not model_admin.has_change_permission(request, segment):
        raise PermissionDenied
    change_url = reverse("admin:segments_segment_change", args=[segment.pk])
    if segment.kind != Segment.Kind.STATIC:
        messages.error(request, "Only a static segment's members are uploaded.")
        return redirect(change_url)
    report = None
    if request.method == "POST":
        form = StaticUploadForm(request.POST, request.FILES)
        if form.is_valid():
            mode = form.cleaned_data["mode"]
            report = services.segment_static_upload(
                segment, form.external_ids, mode=mode, now=timezone.now()
            )
            segment.refresh_from_db()
            messages.success(
                request,
                f"{segment.name}: {report.added:,} added, {report.removed:,} removed, "
                f"{report.already_members:,} already in, {len(report.unknown_ids):,} unknown "
                f"({mode}).",
            )
            form = StaticUploadForm()
    else:
        form = StaticUploadForm()
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": f"Upload the list of {segment.name}",
        "subtitle": segment.name,
        "segment": segment,
        "form": form,
        "report": report,
        "unknown_shown": report.unknown_ids[:UNKNOWN_IDS_SHOWN] if report else [],
        "change_url": change_url,
    }
    return TemplateResponse(request, "admin/segments/segment/upload.html", context)


@require_POST
def segment_refresh_now(
    request: HttpRequest, object_id: str, *, model_admin: "SegmentAdmin"
) -> HttpResponse:
    segment = _segment_or_404(request, model_admin, object_id)
    if not model_admin.has_change_permission(request, segment):
        raise PermissionDenied
    model_admin.refresh_segments(request, [segment])
    return redirect(reverse("admin:segments_segment_change", args=[segment.pk]))
