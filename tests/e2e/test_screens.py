"""A Marketer's screens open in the browser: the builder canvas, every
dashboard, the admin home and Customer 360, over demo data rich enough for
real charts. With TENURE_SCREENSHOTS=1
(`make screenshots`) they are saved to docs/screenshots/ for the README."""

import random
from datetime import timedelta

from django.db.models import Count
from django.utils import timezone
from playwright.sync_api import expect

from apps.customers.demo import demo_seed
from apps.customers.models import Account, Customer, Event
from apps.journeys.engine import engine_tick, enrollments_advance
from apps.journeys.enrollment import enrollment_start
from apps.journeys.models import Journey
from apps.messaging.delivery import messages_deliver
from apps.messaging.models import Channel, Message
from apps.segments.services import segments_refresh_all
from apps.surveys.services import survey_invite, survey_respond
from apps.tracking.services.hits import open_record
from apps.tracking.services.processing import tracking_process
from tests.e2e.conftest import login
from tests.surveys.conftest import SURVEYS, TEMPLATES, quietly

FIXTURES = TEMPLATES.parent
DEMO_CUSTOMERS = 300
JOURNEY_DAYS = 14  # the onboarding journey has run for the last two weeks
NPS_COMMENTS = {
    "detractor": ["Too hard to set up.", "Reports are slow on big accounts.", "Pricey for us."],
    "passive": ["Fine, does the job.", "Would like more integrations."],
    "promoter": ["The weekly report saves me an hour.", "Support is excellent.", "Love it."],
}


def dashboards(now) -> dict[str, str]:
    window = f"?start={(now - timedelta(days=JOURNEY_DAYS)).date()}&end={now.date()}"
    return {
        "dashboard-journeys": "/analytics/journeys/onboarding/" + window,
        "dashboard-deliverability": "/analytics/deliverability/" + window,
        "dashboard-retention": "/analytics/retention/",
        "dashboard-nps": "/analytics/nps/?start=" + str((now - timedelta(days=84)).date())
        + f"&end={now.date()}",
    }  # fmt: skip


def deliver_due(*, now) -> None:
    """The delivery worker's service for what is due (console provider: the
    rows are the outbox)."""
    due = Message.objects.filter(status__in=(Message.Status.QUEUED, Message.Status.DEFERRED))
    messages_deliver(list(due.values_list("pk", flat=True)), now=now)


def demo_world(now) -> Customer:
    """What `make run` loads (templates, surveys, segments, journeys, a few
    hundred demo customers, segments refreshed), then two weeks of the
    onboarding journey run by the engine tick by tick (each sign-up enrolled
    at its time, the messages delivered, some opened), and NPS answers over
    twelve weeks: enough for the dashboards to draw real charts. Returns the
    customer whose 360 is shown."""
    quietly("load_templates", str(TEMPLATES), "--only-new")
    quietly("load_surveys", str(SURVEYS), "--only-new")
    quietly("load_segments", str(FIXTURES / "segments.json"), "--only-new")
    quietly("load_journeys", str(FIXTURES / "journeys"), "--only-new")
    demo_seed(customers=DEMO_CUSTOMERS, seed=7, now=now)
    segments_refresh_all(now=now)
    rng = random.Random(7)

    onboarding = Journey.objects.get(slug="onboarding")
    since = now - timedelta(days=JOURNEY_DAYS)
    signups = list(
        Event.objects.filter(name="signed_up", occurred_at__gte=since)
        .order_by("occurred_at")
        .values_list("customer_id", "occurred_at")
    )
    at = since
    while at <= now:
        while signups and signups[0][1] <= at:
            customer_id, signed_up_at = signups.pop(0)
            enrollment_start(journey=onboarding, customer_id=customer_id, now=signed_up_at)
        engine_tick(now=at, publish=lambda ids, at=at: enrollments_advance(ids, now=at))
        deliver_due(now=at)
        at += timedelta(hours=12)
    emails = Message.objects.filter(channel=Channel.EMAIL, status=Message.Status.SENT)
    for message_id, sent_at in emails.values_list("pk", "sent_at"):
        if rng.random() < 0.45:
            opened_at = sent_at + timedelta(hours=rng.uniform(0.2, 30))
            open_record(message_id=message_id, now=min(opened_at, now), method="GET",
                        user_agent="Mozilla/5.0 (Macintosh) AppleWebKit/605.1.15")  # fmt: skip
    tracking_process(now=now)

    customers = list(Customer.objects.order_by("pk").values_list("pk", flat=True))
    for n, customer_id in enumerate(rng.sample(customers, 50)):
        asked_at = now - timedelta(days=84) + timedelta(hours=n * 40)
        invited = survey_invite(customer=Customer.objects.get(pk=customer_id), survey="nps",
                                channel=Channel.EMAIL, idempotency_key=f"screens-nps:{n}",
                                now=asked_at)  # fmt: skip
        if invited.invitation is None or rng.random() < 0.2:
            continue  # throttled, refused by a policy, or simply not answered
        score = rng.choices(range(11), weights=[1, 1, 1, 2, 2, 3, 4, 6, 9, 10, 8])[0]
        kind = "detractor" if score <= 6 else "passive" if score <= 8 else "promoter"
        comment = rng.choice(NPS_COMMENTS[kind]) if rng.random() < 0.6 else ""
        survey_respond(invitation=invited.invitation, score=score, comment=comment,
                       now=asked_at + timedelta(hours=rng.uniform(1, 48)))  # fmt: skip

    # The customer the journey wrote to most: their 360 has a story.
    shown = (
        Message.objects.filter(journey="onboarding")
        .values("customer_id")
        .annotate(sent=Count("pk"))
        .order_by("-sent", "customer_id")
        .first()
    )
    return Customer.objects.get(pk=shown["customer_id"])


def test_a_marketer_opens_the_builder_every_dashboard_and_customer_360(page, marketer, shot):
    now = timezone.now()
    customer = demo_world(now)
    login(page, marketer)
    shot(page, "admin-home", full_page=True)

    page.goto("/builder/journeys/onboarding/")
    for node in ("trigger", "welcome", "overnight", "tips", "activated", "nudge-sms", "done"):
        expect(page.get_by_test_id(f"node-{node}")).to_be_visible()
    expect(page.get_by_test_id("btn-publish")).to_be_enabled()
    entered = page.get_by_test_id("count-welcome-entered")
    expect(entered).not_to_have_attribute("data-count", "0")
    shot(page, "builder")

    for name, url in dashboards(now).items():
        response = page.goto(url)
        assert response is not None and response.ok, f"{url}: {response and response.status}"
        expect(page.locator("h1").first).to_be_visible()
        expect(page.locator("svg").first).to_be_visible()
        shot(page, name, full_page=True)

    page.goto(f"/admin/customers/customer/{customer.pk}/change/")
    expect(page.get_by_test_id("customer-360")).to_be_visible()
    expect(page.get_by_test_id("c360-messages")).to_contain_text("onboarding / welcome")
    expect(page.get_by_test_id("c360-enrollment").first).to_contain_text("Onboarding")
    shot(page, "customer-360", full_page=True)

    # An account (the `group` call): demo customers at one company share it.
    account = Account.objects.annotate(n=Count("memberships")).order_by("-n", "pk").first()
    assert account is not None and account.n >= 2
    page.goto(f"/admin/customers/account/{account.pk}/change/")
    members = page.get_by_test_id("account-members")
    expect(members.locator("tbody tr")).to_have_count(min(account.n, 100))  # the latest 100
    shot(page, "account", full_page=True)
