"""A Marketer's screens open in the browser: the builder canvas, every
dashboard, the admin home and Customer 360. With TENURE_SCREENSHOTS=1
(`make screenshots`) they are saved to docs/screenshots/ for the README."""

from playwright.sync_api import expect

from apps.customers.models import Customer
from apps.journeys.engine import enrollments_advance
from apps.journeys.enrollment import enrollment_start
from apps.journeys.services import journey_import
from apps.messaging.models import Channel, Template
from tests.e2e.conftest import login
from tests.journeys.conftest import BASE_FILE, T0

WINDOW = "?start=2026-02-23&end=2026-03-08"  # around T0, when the journey ran
DASHBOARDS = {
    "dashboard-journeys": "/analytics/journeys/onboarding/" + WINDOW,
    "dashboard-deliverability": "/analytics/deliverability/" + WINDOW,
    "dashboard-retention": "/analytics/retention/",
    "dashboard-nps": "/analytics/nps/" + WINDOW,
}


def onboarding_with_a_customer() -> Customer:
    Template.objects.create(
        slug="welcome", name="Welcome", channel=Channel.EMAIL,
        subject="Welcome, {{ customer.first_name }}",
        html='<p>Glad you are here.</p><p>{{ company.postal_address }} '
        '<a href="{{ links.unsubscribe }}">Unsubscribe</a></p>',
        text="Glad you are here. {{ company.postal_address }} {{ links.unsubscribe }}",
    )  # fmt: skip
    Template.objects.create(
        slug="activation-nudge", name="Nudge", channel=Channel.SMS, body="Try your first report"
    )
    journey = journey_import(BASE_FILE, now=T0, publish=True)
    ada = Customer.objects.create(
        external_id="ada", email="ada@example.com", timezone="Europe/London",
        traits={"first_name": "Ada", "plan": "pro"},
    )  # fmt: skip
    enrollment = enrollment_start(journey=journey, customer_id=ada.pk, now=T0)
    enrollments_advance([enrollment.pk], now=T0)
    return ada


def test_a_marketer_opens_the_builder_every_dashboard_and_customer_360(page, marketer, shot):
    ada = onboarding_with_a_customer()
    login(page, marketer)
    shot(page, "admin-home", full_page=True)

    page.goto("/builder/journeys/onboarding/")
    for node in ("trigger", "welcome", "wait1", "check", "nudge", "done"):
        expect(page.get_by_test_id(f"node-{node}")).to_be_visible()
    expect(page.get_by_test_id("btn-publish")).to_be_enabled()
    shot(page, "builder")

    for name, url in DASHBOARDS.items():
        response = page.goto(url)
        assert response is not None and response.ok, f"{url}: {response and response.status}"
        expect(page.locator("h1").first).to_be_visible()
        shot(page, name, full_page=True)

    page.goto(f"/admin/customers/customer/{ada.pk}/change/")
    expect(page.get_by_test_id("customer-360")).to_be_visible()
    expect(page.get_by_test_id("c360-messages")).to_contain_text("Welcome, Ada")
    expect(page.get_by_test_id("c360-enrollment").first).to_contain_text("Onboarding")
    shot(page, "customer-360", full_page=True)
