"""The builder's pages: the list of journeys (with "new journey") and the
canvas of one journey. The canvas is a React app (apps/builder/frontend,
built by `make frontend` into static files); this page hands it the
journey's slug, the API's address and the CSRF token, and the API does the
rest.

Staff only (the admin's login), and reading needs `journeys.view_journey`
(or `change_journey`), as the API does.
"""

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from django import forms
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.templatetags.static import static
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from apps.journeys import services
from apps.journeys.graph import SLUG_RE, JourneyError
from apps.journeys.models import Journey

from . import selectors
from .api import can_change, can_read, journey_errors

# Where `npm run build` writes (vite.config.js says the same); the folder is
# an app static folder, so runserver and collectstatic find it, and git-ignored.
DIST = Path(__file__).resolve().parent / "static" / "builder" / "dist"
MANIFEST = DIST / ".vite" / "manifest.json"
ENTRY = "src/main.jsx"


@lru_cache(maxsize=4)
def _manifest(mtime_ns: int) -> dict[str, Any]:
    return json.loads(MANIFEST.read_text())


def frontend_assets() -> dict[str, list[str]] | None:
    """The built entry's script and styles as static URLs, from Vite's
    manifest; None when the front end has not been built."""
    try:
        manifest = _manifest(MANIFEST.stat().st_mtime_ns)
    except FileNotFoundError:
        return None
    entry = manifest.get(ENTRY)
    if entry is None:
        return None
    css = list(entry.get("css", []))
    for name in entry.get("imports", []):
        css.extend(manifest.get(name, {}).get("css", []))
    return {
        "scripts": [static(f"builder/dist/{entry['file']}")],
        "styles": [static(f"builder/dist/{name}") for name in css],
    }


def _readers_only(request: HttpRequest) -> None:
    if not can_read(request.user):
        raise PermissionDenied("Reading journeys needs the journeys.view_journey permission.")


class NewJourneyForm(forms.Form):
    name = forms.CharField(max_length=200, label="Name")
    slug = forms.CharField(
        max_length=100,
        label="Slug",
        help_text="Letters, digits, - and _; names the journey in files and messages for good.",
    )
    event = forms.CharField(
        max_length=200,
        label="Triggered by the event",
        initial="signed_up",
        help_text="Change the trigger later in the journey's settings.",
    )

    def clean_slug(self) -> str:
        slug = self.cleaned_data["slug"].strip()
        if not SLUG_RE.match(slug):
            raise forms.ValidationError("Use letters, digits, - and _ only.")
        if Journey.objects.filter(slug=slug).exists():
            raise forms.ValidationError(f"A journey {slug!r} exists already.")
        return slug

    def journey_file(self) -> dict[str, Any]:
        """The smallest valid journey: the trigger and an exit to build from."""
        data = self.cleaned_data
        return {
            "slug": data["slug"],
            "name": data["name"],
            "trigger": {"type": "event", "event": data["event"].strip()},
            "reentry": {"policy": "never"},
            "start": "done",
            "nodes": [{"id": "done", "type": "exit", "ui": {"x": 0, "y": 160}}],
        }


@staff_member_required
@require_http_methods(["GET", "POST"])
def index(request: HttpRequest) -> HttpResponse:
    """The journeys, and a form for a new one (its draft is saved through
    the same service as the API's)."""
    _readers_only(request)
    form = NewJourneyForm()
    if request.method == "POST":
        if not can_change(request.user):
            raise PermissionDenied(
                "Creating journeys needs the journeys.change_journey permission."
            )
        form = NewJourneyForm(request.POST)
        if form.is_valid():
            try:
                journey = services.journey_draft_save(Journey(), form.journey_file())
            except JourneyError as exc:
                for error in journey_errors(exc):
                    form.add_error(None, f"{error['path']}: {error['message']}")
            else:
                return redirect("builder:canvas", slug=journey.slug)
    context = {
        "title": "Journey builder",
        "journeys": selectors.journey_list(),
        "form": form,
        "can_change": can_change(request.user),
    }
    return TemplateResponse(request, "builder/index.html", context)


@staff_member_required
@require_http_methods(["GET"])
def canvas(request: HttpRequest, slug: str) -> HttpResponse:
    _readers_only(request)
    journey = Journey.objects.filter(slug=slug).first()
    if journey is None:
        raise Http404(f"No journey {slug!r}.")
    boot = {
        "slug": journey.slug,
        "api": reverse("builder:api-root"),
        "csrfToken": get_token(request),
        "canChange": can_change(request.user),
        "listUrl": reverse("builder:index"),
        "adminUrl": reverse("admin:journeys_journey_change", args=[journey.pk]),
        "user": request.user.get_username(),
    }
    context = {
        "title": f"{journey.name} · Journey builder",
        "journey": journey,
        "boot": boot,
        "assets": frontend_assets(),
    }
    return TemplateResponse(request, "builder/canvas.html", context)
