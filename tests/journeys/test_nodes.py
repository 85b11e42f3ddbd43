"""Every node kind, with the time passed in: what it does and the step it leaves."""

import json
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from apps.customers.models import Customer
from apps.journeys import webhooks
from apps.journeys.engine import engine_tick, enrollments_advance, split_branch
from apps.journeys.enrollment import enrollment_start
from apps.journeys.models import Enrollment, EnrollmentStep
from apps.journeys.triggers import events_received
from apps.journeys.webhooks import signature_verify
from apps.messaging.consent import suppression_add
from apps.messaging.models import Message, Suppression
from apps.messaging.services import message_send

from .conftest import T0

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)
SECRET = "whsec-test-secret"


@pytest.fixture
def run_journey(make_journey, journey_file, sendable):
    """run_journey(nodes, **top) -> a live journey starting at the first node,
    with no goal unless given."""

    def make(nodes: list[dict], **top):
        top.setdefault("goal", None)
        data = journey_file(start=nodes[0]["id"], nodes=nodes, **top)
        return make_journey(data)

    return make


def enroll(journey, customer, *, at=T0) -> Enrollment:
    enrollment = enrollment_start(journey=journey, customer_id=customer.pk, now=at)
    assert enrollment is not None
    return enrollment


def step(enrollment, node_id: str, visit: int = 1) -> EnrollmentStep:
    return EnrollmentStep.objects.get(enrollment=enrollment, node_id=node_id, visit=visit)


def then_exit(node: dict) -> list[dict]:
    return [{**node, "next": "done"}, {"id": "done", "type": "exit"}]


# --- email and sms ---------------------------------------------------------------------------


def test_an_sms_to_a_customer_who_opted_in_is_sent(run_journey, customer, sms_consent):
    sms_consent(customer)
    journey = run_journey(then_exit({"id": "nudge", "type": "sms", "template": "activation-nudge"}))
    enrollment = enroll(journey, customer)

    enrollments_advance([enrollment.pk], now=T0)

    sent = step(enrollment, "nudge")
    message = Message.objects.get()
    assert (sent.outcome, sent.message) == ("sent", message)
    assert (message.channel, message.to_address, message.text) == (
        "sms",
        "+14155550101",
        "Hi from activation-nudge",
    )


def test_an_sms_in_quiet_hours_is_deferred_and_the_step_says_until_when(
    run_journey, customer, sms_consent
):
    sms_consent(customer)
    journey = run_journey(then_exit({"id": "nudge", "type": "sms", "template": "activation-nudge"}))
    late = datetime(2026, 3, 2, 22, 0, tzinfo=UTC)  # 22:00 in London
    enrollment = enroll(journey, customer, at=late)

    enrollments_advance([enrollment.pk], now=late)

    deferred = step(enrollment, "nudge")
    message = Message.objects.get()
    assert message.status == Message.Status.DEFERRED
    assert deferred.outcome == "deferred"
    assert deferred.detail == (
        "deferred until 2026-03-03 08:00 UTC: "
        f"{message.reason.removeprefix('deferred: ')}; "
        f"sms 'activation-nudge' (message #{message.pk})"
    )
    enrollment.refresh_from_db()
    assert enrollment.state == Enrollment.State.COMPLETED  # the message waits, not the journey


def test_one_customers_deeply_nested_traits_fail_their_message_only(
    run_journey, customer, make_customers
):
    journey = run_journey(then_exit({"id": "hello", "type": "email", "template": "welcome"}))
    (deep,) = make_customers(1, prefix="deep")
    tree: dict = {}
    for _ in range(900):
        tree = {"x": tree}
    Customer.objects.filter(pk=deep.pk).update(traits={"first_name": "Deep", "tree": tree})
    enrollments = [enroll(journey, customer), enroll(journey, deep)]

    enrollments_advance([e.pk for e in enrollments], now=T0)  # one batch, one send call

    fine, failed = (step(e, "hello") for e in enrollments)
    assert fine.message.status == Message.Status.QUEUED
    assert failed.message.status == Message.Status.FAILED
    assert "customer.tree: data nested more than 64 levels deep" in failed.message.error
    for enrollment in enrollments:
        enrollment.refresh_from_db()
    # A message that failed to render fails its enrollment (the engine's rule), no other.
    assert [e.state for e in enrollments] == [
        Enrollment.State.COMPLETED,
        Enrollment.State.FAILED,
    ]


def test_a_suppressed_address_is_recorded_with_the_reason(run_journey, customer):
    suppression_add(
        channel="email",
        address=customer.email,
        reason=Suppression.Reason.UNSUBSCRIBE,
        source="test",
        now=T0,
    )
    journey = run_journey(then_exit({"id": "hello", "type": "email", "template": "welcome"}))
    enrollment = enroll(journey, customer)

    enrollments_advance([enrollment.pk], now=T0)

    refused = step(enrollment, "hello")
    assert refused.outcome == "suppressed"
    assert refused.detail == refused.message.reason
    assert refused.detail.startswith("suppressed: ")


def test_a_frequency_cap_skips_the_send_and_says_so(run_journey, customer, settings):
    settings.FREQUENCY_CAP_EMAIL = "1/7d"
    message_send(customer=customer, template="welcome", idempotency_key="earlier", now=T0)
    journey = run_journey(then_exit({"id": "hello", "type": "email", "template": "welcome"}))
    enrollment = enroll(journey, customer)

    enrollments_advance([enrollment.pk], now=T0 + timedelta(hours=1))

    skipped = step(enrollment, "hello")
    assert (skipped.outcome, skipped.detail) == ("skipped", "skipped: frequency cap 1/7d")


def test_over_cap_defer_defers_instead_of_skipping(run_journey, customer, settings):
    settings.FREQUENCY_CAP_EMAIL = "1/7d"
    message_send(customer=customer, template="welcome", idempotency_key="earlier", now=T0)
    journey = run_journey(
        then_exit({"id": "hello", "type": "email", "template": "welcome", "over_cap": "defer"})
    )
    enrollment = enroll(journey, customer)

    enrollments_advance([enrollment.pk], now=T0 + timedelta(hours=1))

    assert step(enrollment, "hello").outcome == "deferred"
    assert Message.objects.get(enrollment_id=enrollment.pk).send_after == T0 + 7 * DAY


# --- waits ------------------------------------------------------------------------------------


def test_a_wait_adds_its_days_hours_and_minutes(run_journey, customer):
    journey = run_journey(
        then_exit(
            {"id": "pause", "type": "wait", "duration": {"days": 1, "hours": 2, "minutes": 30}}
        )
    )
    enrollment = enroll(journey, customer)

    enrollments_advance([enrollment.pk], now=T0)
    enrollment.refresh_from_db()
    early = enrollments_advance([enrollment.pk], now=T0 + timedelta(hours=26))
    done = enrollments_advance([enrollment.pk], now=T0 + timedelta(hours=26, minutes=30))

    assert enrollment.next_run_at == T0 + timedelta(days=1, hours=2, minutes=30)
    assert (early.advanced, done.advanced) == (0, 1)
    assert step(enrollment, "pause").detail == "waited 1 day 2 hours 30 minutes"


def test_wait_until_takes_the_next_local_time_on_an_allowed_weekday(run_journey, customer):
    Customer.objects.filter(pk=customer.pk).update(timezone="America/New_York")
    journey = run_journey(
        then_exit({"id": "at", "type": "wait_until", "time": "10:00", "weekdays": ["wed"]})
    )
    enrollment = enroll(journey, customer)  # Monday 04:00 in New York

    enrollments_advance([enrollment.pk], now=T0)

    enrollment.refresh_from_db()
    wednesday = datetime(2026, 3, 4, 15, 0, tzinfo=UTC)  # 10:00 EST
    assert enrollment.next_run_at == wednesday
    assert step(enrollment, "at").detail == (
        "waiting until 10:00 on wed: 2026-03-04 15:00 UTC (Wed 10:00 America/New_York)"
    )
    enrollments_advance([enrollment.pk], now=wednesday)
    assert step(enrollment, "at").outcome == "waited"
    assert step(enrollment, "done").outcome == "completed"


def test_wait_until_follows_daylight_saving_in_the_customers_zone(run_journey, customer):
    Customer.objects.filter(pk=customer.pk).update(timezone="America/New_York")
    journey = run_journey(
        then_exit({"id": "at", "type": "wait_until", "time": "10:00", "weekdays": ["mon"]})
    )
    monday_afternoon = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)
    enrollment = enroll(journey, customer, at=monday_afternoon)

    enrollments_advance([enrollment.pk], now=monday_afternoon)

    enrollment.refresh_from_db()
    # New York moves to EDT (UTC-4) on 8 March: 10:00 is 14:00 UTC, not 15:00.
    assert enrollment.next_run_at == datetime(2026, 3, 9, 14, 0, tzinfo=UTC)


def test_wait_until_today_when_the_time_has_not_passed_yet(run_journey, customer):
    journey = run_journey(then_exit({"id": "at", "type": "wait_until", "time": "17:30"}))
    enrollment = enroll(journey, customer)  # 09:00 in London

    enrollments_advance([enrollment.pk], now=T0)

    enrollment.refresh_from_db()
    assert enrollment.next_run_at == datetime(2026, 3, 2, 17, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "note"),
    [
        ("", "the customer has no time zone; used UTC"),
        ("Mars/Olympus_Mons", "unknown time zone 'Mars/Olympus_Mons'; used UTC"),
    ],
)
def test_wait_until_without_a_known_zone_uses_utc_and_says_so(run_journey, customer, zone, note):
    Customer.objects.filter(pk=customer.pk).update(timezone=zone)
    journey = run_journey(then_exit({"id": "at", "type": "wait_until", "time": "10:00"}))
    enrollment = enroll(journey, customer)

    enrollments_advance([enrollment.pk], now=T0)

    enrollment.refresh_from_db()
    assert enrollment.next_run_at == datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    assert step(enrollment, "at").detail == f"waiting until 10:00: 2026-03-02 10:00 UTC; {note}"


# --- wait_for_event ---------------------------------------------------------------------------

WAIT_FOR_UPGRADE = [
    {
        "id": "upgrade",
        "type": "wait_for_event",
        "event": "upgraded",
        "timeout": {"days": 3},
        "where": {"plan": "pro"},
        "yes": "thanks",
        "no": "nudge",
    },
    {"id": "thanks", "type": "exit"},
    {"id": "nudge", "type": "exit"},
]


def test_an_event_arriving_during_the_wait_takes_the_yes_edge(run_journey, customer, track):
    journey = run_journey(WAIT_FOR_UPGRADE)
    enrollment = enroll(journey, customer)
    enrollments_advance([enrollment.pk], now=T0)
    event = track(customer.external_id, "upgraded", at=T0 + DAY, plan="pro")

    events_received(event_ids=[event.pk], now=T0 + DAY)
    enrollments_advance([enrollment.pk], now=T0 + DAY)

    waited = step(enrollment, "upgrade")
    assert (waited.outcome, waited.finished_at) == ("yes", T0 + DAY)
    assert waited.detail == "yes: upgraded with {'plan': 'pro'} arrived at 2026-03-03 09:00 UTC"
    assert step(enrollment, "thanks").outcome == "completed"


def test_no_event_before_the_timeout_takes_the_no_edge(run_journey, customer):
    journey = run_journey(WAIT_FOR_UPGRADE)
    enrollment = enroll(journey, customer)
    enrollments_advance([enrollment.pk], now=T0)
    enrollment.refresh_from_db()

    enrollments_advance([enrollment.pk], now=T0 + 3 * DAY)

    assert enrollment.next_run_at == T0 + 3 * DAY
    waited = step(enrollment, "upgrade")
    assert (waited.outcome, waited.detail) == (
        "no",
        "no: no upgraded with {'plan': 'pro'} within 3 days",
    )
    assert step(enrollment, "nudge").outcome == "completed"


def test_an_event_before_the_wait_began_or_not_matching_where_does_not_count(
    run_journey, customer, track
):
    track(customer.external_id, "upgraded", at=T0 - DAY, plan="pro")
    journey = run_journey(WAIT_FOR_UPGRADE)
    enrollment = enroll(journey, customer)
    enrollments_advance([enrollment.pk], now=T0)
    track(customer.external_id, "upgraded", at=T0 + DAY, plan="starter")

    woken = engine_tick(now=T0 + DAY, publish=lambda ids: None).woken
    enrollments_advance([enrollment.pk], now=T0 + 3 * DAY)

    assert woken == 0
    assert step(enrollment, "upgrade").outcome == "no"


def test_the_event_listener_wakes_the_wait_at_once(run_journey, customer, track):
    journey = run_journey(WAIT_FOR_UPGRADE)
    enrollment = enroll(journey, customer)
    enrollments_advance([enrollment.pk], now=T0)
    event = track(customer.external_id, "upgraded", at=T0 + DAY, plan="pro")

    result = events_received(event_ids=[event.pk], now=T0 + DAY)

    enrollment.refresh_from_db()
    assert result.woken == 1
    assert enrollment.next_run_at == T0 + DAY


def test_the_tick_wakes_a_wait_whose_event_came_by_another_path(run_journey, customer, track):
    journey = run_journey(WAIT_FOR_UPGRADE)
    enrollment = enroll(journey, customer)
    enrollments_advance([enrollment.pk], now=T0)
    track(customer.external_id, "upgraded", at=T0 + DAY, plan="pro")  # an import: no listener
    published: list[list[int]] = []

    result = engine_tick(now=T0 + DAY + timedelta(seconds=5), publish=published.append)

    assert (result.woken, result.claimed) == (1, 1)


# --- branch and split ---------------------------------------------------------------------------


def test_a_branch_takes_yes_or_no_and_says_why(run_journey, customer, make_customers):
    nodes = [
        {
            "id": "pro",
            "type": "branch",
            "condition": {"trait": "plan", "op": "eq", "value": "pro"},
            "yes": "a",
            "no": "b",
        },
        {"id": "a", "type": "exit"},
        {"id": "b", "type": "exit"},
    ]
    journey = run_journey(nodes)
    (other,) = make_customers(1, traits={"plan": "starter"})
    yes, no = enroll(journey, customer), enroll(journey, other)

    enrollments_advance([yes.pk, no.pk], now=T0)

    assert (step(yes, "pro").outcome, step(yes, "pro").detail) == (
        "yes",
        "branch yes because plan is 'pro'",
    )
    assert (step(no, "pro").outcome, step(no, "pro").detail) == (
        "no",
        "branch no because not: plan is 'pro'",
    )
    assert step(yes, "a").outcome == step(no, "b").outcome == "completed"


def test_a_split_is_stable_per_enrollment_and_follows_the_weights():
    picks = [split_branch(enrollment_id, "ab", [3, 1]) for enrollment_id in range(4000)]

    assert [split_branch(i, "ab", [3, 1]) for i in range(4000)] == picks
    share = Counter(picks)[0] / len(picks)
    assert 0.72 < share < 0.78


def test_a_split_records_the_branch_taken(run_journey, customer):
    nodes = [
        {"id": "ab", "type": "split", "branches": [{"weight": 1, "next": "a"}, {"weight": 1}]},
        {"id": "a", "type": "exit"},
    ]
    journey = run_journey(nodes)
    enrollment = enroll(journey, customer)

    enrollments_advance([enrollment.pk], now=T0)

    index = split_branch(enrollment.pk, "ab", [1, 1])
    taken = step(enrollment, "ab")
    assert taken.outcome == f"branch {index + 1}"
    assert taken.detail == f"split: branch {index + 1} of 2 (weight 1 of 2)"


# --- update_traits ---------------------------------------------------------------------------


def test_update_traits_merges_traits_and_fills_contact_columns(run_journey, customer):
    journey = run_journey(
        then_exit(
            {
                "id": "mark",
                "type": "update_traits",
                "traits": {"plan": "trial-extended", "first_name": None, "timezone": "Asia/Tokyo"},
            }
        )
    )
    enrollment = enroll(journey, customer)

    enrollments_advance([enrollment.pk], now=T0)

    customer.refresh_from_db()
    assert customer.traits["plan"] == "trial-extended"
    assert "first_name" not in customer.traits
    assert (customer.timezone, customer.traits["timezone"]) == ("Asia/Tokyo", "Asia/Tokyo")
    assert customer.last_seen_at is None  # a journey is not the customer being active
    assert step(enrollment, "mark").detail == (
        "traits: removed first_name, plan = 'trial-extended', timezone = 'Asia/Tokyo'"
    )


def test_update_traits_with_an_invalid_contact_value_fails_the_enrollment(run_journey, customer):
    journey = run_journey(
        then_exit({"id": "mark", "type": "update_traits", "traits": {"email": "not-an-email"}})
    )
    enrollment = enroll(journey, customer)

    enrollments_advance([enrollment.pk], now=T0)

    enrollment.refresh_from_db()
    customer.refresh_from_db()
    assert enrollment.state == Enrollment.State.FAILED
    assert "traits.email: 'not-an-email' is not an email address" in enrollment.exit_reason
    assert customer.email == "ada@example.com"


# --- webhook --------------------------------------------------------------------------------


class Receiver:
    """A loopback HTTP server answering scripted statuses (then 200) and
    recording every request."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"headers": dict(self.headers), "body": body})
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/tenure"


@pytest.fixture
def receiver(settings):
    settings.JOURNEY_WEBHOOK_SECRET = SECRET
    # The receiver is on loopback, which webhooks may reach only when allowed.
    settings.JOURNEY_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.JOURNEY_WEBHOOK_BACKOFF_S = 30
    settings.JOURNEY_WEBHOOK_MAX_ATTEMPTS = 3
    server = Receiver()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def webhook_journey(run_journey, receiver, **node):
    return run_journey(then_exit({"id": "crm", "type": "webhook", "url": receiver.url, **node}))


def test_a_webhook_is_a_signed_post_of_the_enrollment(run_journey, customer, receiver, track):
    run_journey(
        then_exit({"id": "crm", "type": "webhook", "url": receiver.url}),
        trigger={"type": "event", "event": "signed_up"},
    )
    event = track(customer.external_id, "signed_up", at=T0, source="ads")
    events_received(event_ids=[event.pk], now=T0)
    enrollment = Enrollment.objects.get()

    enrollments_advance([enrollment.pk], now=T0)

    (request,) = receiver.requests
    headers = request["headers"]
    assert signature_verify(
        secret=SECRET,
        body=request["body"],
        timestamp=headers["X-Tenure-Timestamp"],
        signature_header=headers["X-Tenure-Signature"],
        now=T0,
    )
    assert headers["X-Tenure-Timestamp"] == str(int(T0.timestamp()))
    assert headers["X-Tenure-Delivery"] == f"enr:{enrollment.pk}:crm:1"
    body = json.loads(request["body"])
    assert body["journey"] == {"slug": "onboarding", "name": "Onboarding", "version": 1}
    assert body["customer"]["external_id"] == "u-1"
    assert body["event"]["properties"] == {"source": "ads"}
    called = step(enrollment, "crm")
    assert called.outcome == "called"
    assert called.detail.startswith(f"POST {receiver.url} → 200 in ")
    assert step(enrollment, "done").outcome == "completed"


def test_a_tampered_body_or_an_old_timestamp_fails_verification(run_journey, customer, receiver):
    enrollment = enroll(webhook_journey(run_journey, receiver), customer)
    enrollments_advance([enrollment.pk], now=T0)
    (request,) = receiver.requests
    headers = request["headers"]

    def verify(body=request["body"], now=T0):
        return signature_verify(
            secret=SECRET,
            body=body,
            timestamp=headers["X-Tenure-Timestamp"],
            signature_header=headers["X-Tenure-Signature"],
            now=now,
        )

    assert verify()
    assert not verify(body=request["body"].replace(b"u-1", b"u-2"))
    assert not verify(now=T0 + timedelta(minutes=6))


def test_a_failing_webhook_is_retried_later_as_a_row_with_backoff(run_journey, customer, receiver):
    receiver.statuses = [503, 502]
    enrollment = enroll(webhook_journey(run_journey, receiver), customer)

    enrollments_advance([enrollment.pk], now=T0)
    enrollment.refresh_from_db()
    first_retry = enrollment.next_run_at
    retrying = step(enrollment, "crm")
    enrollments_advance([enrollment.pk], now=first_retry)
    enrollment.refresh_from_db()
    second_retry = enrollment.next_run_at
    enrollments_advance([enrollment.pk], now=second_retry)

    assert first_retry == T0 + timedelta(seconds=30)
    assert second_retry == first_retry + timedelta(seconds=60)
    assert retrying.outcome == "retrying"
    assert retrying.detail == (
        f"POST {receiver.url}: attempt 1 of 3 failed: HTTP 503 Service Unavailable; "
        "next attempt at 2026-03-02 09:00:30 UTC"
    )
    assert len(receiver.requests) == 3
    assert len({r["headers"]["X-Tenure-Delivery"] for r in receiver.requests}) == 1
    assert step(enrollment, "crm").outcome == "called"
    assert step(enrollment, "crm").detail.endswith("(attempt 3)")
    assert step(enrollment, "done").outcome == "completed"


def test_a_webhook_that_keeps_failing_is_recorded_and_the_journey_continues(
    run_journey, customer, receiver
):
    receiver.statuses = [500, 500, 500]
    enrollment = enroll(webhook_journey(run_journey, receiver), customer)

    for attempt in range(3):
        enrollments_advance([enrollment.pk], now=T0 + DAY * attempt)

    failed = step(enrollment, "crm")
    assert (failed.outcome, failed.detail) == (
        "failed",
        f"POST {receiver.url} failed after 3 attempts: HTTP 500 Internal Server Error",
    )
    enrollment.refresh_from_db()
    assert enrollment.state == Enrollment.State.COMPLETED


def test_a_webhook_set_to_fail_fails_the_enrollment(run_journey, customer, receiver):
    receiver.statuses = [404]
    enrollment = enroll(webhook_journey(run_journey, receiver, on_failure="fail"), customer)

    enrollments_advance([enrollment.pk], now=T0)

    enrollment.refresh_from_db()
    assert len(receiver.requests) == 1  # a 4xx is not retried
    assert enrollment.state == Enrollment.State.FAILED
    assert enrollment.exit_reason == f"POST {receiver.url} failed: HTTP 404 Not Found"


def test_a_webhook_without_a_signing_secret_is_not_called(
    run_journey, customer, receiver, settings
):
    settings.JOURNEY_WEBHOOK_SECRET = ""
    enrollment = enroll(webhook_journey(run_journey, receiver), customer)

    enrollments_advance([enrollment.pk], now=T0)

    assert receiver.requests == []
    assert step(enrollment, "crm").detail == (
        f"POST {receiver.url} failed: no signing secret: set JOURNEY_WEBHOOK_SECRET"
    )


def test_a_webhook_signs_with_the_secret_it_names(run_journey, customer, receiver, settings):
    settings.JOURNEY_WEBHOOK_SECRETS = {"crm": "crm-secret"}
    enrollment = enroll(webhook_journey(run_journey, receiver, secret="crm"), customer)

    enrollments_advance([enrollment.pk], now=T0)

    (request,) = receiver.requests
    assert signature_verify(
        secret="crm-secret",
        body=request["body"],
        timestamp=request["headers"]["X-Tenure-Timestamp"],
        signature_header=request["headers"]["X-Tenure-Signature"],
        now=T0,
    )


def test_a_stored_webhook_to_loopback_is_refused_when_called_and_nothing_is_posted(
    run_journey, customer, receiver, settings
):
    # Imported while allowed (as a version stored before this check would be)...
    journey = run_journey(then_exit({"id": "crm", "type": "webhook", "url": receiver.url}))
    enrollment = enroll(journey, customer)
    settings.JOURNEY_WEBHOOK_ALLOWED_HOSTS = []

    enrollments_advance([enrollment.pk], now=T0)

    assert receiver.requests == []
    called = step(enrollment, "crm")
    assert called.outcome == "failed"  # for good: not retried
    assert "may not post to 127.0.0.1: 127.0.0.1 is a loopback address" in called.detail


def test_the_call_goes_to_the_checked_address_with_the_urls_host_header(
    run_journey, customer, receiver, settings
):
    settings.JOURNEY_WEBHOOK_ALLOWED_HOSTS = ["localhost"]
    port = receiver.server.server_address[1]
    url = f"http://localhost:{port}/hooks/tenure"
    journey = run_journey(then_exit({"id": "crm", "type": "webhook", "url": url}))
    enrollment = enroll(journey, customer)

    enrollments_advance([enrollment.pk], now=T0)

    (request,) = receiver.requests
    assert request["headers"]["Host"] == f"localhost:{port}"
    assert step(enrollment, "crm").outcome == "called"


def test_a_holdout_enrollment_calls_no_webhook(run_journey, customer, receiver):
    journey = run_journey(
        then_exit({"id": "crm", "type": "webhook", "url": receiver.url}), holdout_percent=100
    )
    enrollment = enroll(journey, customer)

    enrollments_advance([enrollment.pk], now=T0)

    assert receiver.requests == []
    assert step(enrollment, "crm").detail == "holdout: not called"


def test_a_webhook_outcome_is_recorded_as_its_call_returns_not_after_the_slowest(monkeypatch):
    """A chunk's calls to a slow server and a quick one: the quick one's
    outcome is recorded while the slow one is still waiting, so a task
    stopped by its time limit keeps what it had."""
    quick_recorded = threading.Event()
    recorded = []

    def call(item, *, now):
        if item.node_id == "slow":
            quick_recorded.wait(timeout=5)
        return webhooks.Outcome(True, False, 200, "", 1)

    def outcome_record(item, outcome, *, now):
        recorded.append(item.node_id)
        quick_recorded.set()
        return True

    monkeypatch.setattr(webhooks, "call", call)
    monkeypatch.setattr(webhooks, "outcome_record", outcome_record)
    pending = [
        webhooks.PendingCall(n, node, 1, n, "https://example.com/", None, 1, f"{node}:1", b"{}")
        for n, node in ((1, "slow"), (2, "quick"))
    ]

    assert webhooks.calls_make(pending, now=T0) == [1, 2]
    assert recorded == ["quick", "slow"]
