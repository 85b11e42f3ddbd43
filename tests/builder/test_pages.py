"""The builder's pages: the journey list with "new journey", the canvas page
that boots the React app, who may see them, and the front-end build that
`make frontend` (a step of `make run` and `make test`) produces."""

import json
import re
import subprocess
from pathlib import Path

import pytest
from django.conf import settings

from apps.builder.views import DIST, ENTRY, MANIFEST, frontend_assets
from apps.journeys.models import Journey

from .conftest import JsonClient

pytestmark = pytest.mark.django_db

FRONTEND = Path(settings.BASE_DIR) / "apps" / "builder" / "frontend"


def test_the_list_shows_the_journeys_and_links_their_canvas(marketer, make_journey):
    make_journey()

    page = JsonClient(marketer).client.get("/builder/")

    assert page.status_code == 200
    html = page.content.decode()
    assert 'href="/builder/journeys/onboarding/"' in html
    assert 'data-testid="new-journey-form"' in html


def test_a_new_journey_starts_as_a_draft_with_its_trigger_and_an_exit(marketer, db):
    client = JsonClient(marketer).client

    response = client.post(
        "/builder/", {"name": "Win-back", "slug": "win-back", "event": "subscription_cancelled"}
    )

    assert response.status_code == 302
    assert response["Location"] == "/builder/journeys/win-back/"
    journey = Journey.objects.get(slug="win-back")
    assert journey.status == Journey.Status.DRAFT
    assert journey.draft["trigger"] == {"type": "event", "event": "subscription_cancelled"}
    assert journey.draft["nodes"] == [{"id": "done", "type": "exit", "ui": {"x": 0, "y": 160}}]


def test_a_new_journey_with_a_taken_or_bad_slug_is_refused_on_the_form(marketer, make_journey):
    make_journey(publish=False)
    client = JsonClient(marketer).client

    taken = client.post("/builder/", {"name": "Again", "slug": "onboarding", "event": "x"})
    bad = client.post("/builder/", {"name": "Bad", "slug": "no spaces", "event": "x"})

    assert taken.status_code == 200
    assert "A journey &#x27;onboarding&#x27; exists already." in taken.content.decode()
    assert "Use letters, digits, - and _ only." in bad.content.decode()
    assert Journey.objects.count() == 1


def test_a_viewer_sees_the_list_without_the_new_journey_form_and_cannot_post_it(viewer, db):
    client = JsonClient(viewer).client

    page = client.get("/builder/")
    post = client.post("/builder/", {"name": "X", "slug": "x", "event": "x"})

    assert page.status_code == 200
    assert "new-journey-form" not in page.content.decode()
    assert post.status_code == 403
    assert not Journey.objects.exists()


def test_the_canvas_page_hands_the_app_its_journey_api_and_token(marketer, make_journey):
    make_journey()

    page = JsonClient(marketer).client.get("/builder/journeys/onboarding/")

    assert page.status_code == 200
    boot = json.loads(
        re.search(
            r'<script id="builder-boot" type="application/json">(.*?)</script>',
            page.content.decode(),
        ).group(1)
    )
    assert boot["slug"] == "onboarding"
    assert boot["api"] == "/builder/api/"
    assert boot["canChange"] is True
    assert boot["csrfToken"]
    assert page.cookies["csrftoken"].value


def test_the_canvas_of_a_viewer_is_read_only(viewer, make_journey):
    make_journey()

    page = JsonClient(viewer).client.get("/builder/journeys/onboarding/")

    assert page.context["boot"]["canChange"] is False


def test_the_pages_are_for_logged_in_staff_with_journey_rights(django_user_model, make_journey):
    make_journey()
    plain = django_user_model.objects.create_user("plain", password="pw")
    intern = django_user_model.objects.create_user("intern", password="pw", is_staff=True)

    anonymous = JsonClient(None).client.get("/builder/journeys/onboarding/")
    not_staff = JsonClient(plain).client.get("/builder/")
    no_rights = JsonClient(intern).client.get("/builder/journeys/onboarding/")

    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/admin/login/")
    assert not_staff.status_code == 302
    assert no_rights.status_code == 403


def test_an_unknown_journey_canvas_is_a_404(marketer, db):
    assert JsonClient(marketer).client.get("/builder/journeys/nope/").status_code == 404


# --- the front-end build ---------------------------------------------------------------------


def test_the_frontend_is_built_and_the_canvas_page_loads_its_files(marketer, make_journey):
    """`make frontend` ran (make run and make test run it first)."""
    assert MANIFEST.exists(), "no front-end build: run `make frontend`"
    manifest = json.loads(MANIFEST.read_text())
    assert manifest[ENTRY]["isEntry"] is True
    make_journey()

    page = JsonClient(marketer).client.get("/builder/journeys/onboarding/")

    assets = frontend_assets()
    assert assets is not None
    html = page.content.decode()
    for url in assets["scripts"] + assets["styles"]:
        assert url in html
        assert (DIST / url.split("/builder/dist/", 1)[1]).is_file()
    assert 'data-testid="builder-root"' in html


def test_the_build_is_up_to_date_with_its_sources():
    """A source edited after the last build means `make frontend` was skipped."""
    built = MANIFEST.stat().st_mtime
    sources = [*FRONTEND.joinpath("src").rglob("*"), FRONTEND / "package-lock.json"]
    stale = [
        str(p.relative_to(FRONTEND)) for p in sources if p.is_file() and p.stat().st_mtime > built
    ]
    assert stale == [], f"rebuild with `make frontend`: {stale} changed after the build"


def test_the_lock_file_pins_react_flow_react_and_vite():
    lock = json.loads((FRONTEND / "package-lock.json").read_text())
    packages = lock["packages"]
    for name in ("@xyflow/react", "react", "react-dom", "vite", "@vitejs/plugin-react"):
        assert packages[f"node_modules/{name}"]["version"], name
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "apps/builder/static/builder/dist/.vite/manifest.json"],
        cwd=settings.BASE_DIR,
    )
    assert ignored.returncode == 0, "the build output must be git-ignored"


def test_without_a_build_the_canvas_page_says_how_to_make_one(marketer, make_journey, monkeypatch):
    from apps.builder import views

    monkeypatch.setattr(views, "MANIFEST", DIST / ".vite" / "missing.json")
    make_journey()

    page = JsonClient(marketer).client.get("/builder/journeys/onboarding/")

    assert 'data-testid="builder-not-built"' in page.content.decode()
    assert "make frontend" in page.content.decode()
