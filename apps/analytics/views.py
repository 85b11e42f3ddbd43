"""The dashboards (/analytics/...): thin views over `selectors`, each page a
list of `Table`s (a chart, its numbers, a CSV link). `?csv=<table name>`
downloads one table as CSV.

Staff only (the admin's login; others are sent to it), and each dashboard
needs the view permission of what it reads: a user without it gets 403.
The Viewer group has these permissions.
"""

from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from functools import wraps

from django import forms
from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.utils import timezone

from apps.core.charts import bar_chart_svg, heatmap_svg, line_chart_svg
from apps.journeys.models import Journey

from . import selectors
from .tables import Table, csv_response

DEFAULT_DAYS = 30


def requires(*perms: str) -> Callable:
    """Staff login (else the admin's login page), then every permission (else 403)."""

    def decorate(view):
        @staff_member_required
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs):
            if not request.user.has_perms(perms):
                raise PermissionDenied(f"This dashboard needs the {', '.join(perms)} permission.")
            return view(request, *args, **kwargs)

        wrapped.required_perms = perms
        return wrapped

    return decorate


class WindowForm(forms.Form):
    start = forms.DateField(required=False, help_text="First day (UTC), included.")
    end = forms.DateField(required=False, help_text="Last day (UTC), included.")

    def clean(self):
        data = super().clean()
        start, end = data.get("start"), data.get("end")
        if start and end and end < start:
            raise forms.ValidationError("end: must be on or after start")
        if start and end and (end - start).days >= selectors.MAX_DAYS:
            raise forms.ValidationError(f"the window is longer than {selectors.MAX_DAYS} days")
        return data


def window(request: HttpRequest, now: datetime) -> tuple[WindowForm, datetime, datetime]:
    """[start, end) from ?start=&end= (days, UTC, both included); the last
    30 days up to now by default or when the input is refused (the form
    shows why)."""
    form = WindowForm(request.GET or None)
    end, start = now, now - timedelta(days=DEFAULT_DAYS)
    if form.is_bound and form.is_valid():
        if form.cleaned_data.get("end"):
            end = min(now, datetime.combine(form.cleaned_data["end"], time(), UTC) + timedelta(1))
        if form.cleaned_data.get("start"):
            start = datetime.combine(form.cleaned_data["start"], time(), UTC)
        elif form.cleaned_data.get("end"):
            start = end - timedelta(days=DEFAULT_DAYS)
        if end <= start:
            end = start + timedelta(days=1)
    return form, start, end


def render(
    request: HttpRequest, template: str, title: str, tables: list[Table], **context
) -> HttpResponse:
    """The page, or one of its tables as CSV (?csv=<name>)."""
    wanted = request.GET.get("csv")
    if wanted:
        for table in tables:
            if table.name == wanted:
                return csv_response(table)
        raise Http404(f"No table named {wanted!r} on this page.")
    form = context.get("form")
    status = 400 if form is not None and form.is_bound and not form.is_valid() else 200
    return TemplateResponse(
        request,
        template,
        {
            **admin.site.each_context(request),
            "is_nav_sidebar_enabled": False,
            "title": title,
            "tables": tables,
            **context,
        },
        status=status,
    )


@requires()
def index(request: HttpRequest) -> HttpResponse:
    user = request.user
    boards = [
        ("Journeys", "analytics:journeys", "journeys.view_journey"),
        ("Deliverability", "analytics:deliverability", "messaging.view_message"),
        ("Retention", "analytics:retention", "customers.view_event"),
        ("NPS", "analytics:nps", "surveys.view_surveyresponse"),
    ]
    allowed = [(label, name) for label, name, perm in boards if user.has_perm(perm)]
    return render(request, "analytics/index.html", "Dashboards", [], boards=allowed)


@requires("journeys.view_journey")
def journeys(request: HttpRequest) -> HttpResponse:
    rows = Journey.objects.order_by("name").values_list("slug", "name", "status")
    return render(request, "analytics/journeys.html", "Journey reports", [], journeys=rows)


@requires("journeys.view_journey", "messaging.view_message")
def journey(request: HttpRequest, slug: str) -> HttpResponse:
    journey = get_object_or_404(Journey, slug=slug)
    now = timezone.now()
    form, start, end = window(request, now)
    report = selectors.journey_report(journey=journey, start=start, end=end)
    days = [d.day.isoformat() for d in report.daily]
    tables = [
        Table(
            "funnel",
            "Funnel by node",
            ["node", "kind", "enrollments reached", "% of enrolled"],
            [[r.node_id, r.kind, r.reached, r.share] for r in report.funnel],
            bar_chart_svg(
                [(r.node_id, r.reached) for r in report.funnel],
                title="Enrollments reaching each node",
                x_title="node (journey order)",
                y_title="enrollments",
            ),
        ),
        Table(
            "conversion",
            "Goal conversion and holdout lift",
            ["group", "enrolled", "converted", "conversion %"],
            [
                ["treated", report.treated.enrolled, report.treated.converted, report.treated.rate],
                [
                    "held out",
                    report.holdout.enrolled,
                    report.holdout.converted,
                    report.holdout.rate,
                ],
                [
                    "all",
                    report.enrolled,
                    report.treated.converted + report.holdout.converted,
                    report.conversion_rate,
                ],
            ],
            note=(
                f"Lift: {report.lift:+g} percentage points (treated minus held out)."
                if report.lift is not None
                else "Lift: needs enrollments in both groups."
            ),
        ),
        Table(
            "messages",
            "Messages by status",
            ["status", "messages"],
            [list(kv) for kv in report.messages_by_status],
            bar_chart_svg(
                report.messages_by_status,
                title="Messages made by the journey, by status",
                x_title="status",
                y_title="messages",
            ),
        ),
        Table(
            "daily",
            "Per day",
            ["day", "enrolled", "converted", "messages sent"],
            [[d.day.isoformat(), d.enrolled, d.converted, d.messages] for d in report.daily],
            line_chart_svg(
                days,
                {
                    "enrolled": [d.enrolled for d in report.daily],
                    "converted": [d.converted for d in report.daily],
                    "messages sent": [d.messages for d in report.daily],
                },
                title="Per day (UTC)",
                x_title="day",
                y_title="count",
            ),
        ),
    ]
    return render(
        request,
        "analytics/journey.html",
        f"Journey report: {journey.name}",
        tables,
        form=form,
        start=start,
        end=end,
        report=report,
    )


DELIVERABILITY_COLUMNS = [
    "sent", "delivered", "delivery %", "bounced", "bounce %", "complaints", "complaint %",
    "unsubscribes", "unsubscribe %", "opened", "open %", "clicked", "click %",
    "machine opens", "machine clicks",
]  # fmt: skip


def _deliverability_cells(r: selectors.DeliverabilityRow) -> list:
    return [
        r.sent, r.delivered, r.delivery_rate, r.bounced, r.bounce_rate, r.complained,
        r.complaint_rate, r.unsubscribed, r.unsubscribe_rate, r.opened, r.open_rate,
        r.clicked, r.click_rate, r.machine_opened, r.machine_clicked,
    ]  # fmt: skip


@requires("messaging.view_message")
def deliverability(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    form, start, end = window(request, now)
    by_channel, by_template = selectors.deliverability(start=start, end=end)
    rates = {
        "delivery": [r.delivery_rate for r in by_channel],
        "bounce": [r.bounce_rate for r in by_channel],
        "open": [r.open_rate for r in by_channel],
        "click": [r.click_rate for r in by_channel],
    }
    chart_rows = [
        (f"{r.channel} {name}", value or 0.0)
        for i, r in enumerate(by_channel)
        for name, values in rates.items()
        for value in [values[i]]
    ]
    tables = [
        Table(
            "by_channel",
            "By channel",
            ["channel", *DELIVERABILITY_COLUMNS],
            [[r.channel, *_deliverability_cells(r)] for r in by_channel],
            bar_chart_svg(
                chart_rows, title="Rates by channel", x_title="channel and rate", y_title="%"
            ),
            note="Opens and clicks are by people; suspected machine engagement "
            "(scanners, prefetching, provider-flagged machine opens) is counted apart.",
        ),
        Table(
            "by_template",
            "By template",
            ["channel", "template", *DELIVERABILITY_COLUMNS],
            [[r.channel, r.template or "(none)", *_deliverability_cells(r)] for r in by_template],
            bar_chart_svg(
                [(r.template or "(none)", r.sent) for r in by_template],
                title="Messages sent by template",
                x_title="template",
                y_title="sent",
            ),
        ),
    ]
    return render(
        request,
        "analytics/dashboard.html",
        "Deliverability",
        tables,
        form=form,
        start=start,
        end=end,
    )


@requires("customers.view_event")
def retention(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    try:
        months = int(request.GET.get("months", 6))
        rows = selectors.retention_by_month(now=now, months=months)
        cohorts = selectors.cohort_retention(now=now, months=min(months, 24))
    except ValueError as exc:
        return HttpResponseBadRequest(f"months: {exc}", content_type="text/plain")
    active, mrr = selectors.subscribers_at(now)
    labels = [r.month.strftime("%Y-%m") for r in rows]
    cohort_labels = [m.strftime("%Y-%m") for m in cohorts.months]
    offsets = list(range(cohorts.max_offset + 1))
    cells = {
        (m.strftime("%Y-%m"), f"+{k}"): cohorts.rate(m, k)
        for m in cohorts.months
        for k in offsets
        if cohorts.sizes.get(m) and selectors.add_months(datetime.combine(m, time(), UTC), k) < now
    }
    tables = [
        Table(
            "monthly",
            "By month",
            [
                "month",
                "active at start",
                "started",
                "renewed",
                "payment failed",
                "canceled",
                "active at end",
                "MRR at end",
                "churn %",
                "renewal %",
            ],
            [
                [
                    label,
                    r.active_at_start,
                    r.started,
                    r.renewed,
                    r.payment_failed,
                    r.canceled,
                    r.active_at_end,
                    r.mrr_at_end,
                    r.churn_rate,
                    r.renewal_rate,
                ]
                for label, r in zip(labels, rows, strict=True)
            ],
            line_chart_svg(
                labels,
                {
                    "churn %": [r.churn_rate for r in rows],
                    "renewal %": [r.renewal_rate for r in rows],
                },
                title="Monthly churn and renewal rates",
                x_title="month (UTC; the current one so far)",
                y_title="%",
            ),
        ),
        Table(
            "mrr",
            "MRR and active subscribers",
            ["month", "active at end", "MRR at end"],
            [[label, r.active_at_end, r.mrr_at_end] for label, r in zip(labels, rows, strict=True)],
            line_chart_svg(
                labels,
                {"MRR": [r.mrr_at_end for r in rows]},
                title="MRR at each month's end (now for the current one)",
                x_title="month",
                y_title="MRR",
            ),
        ),
        Table(
            "cohorts",
            "Signup-cohort retention",
            ["cohort", "customers", *[f"month +{k} %" for k in offsets]],
            [
                [label, cohorts.sizes.get(m, 0), *[cells.get((label, f"+{k}")) for k in offsets]]
                for label, m in zip(cohort_labels, cohorts.months, strict=True)
            ],
            heatmap_svg(
                cohort_labels,
                [f"+{k}" for k in offsets],
                cells,
                title="Share of each signup cohort active in later months",
                x_title="months since the signup month",
                y_title="signup month",
            ),
        ),
    ]
    return render(
        request,
        "analytics/retention.html",
        "Retention",
        tables,
        active=active,
        mrr=mrr,
        months=len(rows),
    )


@requires("surveys.view_surveyresponse")
def nps(request: HttpRequest) -> HttpResponse:
    from apps.segments.models import Segment
    from apps.surveys import selectors as surveys

    now = timezone.now()
    form, start, end = window(request, now)
    summary = surveys.nps_summary(start=start, end=end)
    weeks = surveys.nps_by_period(period="week", start=start, end=end)
    distribution = selectors.nps_distribution(start=start, end=end)
    by_journey = surveys.nps_by_journey(start=start, end=end)
    slugs = list(Segment.objects.order_by("name").values_list("slug", flat=True)[:30])
    by_segment = surveys.nps_by_segment(slugs, start=start, end=end)
    comments = selectors.nps_comments(start=start, end=end, limit=50)

    def parts(s) -> list:
        return [s.responses, s.promoters, s.passives, s.detractors, s.score, s.sent,
                s.answered, s.response_rate]  # fmt: skip

    part_columns = ["responses", "promoters", "passives", "detractors", "NPS", "invitations sent",
                    "answered", "response %"]  # fmt: skip
    tables = [
        Table(
            "weekly",
            "By week",
            ["week of", *part_columns],
            [[w.key, *parts(w.summary)] for w in weeks],
            line_chart_svg(
                [w.key for w in weeks],
                {"NPS": [w.summary.score for w in weeks]},
                title="NPS by week (responses by when given)",
                x_title="week starting (Monday, UTC)",
                y_title="NPS (-100 to 100)",
                min_value=-100 if any((w.summary.score or 0) < 0 for w in weeks) else None,
            ),
        ),
        Table(
            "distribution",
            "Scores 0 to 10",
            ["score", "responses"],
            [list(kv) for kv in distribution],
            bar_chart_svg(
                [(str(score), n) for score, n in distribution],
                title="Distribution of scores",
                x_title="score",
                y_title="responses",
            ),
        ),
        Table(
            "by_journey",
            "By journey",
            ["journey", *part_columns],
            [[r.key or "(not from a journey)", *parts(r.summary)] for r in by_journey],
        ),
        Table(
            "by_segment",
            "By segment (its current members)",
            ["segment", *part_columns],
            [[r.key, *parts(r.summary)] for r in by_segment],
        ),
        Table(
            "comments",
            "Recent comments, detractors first",
            ["responded at", "customer", "score", "category", "survey", "journey", "comment"],
            [
                [
                    r.responded_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M"),
                    r.customer.external_id,
                    r.score,
                    r.category,
                    r.survey.slug,
                    r.invitation.journey,
                    r.comment,
                ]
                for r in comments
            ],
        ),
    ]
    return render(
        request,
        "analytics/nps.html",
        "NPS",
        tables,
        form=form,
        start=start,
        end=end,
        summary=summary,
    )
