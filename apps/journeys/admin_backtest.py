"""The backtest page of a journey in the admin: the same replay as
`manage.py simulate_journey`, asked for with a small form and shown as
tables. `install(JourneyAdmin)` adds its URL and the "Backtest…" button on
the journey's page (see the end of admin.py).

The form is a GET: a backtest changes nothing (it runs in a transaction that
is rolled back), so its page can be reloaded and its link shared. It runs in
the request; a long window on a big base is for the command, which shows a
progress bar."""

from datetime import timedelta
from functools import partial

from django import forms
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone

from .simulation import (
    DEFAULT_SEGMENT_STEP,
    MAX_DAYS,
    SimulationError,
    journey_simulate,
)

BUTTON_TEMPLATE = "admin/journeys/backtest_change_form.html"


class BacktestForm(forms.Form):
    days = forms.IntegerField(
        min_value=1,
        max_value=MAX_DAYS,
        initial=30,
        label="Days back",
        help_text="Replay the recorded events of this many days, up to now.",
    )
    draft = forms.BooleanField(
        required=False,
        label="Backtest the draft",
        help_text="Instead of the live version: see what an edit would have done.",
    )
    segment_step = forms.IntegerField(
        min_value=1,
        max_value=24 * 60,
        initial=int(DEFAULT_SEGMENT_STEP.total_seconds() // 60),
        label="Segment check every (minutes)",
        help_text="For segment and schedule triggers: how often the segment is re-evaluated.",
    )


def backtest_view(model_admin, request, object_id: str):
    journey = model_admin.get_object(request, unquote(object_id))
    if journey is None:
        raise Http404(f"No journey with id {object_id!r}.")
    # It writes nothing, but it is work: those who may change the journey may run it.
    if not model_admin.has_change_permission(request, journey):
        raise PermissionDenied
    result = None
    if "days" in request.GET:
        form = BacktestForm(request.GET)
        if form.is_valid():
            try:
                result = journey_simulate(
                    journey,
                    days=form.cleaned_data["days"],
                    now=timezone.now(),
                    draft=form.cleaned_data["draft"],
                    segment_step=timedelta(minutes=form.cleaned_data["segment_step"]),
                )
            except SimulationError as exc:
                form.add_error(None, str(exc))
    else:
        form = BacktestForm(initial={"draft": journey.live_version_id is None})
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": f"Backtest: {journey.name}",
        "journey": journey,
        "form": form,
        "result": result,
        "reasons": [
            (title, counts)
            for title, counts in (
                ("Deferred", result.deferred),
                ("Suppressed", result.suppressed),
                ("Skipped", result.skipped),
                ("Failed enrollments", result.errors),
            )
            if counts
        ]
        if result
        else [],
    }
    return TemplateResponse(request, "admin/journeys/backtest.html", context)


def install(admin_class) -> None:
    """Add the backtest page to `admin_class` (the journey admin) and its
    button to the journey's page, keeping everything the class has."""
    get_urls = admin_class.get_urls

    def get_urls_with_backtest(self):
        view = self.admin_site.admin_view(partial(backtest_view, self))
        route = path("<path:object_id>/backtest/", view, name="journeys_journey_backtest")
        return [route, *get_urls(self)]

    admin_class.get_urls = get_urls_with_backtest
    admin_class.change_form_template = BUTTON_TEMPLATE
