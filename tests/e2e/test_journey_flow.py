"""A Marketer builds a journey on the canvas from nothing (event trigger,
email, wait, branch, SMS), publishes it, an event comes in over the API, the
engine runs (its services, with `now` moved past the wait: no sleeping), and
the browser shows the customer at the wait and then the messages in the
outbox."""

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from apps.customers.models import Customer, Event
from apps.customers.services import api_key_create
from apps.journeys.engine import engine_tick, enrollments_advance
from apps.journeys.models import Enrollment, Journey
from apps.journeys.triggers import events_received
from apps.messaging.consent import consent_record
from apps.messaging.delivery import messages_deliver
from apps.messaging.models import Channel, ConsentRecord, Message
from tests.e2e.conftest import login
from tests.messaging.sending import make_template

SLUG = "first-steps"
NUDGE = "{{ customer.first_name }}, your first report is one tap away. STOP to stop"


def run_engine(*, now) -> None:
    """What beat and the workers do, in this thread: a tick claims what is due
    and (its transaction committed) advances it at the same `now`; then the
    delivery worker's service sends what was queued (the console provider:
    the rows are the outbox)."""
    engine_tick(now=now, publish=lambda ids: enrollments_advance(ids, now=now))
    queued = Message.objects.filter(status=Message.Status.QUEUED).values_list("pk", flat=True)
    messages_deliver(list(queued), now=now)


def select_node(page, node_id: str) -> None:
    page.get_by_test_id(f"node-head-{node_id}").click()
    expect(page.get_by_test_id("field-id")).to_have_value(node_id)


def build_on_the_canvas(page) -> None:
    page.goto("/builder/")
    form = page.get_by_test_id("new-journey-form")
    form.locator("#id_name").fill("First steps")
    form.locator("#id_slug").fill(SLUG)
    form.locator("#id_event").fill("signed_up")
    page.get_by_test_id("create-journey").click()
    expect(page.get_by_test_id("node-done")).to_be_visible()

    # After the trigger: the welcome email (it goes between the trigger and the exit).
    page.get_by_test_id("btn-settings").click()
    expect(page.get_by_test_id("field-trigger-event")).to_have_value("signed_up")
    page.get_by_test_id("palette-email").click()
    expect(page.get_by_test_id("field-id")).to_have_value("email-1")
    page.get_by_test_id("field-template").select_option("welcome")
    expect(page.get_by_test_id("preview-subject")).to_contain_text("Welcome, Grace")

    # Then a two-day wait, then a branch on the plan.
    page.get_by_test_id("palette-wait").click()
    expect(page.get_by_test_id("field-id")).to_have_value("wait-1")
    page.get_by_test_id("field-duration-days").fill("2")
    page.get_by_test_id("palette-branch").click()
    expect(page.get_by_test_id("field-id")).to_have_value("branch-1")
    page.get_by_test_id("field-condition").fill('{"trait": "plan", "op": "eq", "value": "pro"}')
    page.get_by_test_id("field-condition-check").click()
    expect(page.get_by_test_id("field-condition-status")).to_be_visible()

    # The SMS lands on the branch's free output; the panel points yes at it
    # and no at the exit.
    page.get_by_test_id("palette-sms").click()
    expect(page.get_by_test_id("field-id")).to_have_value("sms-1")
    page.get_by_test_id("field-template").select_option("nudge")
    select_node(page, "branch-1")
    page.get_by_test_id("field-output-yes").select_option("sms-1")
    page.get_by_test_id("field-output-no").select_option("done")

    # The SMS's output drawn on the canvas, handle to handle (the whole journey in view).
    page.get_by_role("button", name="Fit View").click()
    page.get_by_test_id("handle-sms-1-next").drag_to(page.get_by_test_id("handle-done-in"))
    select_node(page, "sms-1")
    expect(page.get_by_test_id("field-output-next")).to_have_value("done")

    page.get_by_test_id("btn-save").click()
    expect(page.get_by_test_id("toast")).to_have_text("Draft saved.")
    expect(page.get_by_test_id("dirty-indicator")).to_have_count(0)
    page.get_by_test_id("btn-validate").click()
    expect(page.get_by_test_id("toast")).to_have_text("The journey is valid.")
    page.get_by_test_id("btn-publish").click()
    # A first version has no one in flight: it is published with "stay", the default.
    expect(page.get_by_test_id("no-one-in-flight")).to_be_visible()
    page.get_by_test_id("btn-confirm-publish").click()
    expect(page.get_by_test_id("toast")).to_contain_text("Version 1 is live")


@pytest.fixture(autouse=True)
def send_settings(settings):
    settings.SEND_HOURS_SMS = ""  # the SMS goes whatever the hour the test runs at
    settings.SEND_HOURS_EMAIL = ""
    settings.EMAIL_MARKETING_REQUIRES_OPT_IN = False


def test_a_journey_built_on_the_canvas_runs_for_an_event_from_the_api(page, marketer):
    make_template(slug="welcome", name="Welcome", subject="Welcome, {{ customer.first_name }}")
    make_template(slug="nudge", name="Nudge", channel=Channel.SMS, body=NUDGE)
    # Someone already there for the template preview.
    Customer.objects.create(external_id="grace", email="grace@example.com",
                            traits={"first_name": "Grace"})  # fmt: skip
    _, key = api_key_create(name="e2e")
    login(page, marketer)
    build_on_the_canvas(page)

    journey = Journey.objects.get(slug=SLUG)
    assert journey.status == Journey.Status.LIVE
    nodes = {node["id"]: node for node in journey.live_version.definition["nodes"]}
    assert nodes["email-1"] | {"ui": None} == {"id": "email-1", "type": "email",
        "template": "welcome", "next": "wait-1", "ui": None}  # fmt: skip
    assert nodes["wait-1"]["duration"] == {"days": 2}
    assert (nodes["branch-1"]["yes"], nodes["branch-1"]["no"]) == ("sms-1", "done")

    # A sign-up over the API, as the product's backend would send it.
    headers = {"Authorization": f"Bearer {key}"}
    identify = page.request.post("/api/v1/identify", headers=headers, data={
        "userId": "ada", "traits": {"email": "ada@example.com", "phone": "+14155550123",
                                    "timezone": "Europe/London", "first_name": "Ada",
                                    "plan": "pro"}})  # fmt: skip
    assert identify.ok, identify.text()
    track = page.request.post("/api/v1/track", headers=headers,
                              data={"userId": "ada", "event": "signed_up"})  # fmt: skip
    assert track.ok, track.text()
    ada = Customer.objects.get(external_id="ada")
    now = timezone.now()
    consent_record(
        customer=ada, channel=Channel.SMS, status=ConsentRecord.Status.GRANTED,
        source=ConsentRecord.Source.API, recorded_at=now - timedelta(days=1),
    )  # fmt: skip

    # The ingest task's service, then the engine: the email goes, ada waits.
    event_ids = list(
        Event.objects.filter(customer=ada, name="signed_up").values_list("pk", flat=True)
    )
    assert events_received(event_ids=event_ids, now=now).enrolled == 1
    run_engine(now=now)
    enrollment = Enrollment.objects.get(journey=journey, customer=ada)
    assert enrollment.current_node == "wait-1"

    page.goto(f"/builder/journeys/{SLUG}/")
    expect(page.get_by_test_id("count-wait-1-waiting")).to_have_attribute("data-count", "1")
    expect(page.get_by_test_id("count-email-1-sent")).to_have_attribute("data-count", "1")
    page.get_by_test_id("count-wait-1-waiting").click()
    expect(page.get_by_test_id("customer-row")).to_have_count(1)
    expect(page.get_by_test_id("customer-row")).to_contain_text("ada")

    page.goto(f"/admin/journeys/enrollment/{enrollment.pk}/change/")
    expect(page.locator("body")).to_contain_text("wait-1")
    page.goto("/admin/messaging/message/?q=ada")
    expect(page.locator("#result_list")).to_contain_text("Welcome, Ada")
    expect(page.locator("#result_list")).to_contain_text(f"{SLUG} / email-1")

    # Past the wait: the branch sees a pro customer, the SMS goes, ada is done.
    run_engine(now=now + timedelta(days=2, minutes=1))
    enrollment.refresh_from_db()
    assert enrollment.state == Enrollment.State.COMPLETED, enrollment.state
    sms = Message.objects.get(customer=ada, channel=Channel.SMS)
    assert (sms.status, sms.provider) == (Message.Status.SENT, "console"), sms.reason or sms.error
    page.goto("/admin/messaging/message/?q=ada")
    expect(page.locator("#result_list")).to_contain_text("your first report is one tap away")
    expect(page.locator("#result_list")).to_contain_text(f"{SLUG} / sms-1")
    page.goto(f"/admin/messaging/message/{sms.pk}/change/")
    expect(page.locator("body")).to_contain_text("Ada, your first report is one tap away")
