"""Journeys for marketers: the list with status and who is in flight, the
draft as a validated JSON editor, publishing (customers stay, or move by a
node mapping), pause/resume/archive, the versions, the enrollments with their
step-by-step timeline, and each customer's journey timeline (added to the
customer page from here: journeys depend on customers, never the reverse).

Every write goes through `services`; the admin only shows and asks."""

import json
from contextlib import suppress
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Max
from django.forms.fields import InvalidJSONInput
from django.http import Http404, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
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

from . import selectors, services
from .graph import MAX_DEPTH, JourneyError, parse_journey
from .models import Enrollment, IngestWork, Journey, JourneyVersion

TIMELINE_SHOWN = 20
CUSTOMER_TIMELINE_ENROLLMENTS = 100

EXAMPLE_DRAFT = {
    "slug": "new-journey",
    "name": "New journey",
    "trigger": {"type": "event", "event": "signed_up"},
    "reentry": {"policy": "never"},
    "start": "welcome",
    "nodes": [
        {"id": "welcome", "type": "email", "template": "welcome", "next": "done"},
        {"id": "done", "type": "exit"},
    ],
}


def _errors(exc: JourneyError) -> ValidationError:
    """One error per problem, each naming its node: the editor lists them."""
    return ValidationError([ValidationError(line, code="journey") for line in exc.lines()])


def message_link(message) -> str:
    """A link to the message in the admin (plain text if messages have no admin)."""
    if message is None:
        return ""
    label = f"#{message.pk} {message.get_status_display().lower()}"
    try:
        url = reverse("admin:messaging_message_change", args=[message.pk])
    except NoReverseMatch:
        return label
    return format_html('<a href="{}">{}</a>', url, label)


# --- the journey -----------------------------------------------------------------------


class JourneyFileField(forms.JSONField):
    """The journey file as pretty JSON; a syntax error says where it is."""

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValidationError("Write the journey file here (JSON).", code="required")
        try:
            return super().to_python(value)
        except RecursionError:  # deeper than Python's parser goes: answered 500 before
            raise ValidationError(
                f"Nested more than {MAX_DEPTH} levels deep.", code="invalid"
            ) from None
        except ValidationError:
            try:
                json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValidationError(
                    "Not valid JSON: %(error)s (line %(line)s, column %(column)s).",
                    code="invalid",
                    params={"error": exc.msg, "line": exc.lineno, "column": exc.colno},
                ) from None
            raise

    def bound_data(self, data: Any, initial: Any) -> Any:
        try:
            return super().bound_data(data, initial)
        except RecursionError:  # shown again as it was typed
            return InvalidJSONInput(data)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, InvalidJSONInput):
            return value
        # Stored canonical: typed fields in order, so no sort_keys here.
        return json.dumps(value or EXAMPLE_DRAFT, ensure_ascii=False, indent=2)


class JourneyForm(forms.ModelForm):
    draft = JourneyFileField(
        label="Journey file (draft)",
        help_text=(
            "The draft, as a journey file (DESIGN.md's format). It is validated when "
            "you save: every problem is listed with the node it is in. Saving changes "
            "only the draft; publish it to make it live."
        ),
        widget=forms.Textarea(
            attrs={"rows": 32, "cols": 100, "spellcheck": "false", "class": "journey-editor"}
        ),
    )

    class Meta:
        model = Journey
        fields = ("draft",)

    def clean_draft(self) -> Any:
        data = self.cleaned_data["draft"]
        try:
            definition = parse_journey(data)
        except JourneyError as exc:
            raise _errors(exc) from None
        if self.instance.pk is not None and definition.slug != self.instance.slug:
            raise ValidationError(
                f"slug: must stay {self.instance.slug!r}: a journey's slug never changes."
            )
        if self.instance.pk is None and Journey.objects.filter(slug=definition.slug).exists():
            raise ValidationError(
                f"slug: a journey {definition.slug!r} exists already; edit that one."
            )
        return data


class PublishForm(forms.Form):
    STAY, MIGRATE = "stay", "migrate"
    in_flight = forms.ChoiceField(
        label="Customers in flight",
        choices=(
            (STAY, "Stay on the version they entered (they finish it as it was)"),
            (MIGRATE, "Move to the new version at their next step, by this node mapping"),
        ),
        initial=STAY,
        widget=forms.RadioSelect,
    )
    mapping = forms.JSONField(
        required=False,
        label="Node mapping",
        help_text=(
            'Old node id → new node id, e.g. {"wait1": "pause"}. A node left out keeps its '
            "id, if the new version has it."
        ),
        widget=forms.Textarea(attrs={"rows": 8, "cols": 60, "spellcheck": "false"}),
    )

    def clean_mapping(self) -> Any:
        mapping = self.cleaned_data.get("mapping")
        if mapping in (None, ""):
            return {}
        if not isinstance(mapping, dict):
            raise ValidationError('Must be a JSON object: {"old node": "new node"}.')
        return mapping

    def migrate(self) -> dict | None:
        if self.cleaned_data["in_flight"] != self.MIGRATE:
            return None
        return {"mapping": self.cleaned_data["mapping"]}


class VersionFormSet(ShownOnlyFormSet):
    shown = None  # every version


class VersionInline(ShownOnlyInline):
    """Published versions: immutable, shown and never edited."""

    model = JourneyVersion
    formset = VersionFormSet
    fk_name = "journey"
    fields = readonly_fields = ("number", "published_at", "published_by", "nodes", "export")
    ordering = ("-number",)
    verbose_name_plural = "Published versions (immutable)"

    @admin.display(description="nodes")
    def nodes(self, obj: JourneyVersion) -> int:
        return len(obj.definition.get("nodes", []))

    @admin.display(description="file")
    def export(self, obj: JourneyVersion):
        url = reverse("admin:journeys_journey_export", args=[obj.journey_id])
        return format_html('<a href="{}?version={}">v{}.json</a>', url, obj.number, obj.number)


@admin.register(Journey)
class JourneyAdmin(admin.ModelAdmin):
    form = JourneyForm
    list_display = ("name", "slug", "status", "live", "in_flight", "updated_at")
    list_filter = ("status",)
    search_fields = ("name", "slug")
    show_full_result_count = False
    actions = ("publish_selected", "pause_selected", "resume_selected", "archive_selected")
    inlines = (VersionInline,)
    info_fields = ("slug", "name", "description", "status", "live", "paused_at", "updated_at")

    def get_queryset(self, request):
        return selectors.journeys_for_admin()

    def get_fieldsets(self, request, obj=None):
        editor = ("Journey file (draft)", {"fields": ("draft",)})
        return [editor] if obj is None else [(None, {"fields": self.info_fields}), editor]

    def get_readonly_fields(self, request, obj=None):
        return self.info_fields if obj is not None else ()

    def has_delete_permission(self, request, obj=None):
        # Enrollments and messages keep their journey's history: archive instead.
        return False

    def save_model(self, request, obj, form, change):
        services.journey_draft_save(obj, form.cleaned_data["draft"])

    @admin.display(description="live version", ordering="live_version__number")
    def live(self, obj: Journey) -> str:
        return f"v{obj.live_version.number}" if obj.live_version_id else "—"

    @admin.display(description="active enrollments", ordering="active_count")
    def in_flight(self, obj: Journey):
        count = getattr(obj, "active_count", None)
        if count is None:
            count = obj.enrollments.filter(state=Enrollment.State.ACTIVE).count()
        url = reverse("admin:journeys_enrollment_changelist")
        return format_html(
            '<a href="{}?journey__id__exact={}&amp;state__exact=active">{}</a>',
            url,
            obj.pk,
            f"{count:,}",
        )

    # --- pages of its own ---------------------------------------------------------------

    def get_urls(self):
        def view(func, suffix, route):
            return path(route, self.admin_site.admin_view(func), name=f"journeys_journey_{suffix}")

        return [
            view(self.publish_view, "publish", "<path:object_id>/publish/"),
            view(self.status_view, "status", "<path:object_id>/status/"),
            view(self.export_view, "export", "<path:object_id>/export/"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        journey = self.get_object(request, unquote(object_id))
        extra = {}
        if journey is not None:
            extra = {
                "where": selectors.active_enrollments_by_node(journey),
                "statuses": Journey.Status,
            }
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    def _journey(self, request, object_id: str) -> Journey:
        journey = self.get_object(request, unquote(object_id))
        if journey is None:
            raise Http404(f"No journey with id {object_id!r}.")
        return journey

    def _change_url(self, journey: Journey) -> str:
        return reverse("admin:journeys_journey_change", args=[journey.pk])

    def publish_view(self, request, object_id: str):
        """Publish the draft, choosing what happens to customers in flight."""
        journey = self._journey(request, object_id)
        if not self.has_change_permission(request, journey):
            raise PermissionDenied
        draft_nodes: list[str] = []
        with suppress(JourneyError):  # the publish itself says what is wrong
            draft_nodes = parse_journey(journey.draft, check_refs=False).node_ids
        where = selectors.active_enrollments_by_node(journey)
        if request.method == "POST":
            form = PublishForm(request.POST)
            if form.is_valid():
                try:
                    version = services.journey_publish(
                        journey, now=timezone.now(), user=request.user, migrate=form.migrate()
                    )
                except JourneyError as exc:
                    form.add_error(None, _errors(exc))
                else:
                    moved = getattr(version, "migrated", 0)
                    self.message_user(
                        request,
                        f"{journey.name}: version {version.number} is live"
                        + (f"; {moved:,} enrollment(s) moved to it." if form.migrate() else "."),
                        messages.SUCCESS,
                    )
                    return HttpResponseRedirect(self._change_url(journey))
        else:
            suggestion = {row["node"]: row["node"] for row in where if row["node"]}
            form = PublishForm(initial={"mapping": suggestion})
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Publish {journey.name}",
            "journey": journey,
            "original": journey,
            "form": form,
            "where": where,
            "draft_nodes": draft_nodes,
            "next_number": (journey.versions.aggregate(n=Max("number"))["n"] or 0) + 1,
        }
        return TemplateResponse(request, "admin/journeys/journey/publish.html", context)

    def status_view(self, request, object_id: str):
        """Pause, resume or archive (POST, from the change page's buttons)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        journey = self._journey(request, object_id)
        if not self.has_change_permission(request, journey):
            raise PermissionDenied
        action = request.POST.get("action")
        if action not in ("pause", "resume", "archive"):
            raise Http404(f"No action {action!r}.")
        self._apply(request, [journey], action)
        return HttpResponseRedirect(self._change_url(journey))

    def export_view(self, request, object_id: str):
        """The journey file, as import_journey reads it (draft or ?version=N)."""
        journey = self._journey(request, object_id)
        raw = request.GET.get("version")
        try:
            version = int(raw) if raw else None
            data = services.journey_export(journey, version=version)
        except ValueError as exc:  # JourneyError is one
            raise Http404(str(exc)) from None
        name = f"{journey.slug}-v{version}.json" if version else f"{journey.slug}.json"
        response = HttpResponse(
            json.dumps(data, indent=2, ensure_ascii=False) + "\n",
            content_type="application/json; charset=utf-8",
        )
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response

    # --- actions -----------------------------------------------------------------------

    def _apply(self, request, journeys, action: str) -> None:
        now = timezone.now()
        for journey in journeys:
            try:
                if action == "publish":
                    version = services.journey_publish(journey, now=now, user=request.user)
                    text = f"{journey.name}: version {version.number} is live."
                elif action == "pause":
                    services.journey_pause(journey, now=now)
                    text = f"{journey.name}: paused; waits keep their due times."
                elif action == "resume":
                    services.journey_resume(journey, now=now)
                    text = f"{journey.name}: resumed; overdue steps catch up."
                else:
                    ended = services.journey_archive(journey, now=now)
                    text = f"{journey.name}: archived; {ended:,} active enrollment(s) exited."
            except JourneyError as exc:
                self.message_user(request, f"{journey.name}: {exc}", messages.ERROR)
            else:
                self.message_user(request, text, messages.SUCCESS)

    @admin.action(
        description="Publish drafts (customers in flight stay on their version)",
        permissions=("change",),
    )
    def publish_selected(self, request, queryset):
        self._apply(request, queryset, "publish")

    @admin.action(description="Pause", permissions=("change",))
    def pause_selected(self, request, queryset):
        self._apply(request, queryset, "pause")

    @admin.action(description="Resume", permissions=("change",))
    def resume_selected(self, request, queryset):
        self._apply(request, queryset, "resume")

    @admin.action(description="Archive (ends their active enrollments)", permissions=("change",))
    def archive_selected(self, request, queryset):
        if request.POST.get("confirmed") == "yes":
            self._apply(request, queryset, "archive")
            return None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Archive journeys?",
            "journeys": queryset,
            "action": "archive_selected",
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(
            request, "admin/journeys/journey/archive_confirmation.html", context
        )


# --- enrollments --------------------------------------------------------------------------


@admin.register(IngestWork)
class IngestWorkAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Live API data waiting for the journeys (ingest_work): normally gone
    within a second; rows that failed show their attempts and error here."""

    list_display = ("id", "received_at", "published_at", "attempts", "retry_after", "error")
    ordering = ("-id",)
    show_full_result_count = False


@admin.register(Enrollment)
class EnrollmentAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read only: the engine writes enrollments. The page of one shows its
    step-by-step timeline."""

    list_display = (
        "id",
        "customer_link",
        "journey",
        "version",
        "state",
        "current_node",
        "next_run_at",
        "entered_at",
        "finished_at",
        "is_holdout",
    )
    list_select_related = ("customer", "journey", "journey_version")
    list_filter = ("journey", "state", "is_holdout")
    search_fields = ("customer__external_id",)  # exact, below
    search_help_text = "Exact customer external id."
    raw_id_fields = ("customer", "journey_version")
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_per_page = 50
    ordering = ("-id",)
    fields = (
        "customer_link",
        "journey",
        "version",
        "state",
        "current_node",
        "next_run_at",
        "entered_at",
        "finished_at",
        "exit_reason",
        "is_holdout",
        "context_pretty",
    )
    readonly_fields = fields

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        return (queryset.filter(customer__external_id=term) if term else queryset), False

    def get_urls(self):
        timeline = self.admin_site.admin_view(self.customer_timeline_view)
        return [
            path(
                "customer/<int:customer_id>/timeline/",
                timeline,
                name="journeys_enrollment_customer_timeline",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        enrollment = self.get_object(request, unquote(object_id))
        extra = {}
        if enrollment is not None:
            extra = {"steps": _step_rows(selectors.enrollment_timeline(enrollment))}
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    def customer_timeline_view(self, request, customer_id: int):
        """Every journey a customer was in, each with its steps: why they did
        (or didn't) get a message."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        customer = get_object_or_404(Customer, pk=customer_id)
        timeline = selectors.customer_timeline(customer.pk, limit=CUSTOMER_TIMELINE_ENROLLMENTS)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Journey timeline of {customer.external_id}",
            "customer": customer,
            "timeline": [(e, _step_rows(steps)) for e, steps in timeline],
            "limit": CUSTOMER_TIMELINE_ENROLLMENTS,
        }
        return TemplateResponse(request, "admin/journeys/customer_timeline.html", context)

    @admin.display(description="customer", ordering="customer__external_id")
    def customer_link(self, obj: Enrollment):
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:customers_customer_change", args=[obj.customer_id]),
            obj.customer.external_id,
        )

    @admin.display(description="version", ordering="journey_version__number")
    def version(self, obj: Enrollment) -> str:
        return f"v{obj.journey_version.number}"

    @admin.display(description="context")
    def context_pretty(self, obj: Enrollment):
        return format_html("<pre>{}</pre>", json.dumps(obj.context, indent=2, sort_keys=True))


def _step_rows(steps) -> list[dict]:
    return [
        {
            "node": step.node_id,
            "visit": step.visit,
            "started_at": step.started_at,
            "finished_at": step.finished_at,
            "outcome": step.outcome,
            "detail": step.detail,
            "message": message_link(step.message),
        }
        for step in steps
    ]


# --- the customer page: their journeys ------------------------------------------------------


class JourneyTimelineFormSet(ShownOnlyFormSet):
    """The customer's newest enrollments."""

    @property
    def shown(self) -> int:
        return TIMELINE_SHOWN  # read when shown (a test may change it)

    def rows(self):
        return selectors.customer_enrollments(self.instance.pk)


class JourneyTimelineInline(ShownOnlyInline):
    model = Enrollment
    formset = JourneyTimelineFormSet
    template = "admin/journeys/journey_timeline_inline.html"
    fields = readonly_fields = ("journey", "state", "entered_at", "finished_at")
    verbose_name_plural = "Journeys"

    def has_view_permission(self, request, obj=None):
        return obj is not None and super().has_view_permission(request, obj)


customer_page.add_inline(JourneyTimelineInline)


# The backtest page and its button on the journey's page (apps/journeys/admin_backtest.py).
from .admin_backtest import install as _install_backtest  # noqa: E402

_install_backtest(JourneyAdmin)
