"""Messaging for marketers: templates with a live preview and a test send, the
outbox (every message, as its customer saw it), the suppression list and the
consent ledger."""

import re
from functools import partial

from django.conf import settings
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.shortcuts import redirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from apps.core.admin_extensions import AdminExtensions, ExtendedAdminMixin
from apps.core.bigtables import EstimatedCountPaginator, ReadOnlyAdminMixin
from apps.customers.models import Customer
from apps.customers.selectors import customer_search

from . import consent, preview, services, views
from .forms import SuppressionAddForm, TemplateForm
from .models import Channel, ConsentRecord, Message, Suppression, Template

# What the apps above add to a message's page (messaging never imports them):
# what came back for it (tracking) and the survey it carried (surveys), from
# their own admin modules.
message_page = AdminExtensions()


@admin.register(Template)
class TemplateAdmin(admin.ModelAdmin):
    form = TemplateForm
    list_display = ("name", "slug", "channel", "category", "topic", "updated_at")
    list_filter = ("channel", "category", "topic")
    search_fields = ("name", "slug")
    ordering = ("name",)
    fieldsets = (
        (None, {"fields": ("name", "slug", "channel", "category", "topic")}),
        (
            "Email",
            {
                "fields": ("subject", "preheader", "html", "text", "from_email", "reply_to"),
                "classes": ("template-email",),
            },
        ),
        ("SMS", {"fields": ("body",), "classes": ("template-sms",)}),
    )

    def get_readonly_fields(self, request, obj=None):
        # Journeys name a template by its slug: once saved it never changes.
        return ("slug",) if obj is not None else ()

    def get_prepopulated_fields(self, request, obj=None):
        return {"slug": ("name",)} if obj is None else {}

    def get_urls(self):
        def view(func, suffix, route):
            wrapped = self.admin_site.admin_view(partial(func, model_admin=self))
            return path(route, wrapped, name=f"messaging_template_{suffix}")

        return [
            view(views.template_preview, "preview", "preview/"),
            view(views.template_send_test, "send_test", "<path:object_id>/send-test/"),
            *super().get_urls(),
        ]

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        extra = {
            "preview_url": reverse("admin:messaging_template_preview"),
            "send_test_url": (
                reverse("admin:messaging_template_send_test", args=[object_id]) if object_id else ""
            ),
            "email_provider": settings.EMAIL_PROVIDER,
            "sms_provider": settings.SMS_PROVIDER,
        }
        return super().changeform_view(
            request, object_id, form_url, {**extra, **(extra_context or {})}
        )


# --- the outbox ------------------------------------------------------------------------

# Tracking URLs in a stored message: shown to staff, they must not count as
# the customer opening or clicking.
TRACKING_URL = re.compile(r"(https?://[^\s\"'<>]*)?/t/[oc]/[^\s\"'<>]*")


def inert_tracking(html: str) -> str:
    return TRACKING_URL.sub("#tracking-link-disabled-in-admin", html)


def email_frame(html: str, *, title: str, height: str = "32rem"):
    """Email HTML in a sandboxed frame: no scripts, no forms, no access to the
    admin page (an opaque origin), and no tracking pixel fired by looking."""
    return format_html(
        '<iframe sandbox="" referrerpolicy="no-referrer" title="{}" srcdoc="{}" '
        'style="width:100%;max-width:50rem;height:{};border:1px solid var(--hairline-color);'
        'background:#fff;border-radius:4px"></iframe>',
        title,
        inert_tracking(html),
        height,
    )


def sms_bubble(body: str):
    summary = preview.sms_summary(body)
    warning = (
        format_html('<p class="errornote">{}</p>', summary["warning"]) if summary["warning"] else ""
    )
    return format_html(
        '<div style="max-width:22rem;padding:.6rem .85rem;border-radius:1rem;'
        'background:var(--darkened-bg);white-space:pre-wrap;font-size:.9rem">{}</div>'
        '<p class="help">{} · {} characters</p>{}',
        body,
        summary["label"],
        summary["characters"],
        warning,
    )


class TestFilter(admin.SimpleListFilter):
    title = "test sends"
    parameter_name = "test"

    def lookups(self, request, model_admin):
        return (("no", "Real sends"), ("yes", "Test sends"))

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(is_test=self.value() == "yes")
        return queryset


@admin.register(Message)
class MessageAdmin(ExtendedAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """The outbox: every message, whatever its provider (with the console
    provider these rows are the mail a developer reads). Read only: a
    message's record is what happened."""

    extensions = message_page

    list_display = (
        "id",
        "to_address",
        "summary",
        "channel",
        "status",
        "customer",
        "origin",
        "created_at",
    )
    list_select_related = ("customer",)
    list_filter = ("status", "channel", "category", TestFilter)
    search_fields = ("to_address",)  # the search itself is message_search, below
    search_help_text = (
        "Exact message id, provider message id, or the customer's external id, email or phone."
    )
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_per_page = 50
    ordering = ("-id",)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "customer",
                    "channel",
                    "category",
                    "topic",
                    "template",
                    "is_test",
                    "to_address",
                    "from_address",
                    "reply_to",
                    "subject",
                )
            },
        ),
        ("As the customer saw it", {"fields": ("as_seen", "text_part")}),
        (
            "Status",
            {
                "fields": (
                    "status",
                    "reason",
                    "error",
                    "provider",
                    "provider_message_id",
                    "attempts",
                    "send_after",
                    "published_at",
                    "lease_until",
                )
            },
        ),
        (
            "History",
            {
                "fields": (
                    "created_at",
                    "sent_at",
                    "delivered_at",
                    "opened_at",
                    "clicked_at",
                    "failed_at",
                    "updated_at",
                )
            },
        ),
        ("Origin", {"fields": ("journey", "node_id", "enrollment_id", "idempotency_key")}),
    )
    readonly_fields = ("as_seen", "text_part")
    actions = ("resend",)

    def get_search_results(self, request, queryset, search_term):
        return message_search(queryset, search_term), False

    def has_resend_permission(self, request) -> bool:
        # Resending is sending: whoever may edit templates (and send their tests).
        return request.user.has_perm("messaging.change_template")

    @admin.action(
        description="Resend the selected failed, bounced or unknown messages",
        permissions=("resend",),
    )
    def resend(self, request, queryset):
        """Each as a new message (services.message_resend): the policies run
        again, so a suppressed address gives a suppressed message, not a send."""
        now = timezone.now()
        by = request.user.get_username()
        resendable = queryset.filter(status__in=services.RESENDABLE).order_by("pk")
        outcomes: dict[str, list[int]] = {}
        refused: list[str] = []
        for message in resendable:
            try:
                with transaction.atomic():
                    resent = services.message_resend(message, now=now, by=by)
            except services.NotResendable as exc:
                refused.append(str(exc))
                continue
            outcomes.setdefault(resent.get_status_display().lower(), []).append(resent.pk)
        skipped = queryset.count() - sum(len(ids) for ids in outcomes.values()) - len(refused)
        if outcomes:
            parts = [
                f"{len(ids)} {status} (#{', #'.join(map(str, ids))})"
                for status, ids in outcomes.items()
            ]
            self.message_user(
                request, "Resent as new messages: " + "; ".join(parts) + ".", messages.SUCCESS
            )
        if skipped:
            self.message_user(
                request,
                f"{skipped} selected message(s) not resent: only failed, bounced or unknown "
                "messages can be.",
                messages.WARNING,
            )
        for problem in refused:
            self.message_user(request, f"Not resent: {problem}.", messages.WARNING)

    @admin.display(description="subject / text")
    def summary(self, obj: Message) -> str:
        text = obj.subject if obj.channel == Channel.EMAIL else obj.text
        return text if len(text) <= 80 else text[:79] + "…"

    @admin.display(description="journey / node")
    def origin(self, obj: Message) -> str:
        if obj.is_test:
            return "test send"
        return f"{obj.journey} / {obj.node_id}" if obj.journey else ""

    @admin.display(description="Message")
    def as_seen(self, obj: Message):
        if obj.channel == Channel.SMS:
            return sms_bubble(obj.text)
        if not obj.html:
            return "No HTML part (not rendered: see the status)."
        return email_frame(obj.html, title=f"Message {obj.pk} as sent")

    @admin.display(description="Text part")
    def text_part(self, obj: Message):
        if obj.channel == Channel.SMS:
            return "(the SMS above)"
        return format_html('<pre style="white-space:pre-wrap;max-width:50rem">{}</pre>', obj.text)


def message_search(queryset: QuerySet[Message], term: str) -> QuerySet[Message]:
    """Each branch an index lookup: a message id, a provider id, or the
    messages of the customers found by external id, email or phone."""
    term = term.strip()
    if not term:
        return queryset
    if term.lstrip("#").isdigit():
        by_id = queryset.filter(pk=int(term.lstrip("#")))
        if by_id.exists():
            return by_id
    by_provider = queryset.filter(provider_message_id=term)
    if by_provider.exists():
        return by_provider
    customer_ids = list(customer_search(Customer.objects.all(), term).values_list("pk", flat=True))
    return queryset.filter(customer_id__in=customer_ids)


# --- suppression and consent --------------------------------------------------------


class ActiveFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "active"

    def lookups(self, request, model_admin):
        return (("yes", "Suppressed now"), ("no", "Lifted"))

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(lifted_at__isnull=self.value() == "yes")
        return queryset


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin):
    """The list every send checks. Rows are history: an address is added (by
    hand here, or by bounces, complaints and unsubscribes) and lifted, never
    edited or deleted."""

    list_display = (
        "address",
        "channel",
        "reason",
        "source",
        "created_at",
        "lifted_at",
        "lifted_by",
    )
    list_filter = (ActiveFilter, "channel", "reason")
    search_fields = ("address",)  # exact, below
    search_help_text = "Exact email address or phone number."
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_per_page = 100
    ordering = ("-id",)
    actions = ("lift",)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(address__in={term, term.lower()}), False

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = SuppressionAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("channel", "address", "detail")
        return (
            "channel",
            "address",
            "reason",
            "source",
            "detail",
            "created_at",
            "lifted_at",
            "lifted_by",
        )

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_lift_permission(self, request) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        before = Suppression.objects.filter(
            channel=data["channel"], address=data["address"], lifted_at__isnull=True
        ).first()
        suppression = consent.suppression_add(
            channel=data["channel"],
            address=data["address"],
            reason=Suppression.Reason.MANUAL,
            source=f"admin: {request.user.get_username()}",
            now=timezone.now(),
            detail=data.get("detail", ""),
        )
        obj.pk = suppression.pk
        obj.refresh_from_db()
        obj.was_already_suppressed = before is not None

    def response_add(self, request, obj, post_url_continue=None):
        # The add view would say "added successfully" of a no-op.
        if getattr(obj, "was_already_suppressed", False):
            self.message_user(
                request,
                f"{obj.address} was already suppressed ({obj.get_reason_display()}, since "
                f"{obj.created_at:%Y-%m-%d %H:%M} UTC): nothing changed.",
                messages.WARNING,
            )
            return redirect(reverse("admin:messaging_suppression_change", args=[obj.pk]))
        return super().response_add(request, obj, post_url_continue)

    @admin.action(description="Lift the selected suppressions", permissions=("lift",))
    def lift(self, request, queryset):
        now = timezone.now()
        by = request.user.get_username()
        lifted = 0
        for suppression in queryset.filter(lifted_at__isnull=True):
            consent.suppression_lift(
                channel=suppression.channel, address=suppression.address, now=now, by=by
            )
            lifted += 1
        skipped = queryset.count() - lifted
        self.message_user(
            request,
            f"Lifted {lifted} suppression(s): those addresses can be sent to again."
            + (f" {skipped} were already lifted." if skipped else ""),
            messages.SUCCESS,
        )


@admin.register(ConsentRecord)
class ConsentRecordAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The consent ledger, append-only: each change of consent is a new row
    written by the path it came from (API, import, preference centre, SMS
    keyword, unsubscribe link); the current state is the latest row."""

    list_display = (
        "customer",
        "channel",
        "topic",
        "status",
        "source",
        "recorded_at",
        "ip_address",
    )
    list_select_related = ("customer",)
    list_filter = ("channel", "status", "source")
    search_fields = ("customer__external_id",)  # exact, below
    search_help_text = "The customer's exact external id, email or phone."
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_per_page = 100
    ordering = ("-id",)
    fields = (
        "customer",
        "channel",
        "topic",
        "status",
        "source",
        "wording",
        "recorded_at",
        "created_at",
        "ip_address",
        "user_agent",
    )

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        ids = list(customer_search(Customer.objects.all(), term).values_list("pk", flat=True))
        return queryset.filter(customer_id__in=ids), False
