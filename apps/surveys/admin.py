"""NPS in the admin: surveys (their copy, templates and a report page), the
invitations sent (a big table, read only) and the responses with their
comments, filterable by category, survey, channel and whether there is a
comment to read. Invitations and responses are written by the journey step,
the survey page and SMS replies, never by hand.

A survey message's page (messaging's outbox) shows its invitation and the
answer, added from here to messaging's `message_page` registry: messaging
never imports surveys."""

from datetime import timedelta

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from apps.core.bigtables import EstimatedCountPaginator, ReadOnlyAdminMixin, ShownOnlyInline
from apps.messaging.admin import message_page

from . import selectors
from .models import Survey, SurveyInvitation, SurveyResponse

REPORT_MONTHS = 12
RECENT_DAYS = 90


def _customer_link(customer):
    return format_html(
        '<a href="{}">{}</a>',
        reverse("admin:customers_customer_change", args=[customer.pk]),
        customer.external_id,
    )


def _message_link(message_id: int | None):
    if message_id is None:
        return "—"
    return format_html(
        '<a href="{}">#{}</a>',
        reverse("admin:messaging_message_change", args=[message_id]),
        message_id,
    )


def _score(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1f}"


@admin.register(Survey)
class SurveyAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "email_template", "sms_template", "recent_nps", "report_link")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    raw_id_fields = ("email_template", "sms_template")
    list_select_related = ("email_template", "sms_template")
    readonly_fields = ("created_at", "updated_at")

    def get_urls(self):
        report = self.admin_site.admin_view(self.report_view)
        return [
            path("<path:object_id>/report/", report, name="surveys_survey_report"),
            *super().get_urls(),
        ]

    @admin.display(description=f"NPS, last {RECENT_DAYS} days")
    def recent_nps(self, obj: Survey) -> str:
        summary = selectors.nps_summary(
            start=timezone.now() - timedelta(days=RECENT_DAYS), survey=obj.slug
        )
        if not summary.responses:
            return "no answers"
        return f"{_score(summary.score)} ({summary.responses} answers)"

    @admin.display(description="report")
    def report_link(self, obj: Survey):
        return format_html(
            '<a href="{}">Report</a>', reverse("admin:surveys_survey_report", args=[obj.pk])
        )

    def report_view(self, request, object_id: str):
        """NPS and response rate by month, by journey, and the detractors'
        comments, for one survey."""
        survey = self.get_object(request, unquote(object_id))
        if survey is None:
            raise Http404(f"No survey with id {object_id!r}.")
        if not self.has_view_permission(request, survey):
            raise PermissionDenied
        now = timezone.now()
        first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        for _ in range(REPORT_MONTHS - 1):
            first = (first - timedelta(days=1)).replace(day=1)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": survey,
            "title": f"NPS report: {survey.name}",
            "survey": survey,
            "overall": selectors.nps_summary(survey=survey.slug),
            "recent_days": RECENT_DAYS,
            "recent": selectors.nps_summary(
                start=now - timedelta(days=RECENT_DAYS), survey=survey.slug
            ),
            "months": selectors.nps_by_period(
                period="month", start=first, end=now, survey=survey.slug
            ),
            "journeys": selectors.nps_by_journey(survey=survey.slug),
            "comments": selectors.detractor_comments(survey=survey.slug, limit=100),
            "responses_url": reverse("admin:surveys_surveyresponse_changelist"),
        }
        return TemplateResponse(request, "surveys/admin_report.html", context)


class AnsweredFilter(admin.SimpleListFilter):
    title = "answered"
    parameter_name = "answered"

    def lookups(self, request, model_admin):
        return (("yes", "Answered"), ("no", "Not answered"), ("unsent", "Not sent (refused)"))

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(responded_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(responded_at__isnull=True, sent_at__isnull=False)
        if self.value() == "unsent":
            return queryset.filter(sent_at__isnull=True)
        return queryset


@admin.register(SurveyInvitation)
class SurveyInvitationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Who was asked, by which journey and channel, and whether they answered.
    An invitation never sent (its message refused by a policy) did not count
    as a survey for re-survey throttling."""

    list_display = (
        "created_at",
        "customer_link",
        "survey",
        "channel",
        "journey",
        "sent_at",
        "responded_at",
        "expires_at",
        "message_link",
    )
    list_filter = (AnsweredFilter, "survey", "channel")
    list_select_related = ("customer", "survey")
    raw_id_fields = ("customer", "message", "survey")
    search_fields = ("customer__external_id",)  # exact, below
    search_help_text = "Exact customer external id or journey slug."
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_per_page = 50
    ordering = ("-id",)
    exclude = ("token",)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(customer__external_id=term) | queryset.filter(journey=term), False

    @admin.display(description="customer", ordering="customer__external_id")
    def customer_link(self, obj: SurveyInvitation):
        return _customer_link(obj.customer)

    @admin.display(description="message")
    def message_link(self, obj: SurveyInvitation):
        return _message_link(obj.message_id)


class CommentFilter(admin.SimpleListFilter):
    title = "comment"
    parameter_name = "comment"

    def lookups(self, request, model_admin):
        return (("yes", "With a comment"), ("no", "Without"))

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.exclude(comment="")
        if self.value() == "no":
            return queryset.filter(comment="")
        return queryset


@admin.register(SurveyResponse)
class SurveyResponseAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Every answer with its comment. Filter by category and "with a comment"
    to read what detractors wrote."""

    list_display = (
        "responded_at",
        "customer_link",
        "score",
        "category",
        "comment_short",
        "survey",
        "channel",
        "journey",
        "updated_at",
    )
    list_filter = ("category", CommentFilter, "survey", "channel")
    list_select_related = ("customer", "survey", "invitation")
    raw_id_fields = ("customer", "invitation", "survey")
    search_fields = ("customer__external_id",)  # exact, below
    search_help_text = "Exact customer external id, or words of the comment."
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_per_page = 50
    ordering = ("-responded_at", "-id")

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        by_customer = queryset.filter(customer__external_id=term)
        return by_customer | queryset.filter(comment__icontains=term), False

    @admin.display(description="customer", ordering="customer__external_id")
    def customer_link(self, obj: SurveyResponse):
        return _customer_link(obj.customer)

    @admin.display(description="comment")
    def comment_short(self, obj: SurveyResponse) -> str:
        return obj.comment if len(obj.comment) <= 100 else obj.comment[:97] + "…"

    @admin.display(description="journey", ordering="invitation__journey")
    def journey(self, obj: SurveyResponse) -> str:
        return obj.invitation.journey or "—"


# --- the message page: the survey it carried ------------------------------------------


class MessageSurveyInline(ShownOnlyInline):
    """The NPS invitation a message carried and its answer, if any."""

    model = SurveyInvitation
    fk_name = "message"
    template = "admin/surveys/message_survey_inline.html"
    fields = readonly_fields = ("survey", "channel", "sent_at", "expires_at", "responded_at")
    ordering = ("id",)
    verbose_name_plural = "NPS survey"

    def has_view_permission(self, request, obj=None):
        # Shown only on the page of a message that carried a survey (most did
        # not). Asked without a message (for the inline's queryset), the answer
        # is the permission alone.
        allowed = super().has_view_permission(request, obj)
        if obj is None or not allowed:
            return allowed
        return SurveyInvitation.objects.filter(message=obj).exists()

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("survey", "response")


message_page.add_inline(MessageSurveyInline)
