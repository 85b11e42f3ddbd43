"""Segments for marketers: the condition editor with preview and examples, the
members, the size chart, static list uploads, and each customer's segment
history (added to the customer page from here: segments depend on
customers, never the reverse)."""

from collections.abc import Iterable
from functools import partial

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.templatetags.static import static
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from apps.core.bigtables import (
    EstimatedCountPaginator,
    ReadOnlyAdminMixin,
    ShownOnlyFormSet,
    ShownOnlyInline,
)
from apps.customers.admin import customer_page
from apps.customers.models import Customer

from . import selectors, services, views
from .charts import size_chart_svg
from .forms import SegmentForm, StaticUploadForm
from .models import Segment, SegmentMembership

CHART_DAYS = 90
HISTORY_SHOWN = 50


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin):
    form = SegmentForm
    list_display = (
        "name",
        "slug",
        "kind_name",
        "is_active",
        "members",
        "refreshed_at",
        "refresh_time",
        "refresh_status",
    )
    list_filter = ("kind", "is_active")
    search_fields = ("name", "slug")
    show_full_result_count = False
    list_per_page = 100
    actions = ("refresh_now",)
    status_fields = ("member_count", "refreshed_at", "refresh_ms", "last_error")

    def get_fieldsets(self, request, obj=None):
        fieldsets = [
            (None, {"fields": ("name", "slug", "description", "kind", "is_active")}),
            ("Condition", {"fields": ("definition",), "classes": ("condition-fieldset",)}),
        ]
        if obj is not None:
            fieldsets.append(("Last refresh", {"fields": self.status_fields}))
        return fieldsets

    def get_readonly_fields(self, request, obj=None):
        # Conditions and journeys name a segment by its slug: it never changes.
        return (*self.status_fields, "slug") if obj is not None else self.status_fields

    def get_prepopulated_fields(self, request, obj=None):
        return {"slug": ("name",)} if obj is None else {}

    def get_urls(self):
        def view(func, suffix, route):
            wrapped = self.admin_site.admin_view(partial(func, model_admin=self))
            return path(route, wrapped, name=f"segments_segment_{suffix}")

        return [
            view(views.segment_preview, "preview", "preview/"),
            view(views.segment_members, "members", "<path:object_id>/members/"),
            view(views.segment_upload, "upload", "<path:object_id>/upload/"),
            view(views.segment_refresh_now, "refresh", "<path:object_id>/refresh/"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        segment = self.get_object(request, unquote(object_id))
        extra = {}
        if segment is not None:
            series = selectors.segment_size_series(segment, days=CHART_DAYS)
            extra = {
                "size_series": series,
                "size_chart": size_chart_svg(
                    series, title=f"{segment.name}: members per day, last {CHART_DAYS} days"
                ),
                "chart_days": CHART_DAYS,
                "upload_form": StaticUploadForm() if segment.kind == Segment.Kind.STATIC else None,
            }
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    @admin.display(description="kind", ordering="kind")
    def kind_name(self, obj: Segment) -> str:
        return obj.kind  # the choice labels are sentences, too long for a column

    @admin.display(description="members", ordering="member_count")
    def members(self, obj: Segment):
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:segments_segment_members", args=[obj.pk]),
            f"{obj.member_count:,}",
        )

    @admin.display(description="refresh took", ordering="refresh_ms")
    def refresh_time(self, obj: Segment) -> str:
        return "" if obj.refresh_ms is None else f"{obj.refresh_ms:,} ms"

    @admin.display(description="last refresh")
    def refresh_status(self, obj: Segment):
        if obj.last_error:
            return format_html(
                '<img src="{}" alt="failed"> <span title="{}">failed</span>',
                static("admin/img/icon-no.svg"),
                obj.last_error,
            )
        if obj.refreshed_at is None:
            return "not yet"
        return format_html('<img src="{}" alt="ok">', static("admin/img/icon-yes.svg"))

    @admin.action(description="Refresh now", permissions=("change",))
    def refresh_now(self, request, queryset):
        self.refresh_segments(request, queryset)

    def refresh_segments(self, request, segments: Iterable[Segment]) -> None:
        """Refresh each dynamic segment now and say how each went; a failing
        one does not stop the others (the service records its error)."""
        now = timezone.now()
        for segment in segments:
            if segment.kind == Segment.Kind.STATIC:
                self.message_user(
                    request,
                    f"{segment.name} is static: its members change only by upload.",
                    messages.WARNING,
                )
                continue
            result = services.segment_refresh(segment, now=now)
            if result.error:
                self.message_user(
                    request, f"{segment.name}: refresh failed: {result.error}", messages.ERROR
                )
            elif result.skipped:
                self.message_user(
                    request, f"{segment.name}: not refreshed: {result.skipped}.", messages.WARNING
                )
            else:
                self.message_user(
                    request,
                    f"{segment.name}: {result.member_count:,} members, "
                    f"{len(result.entered_ids):,} entered, {len(result.exited_ids):,} exited "
                    f"({result.ms:,} ms).",
                    messages.SUCCESS,
                )


class OpenFilter(admin.SimpleListFilter):
    title = "membership"
    parameter_name = "open"

    def lookups(self, request, model_admin):
        return (("yes", "Current"), ("no", "Ended"))

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(exited_at__isnull=self.value() == "yes")
        return queryset


@admin.register(SegmentMembership)
class SegmentMembershipAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read only: memberships are history, written by refreshes and uploads."""

    list_display = ("customer_link", "segment", "entered_at", "exited_at")
    list_display_links = None
    list_select_related = ("customer", "segment")
    list_filter = (OpenFilter, "segment")
    search_fields = ("customer__external_id",)  # the search itself is exact, below
    search_help_text = "Exact customer external id."
    raw_id_fields = ("customer", "segment")
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_per_page = 50
    ordering = ("-id",)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        customer = Customer.objects.filter(external_id=term).values_list("pk", flat=True).first()
        if customer is None:
            return queryset.none(), False
        return queryset.filter(SegmentMembership.of_customer(customer)), False

    @admin.display(description="customer", ordering="customer__external_id")
    def customer_link(self, obj: SegmentMembership):
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:customers_customer_change", args=[obj.customer_id]),
            str(obj.customer),  # an anonymous or merged profile has no external id
        )


class SegmentHistoryFormSet(ShownOnlyFormSet):
    """The newest memberships of a customer."""

    @property
    def shown(self) -> int:
        return HISTORY_SHOWN  # read when shown (a test may change it)

    def rows(self):
        return selectors.customer_segment_history(self.instance)


class SegmentHistoryInline(ShownOnlyInline):
    model = SegmentMembership
    formset = SegmentHistoryFormSet
    template = "admin/segments/segment_history_inline.html"
    fields = readonly_fields = ("segment", "entered_at", "exited_at")
    verbose_name_plural = "Segment history"

    def has_view_permission(self, request, obj=None):
        # Nothing to show while the customer is being added.
        return obj is not None and super().has_view_permission(request, obj)


customer_page.add_inline(SegmentHistoryInline)
