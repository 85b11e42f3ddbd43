"""Browser tests: Playwright (sync API) driving Debian's Chromium against
pytest-django's `live_server` (transactional database: the server thread
sees what the test writes).

Never `playwright install`: the browser is `/usr/bin/chromium` (the setup
installs it; `.ci/run` does when it is missing). Waits are Playwright's own
auto-waiting `expect(...)` assertions, never sleeps.

`TENURE_SCREENSHOTS=1` (what `make screenshots` sets) also writes the PNGs of
docs/screenshots/ from the tests that take them (`shot(page, name)`).
"""

import os
from pathlib import Path

import pytest
from django.apps import apps as django_apps
from django.contrib.auth.models import Group

from apps.core.roles import MARKETER, VIEWER, roles_ensure

# Playwright's sync API runs an event loop in this thread; the ORM calls the
# tests make between page actions are still plain synchronous calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PASSWORD = "e2e-password"
EXPECT_TIMEOUT_MS = 10_000


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import expect, sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (the browser tests need it)")
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=CHROMIUM)
    yield browser
    browser.close()
    playwright.stop()


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": 1440, "height": 900}, locale="en-GB"
    )
    context.set_default_timeout(EXPECT_TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def roles(transactional_db):
    """The groups of the roles migration (a transactional test's flush removed them)."""
    roles_ensure(django_apps)


@pytest.fixture
def make_user(roles, django_user_model):
    def make(username: str, group: str | None = MARKETER, *, superuser: bool = False):
        user = django_user_model.objects.create_user(
            username, password=PASSWORD, is_staff=True, is_superuser=superuser
        )
        if group:
            user.groups.add(Group.objects.get(name=group))
        return user

    return make


@pytest.fixture
def marketer(make_user):
    return make_user("marketer", MARKETER)


@pytest.fixture
def viewer(make_user):
    return make_user("viewer", VIEWER)


def login(page, user) -> None:
    """Log in through the admin's login form, as a person would."""
    from playwright.sync_api import expect

    page.goto("/admin/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{page.url.split('/admin/')[0]}/admin/")


@pytest.fixture
def shot():
    """shot(page, "builder"): with TENURE_SCREENSHOTS=1, save the page as
    docs/screenshots/builder.png; otherwise nothing."""
    enabled = os.environ.get("TENURE_SCREENSHOTS") == "1"

    def take(page, name: str, *, full_page: bool = False) -> None:
        if enabled:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)

    return take
