"""Tracking in the admin: provider events (unmatched ones included),
engagements with their machine flags, and inbound SMS with the free-text
requests to stop waiting for someone to read them. Everything here is
history written by the webhooks and the processor: shown, never edited.

The message page (messaging's outbox) gets what came back for that message,
its engagements and provider events, from here: messaging never imports
tracking, so tracking adds them to messaging's `message_page` registry, the
way journeys and segments add to customers' `customer_page`."""

from django.contrib import admin, messages
from django.db.models import Q, TextField
from django.db.models.functions import Cast
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from apps.core import jsonsafe
from apps.core.bigtables import EstimatedCountPaginator, ReadOnlyAdminMixin, ShownOnlyInline
from apps.messaging.admin import message_page

from . import services
from .models import Engagement, InboundSms, ProviderEvent, TrackedLink

# Characters of a stored payload the event page shows.
PAYLOAD_SHOWN = 100_000


def payload_display(text: str | None) -> str:
    """A stored payload (its JSON text, as the database returns it) as the
    page shows it: pretty-printed (jsonsafe.preview) when that shows it whole,
    else as stored. Rows written before the
    webhooks refused odd input can nest a thousand levels deep or hold huge
    strings; the page must open all the same."""
    text = text or ""
    if len(text) > PAYLOAD_SHOWN:
        return f"{text[:PAYLOAD_SHOWN]}… ({len(text):,} characters in all)"
    try:
        value = jsonsafe.loads(text)
    except ValueError:
        return text
    shown, cut = jsonsafe.preview(value, max_chars=PAYLOAD_SHOWN)
    return text if cut else shown


def _without_payload(queryset):
    """Rows without their payload: the lists never show it, and loading an odd
    one (nested beyond what json can read) would fail the whole page."""
    return queryset.defer("payload")


def _message_link(message_id: int | None):
    if message_id is None:
        return "—"
    try:
        url = reverse("admin:messaging_message_change", args=[message_id])
    except Exception:  # the message admin is not registered
        return f"#{message_id}"
    return format_html('<a href="{}">#{}</a>', url, message_id)


class MatchFilter(admin.SimpleListFilter):
    title = "match"
    parameter_name = "match"

    def lookups(self, request, model_admin):
        return (
            ("matched", "Matched to a message"),
            ("unmatched", "Unmatched"),
            ("pending", "Not processed yet"),
            ("error", "Refused or failed"),
        )

    def queryset(self, request, queryset):
        value = self.value()
        if value == "matched":
            return queryset.filter(message__isnull=False)
        if value == "unmatched":
            return queryset.filter(message__isnull=True, processed_at__isnull=False, error="")
        if value == "pending":
            return queryset.filter(processed_at__isnull=True)
        if value == "error":
            return queryset.exclude(error="")
        return queryset


@admin.register(ProviderEvent)
class ProviderEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "provider",
        "kind",
        "address",
        "message_link",
        "occurred_at",
        "received_at",
        "processed_at",
        "problem",
    )
    list_filter = (MatchFilter, "provider", "kind")
    search_fields = ("event_id",)  # exact, below
    search_help_text = "Exact event id, provider message id or address."
    raw_id_fields = ("message",)
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_per_page = 50
    ordering = ("-id",)
    readonly_fields = ("payload_pretty",)
    exclude = ("payload",)

    def get_queryset(self, request):
        # The payload is shown as its stored text, never loaded as JSON.
        return _without_payload(super().get_queryset(request)).annotate(
            payload_text=Cast("payload", TextField())
        )

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(
            Q(event_id=term) | Q(provider_message_id=term) | Q(address=term.lower())
        ), False

    @admin.display(description="message")
    def message_link(self, obj: ProviderEvent):
        return _message_link(obj.message_id)

    @admin.display(description="error")
    def problem(self, obj: ProviderEvent) -> str:
        return obj.error[:80]

    @admin.display(description="payload")
    def payload_pretty(self, obj: ProviderEvent):
        return format_html("<pre>{}</pre>", payload_display(obj.payload_text))


@admin.register(Engagement)
class EngagementAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Opens, clicks and delivery reports. Machine engagement is listed with
    its reason; it moved no message and recorded no customer event."""

    list_display = (
        "kind",
        "human_or_machine",
        "message_link",
        "source",
        "occurred_at",
        "url_short",
        "processed_at",
    )
    list_filter = ("kind", "machine", "source")
    raw_id_fields = ("message", "link", "provider_event")
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_per_page = 50
    ordering = ("-id",)

    @admin.display(description="who", ordering="machine")
    def human_or_machine(self, obj: Engagement) -> str:
        return f"machine: {obj.machine_reason}" if obj.machine else "person"

    @admin.display(description="message")
    def message_link(self, obj: Engagement):
        return _message_link(obj.message_id)

    @admin.display(description="url")
    def url_short(self, obj: Engagement) -> str:
        return obj.url if len(obj.url) <= 60 else obj.url[:57] + "…"


@admin.register(TrackedLink)
class TrackedLinkAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("message_link", "position", "url")
    raw_id_fields = ("message",)
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    ordering = ("-id",)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if term.isdigit():
            return queryset.filter(message_id=int(term)), False
        return queryset, False

    search_fields = ("message__id",)
    search_help_text = "A message id."

    @admin.display(description="message")
    def message_link(self, obj: TrackedLink):
        return _message_link(obj.message_id)


class ReviewFilter(admin.SimpleListFilter):
    title = "review"
    parameter_name = "review"

    def lookups(self, request, model_admin):
        return (("todo", "Asks to stop, not reviewed"), ("done", "Reviewed"))

    def queryset(self, request, queryset):
        if self.value() == "todo":
            return queryset.filter(needs_review=True, reviewed_at__isnull=True)
        if self.value() == "done":
            return queryset.filter(reviewed_at__isnull=False)
        return queryset


@admin.register(InboundSms)
class InboundSmsAdmin(admin.ModelAdmin):
    """Texts customers sent. Keywords were acted on when they arrived; free
    text that reads like a request to stop is flagged: read it, then opt the
    number out (as if it had sent STOP) or mark it reviewed."""

    list_display = (
        "received_at",
        "from_number",
        "customer_link",
        "body_short",
        "kind",
        "flag",
        "reviewed_at",
    )
    list_filter = (ReviewFilter, "kind")
    search_fields = ("from_number",)  # exact, below
    search_help_text = "Exact phone number (E.164)."
    list_select_related = ("customer",)
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_per_page = 50
    ordering = ("-id",)
    actions = ("opt_out_numbers", "mark_reviewed")
    exclude = ("payload",)

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields if f.name != "payload"]

    def get_queryset(self, request):
        return _without_payload(super().get_queryset(request))

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        return (queryset.filter(from_number=term) if term else queryset), False

    @admin.display(description="customer", ordering="customer__external_id")
    def customer_link(self, obj: InboundSms):
        if obj.customer_id is None:
            return "—"
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:customers_customer_change", args=[obj.customer_id]),
            obj.customer.external_id,
        )

    @admin.display(description="text")
    def body_short(self, obj: InboundSms) -> str:
        return obj.body if len(obj.body) <= 80 else obj.body[:77] + "…"

    @admin.display(description="review")
    def flag(self, obj: InboundSms) -> str:
        if obj.needs_review and obj.reviewed_at is None:
            return "asks to stop: review"
        return "reviewed" if obj.reviewed_at else ""

    @admin.action(description="Opt these numbers out of SMS (as if they sent STOP)")
    def opt_out_numbers(self, request, queryset):
        now = timezone.now()
        by = request.user.get_username()
        done = 0
        for inbound in queryset:
            try:
                services.inbound_sms_opt_out(inbound, now=now, by=by)
            except ValueError as exc:
                self.message_user(request, f"{inbound.from_number}: {exc}", messages.ERROR)
                continue
            done += 1
        if done:
            self.message_user(request, f"{done} number(s) opted out of SMS.", messages.SUCCESS)

    @admin.action(description="Mark as reviewed (no action needed)")
    def mark_reviewed(self, request, queryset):
        count = services.inbound_sms_mark_reviewed(
            list(queryset.values_list("pk", flat=True)),
            now=timezone.now(),
            by=request.user.get_username(),
        )
        self.message_user(request, f"{count} message(s) marked reviewed.", messages.SUCCESS)


# --- the message page: what came back -------------------------------------------------


class MessageEngagementInline(ShownOnlyInline):
    """The message's opens, clicks and delivery reports, oldest first, machine
    hits with their reason (they moved nothing)."""

    model = Engagement
    template = "admin/tracking/message_engagements_inline.html"
    fields = readonly_fields = ("occurred_at", "kind", "source", "machine", "url")
    ordering = ("occurred_at", "id")
    verbose_name_plural = "Engagement"


class MessageProviderEventInline(ShownOnlyInline):
    """The provider's own reports of the message, as received (raw webhook
    events), with whether and how they were processed."""

    model = ProviderEvent
    template = "admin/tracking/message_provider_events_inline.html"
    fields = readonly_fields = ("occurred_at", "provider", "kind", "processed_at", "error")
    ordering = ("occurred_at", "id")
    verbose_name_plural = "Provider events"

    def get_queryset(self, request):
        return _without_payload(super().get_queryset(request))


message_page.add_inline(MessageEngagementInline)
message_page.add_inline(MessageProviderEventInline)
