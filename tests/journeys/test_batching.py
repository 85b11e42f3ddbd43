"""A chunk advances its enrollments side by side: the sends it reaches go
through one `message_send_many` call, and what it reads it reads at once."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.core.bulk import rows_insert, rows_update
from apps.journeys.engine import enrollments_advance
from apps.journeys.enrollment import enrollments_start
from apps.journeys.models import Enrollment, EnrollmentStep
from apps.messaging import services
from apps.messaging.models import Message

from .conftest import EMAIL_FOOTER_HTML, EMAIL_FOOTER_TEXT, T0

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


@pytest.fixture
def batches(monkeypatch) -> list[list[services.SendRequest]]:
    """The requests of every `message_send_many` call, in order (the real
    function still does the sending)."""
    calls: list[list[services.SendRequest]] = []
    real = services.message_send_many

    def recording(requests, *, now):
        calls.append(list(requests))
        return real(requests, now=now)

    monkeypatch.setattr(services, "message_send_many", recording)
    return calls


@pytest.fixture
def live(make_journey, journey_file, sendable):
    """live(nodes, slug="j") -> a live journey of these nodes, no goal."""

    def make(nodes: list[dict], slug: str = "j"):
        data = journey_file(slug=slug, name=slug, start=nodes[0]["id"], nodes=nodes, goal=None)
        return make_journey(data)

    return make


def enroll_all(journey, customers) -> list[Enrollment]:
    enrollments_start(journey=journey, customer_ids=[c.pk for c in customers], now=T0)
    return list(Enrollment.objects.filter(journey=journey).order_by("pk"))


def test_the_sends_of_a_chunk_go_through_one_call_in_enrollment_order(
    live, make_customers, batches, steps_of
):
    journey = live(
        [
            {"id": "welcome", "type": "email", "template": "welcome", "next": "pause"},
            {"id": "pause", "type": "wait", "duration": {"days": 2}},
        ]
    )
    enrollments = enroll_all(journey, make_customers(5))

    result = enrollments_advance([e.pk for e in enrollments], now=T0)

    assert (result.advanced, result.steps, result.failed) == (5, 10, 0)
    assert len(batches) == 1
    assert [r.idempotency_key for r in batches[0]] == [f"enr:{e.pk}:welcome:1" for e in enrollments]
    for enrollment in enrollments:
        message = Message.objects.get(enrollment_id=enrollment.pk)
        sent = EnrollmentStep.objects.get(enrollment=enrollment, node_id="welcome")
        assert (sent.outcome, sent.message) == ("sent", message)
        assert sent.detail == f"sent: email 'welcome' (message #{message.pk})"
        assert steps_of(enrollment) == [("welcome", 1, "sent"), ("pause", 1, "waiting")]
        enrollment.refresh_from_db()
        assert (enrollment.current_node, enrollment.next_run_at) == ("pause", T0 + 2 * DAY)


def test_two_sends_without_a_wait_between_go_in_two_calls(
    live, make_template, make_customers, batches, steps_of
):
    make_template("second", html=f"<p>Again</p>{EMAIL_FOOTER_HTML}", text=EMAIL_FOOTER_TEXT)
    journey = live(
        [
            {"id": "first", "type": "email", "template": "welcome", "next": "second"},
            {"id": "second", "type": "email", "template": "second", "next": "done"},
            {"id": "done", "type": "exit"},
        ]
    )
    enrollments = enroll_all(journey, make_customers(3))

    enrollments_advance([e.pk for e in enrollments], now=T0)

    assert [[r.node_id for r in batch] for batch in batches] == [["first"] * 3, ["second"] * 3]
    for enrollment in enrollments:
        assert steps_of(enrollment) == [
            ("first", 1, "sent"),
            ("second", 1, "sent"),
            ("done", 1, "completed"),
        ]
        # The steps' ids follow the visits, as the timeline shows them.
        ids = EnrollmentStep.objects.filter(enrollment=enrollment).order_by("pk")
        assert list(ids.values_list("node_id", flat=True)) == ["first", "second", "done"]
    assert Message.objects.filter(status=Message.Status.QUEUED).count() == 6


def test_a_template_that_does_not_render_fails_only_its_enrollment_in_the_batch(
    live, make_template, make_customers, batches, steps_of
):
    # Marketing email without the unsubscribe link: the renderer refuses it.
    make_template("broken", html="<p>No footer</p>", text="No footer")
    fine = live([{"id": "hello", "type": "email", "template": "welcome"}], slug="fine")
    broken = live([{"id": "hello", "type": "email", "template": "broken"}], slug="broken")
    customers = make_customers(3)
    enroll_all(fine, customers[:1])
    enroll_all(broken, customers[1:2])
    enroll_all(fine, customers[2:])
    enrollments = list(Enrollment.objects.order_by("pk"))

    result = enrollments_advance([e.pk for e in enrollments], now=T0)

    assert (result.advanced, result.failed) == (3, 0)
    assert len(batches) == 1 and len(batches[0]) == 3  # no exception: no second attempt
    states = {e.pk: e.state for e in Enrollment.objects.all()}
    assert [states[e.pk] for e in enrollments] == ["completed", "failed", "completed"]
    assert steps_of(enrollments[1]) == [("hello", 1, "failed")]
    assert Message.objects.get(enrollment_id=enrollments[1].pk).status == Message.Status.FAILED


def test_a_chunk_that_raises_is_done_again_each_send_on_its_own(
    live, make_customers, batches, monkeypatch
):
    journey = live([{"id": "hello", "type": "email", "template": "welcome"}])
    enrollments = enroll_all(journey, make_customers(3))
    recording = services.message_send_many
    refused = []

    def refusing_batches(requests, *, now):
        if len(requests) > 1:
            refused.append(len(requests))
            raise RuntimeError("the batch went wrong")
        return recording(requests, now=now)

    monkeypatch.setattr(services, "message_send_many", refusing_batches)

    result = enrollments_advance([e.pk for e in enrollments], now=T0)

    assert (result.advanced, result.failed) == (3, 0)
    assert refused == [3]
    assert [len(batch) for batch in batches] == [1, 1, 1]
    assert Message.objects.count() == 3
    assert set(Enrollment.objects.values_list("state", flat=True)) == {"completed"}


def test_resuming_waits_reads_the_same_queries_for_two_enrollments_or_twenty(live, make_customers):
    journey = live(
        [
            {"id": "pause", "type": "wait", "duration": {"days": 1}, "next": "done"},
            {"id": "done", "type": "exit"},
        ]
    )
    few = enroll_all(journey, make_customers(2, "few"))
    enrollments_advance([e.pk for e in few], now=T0)
    many = [e for e in enroll_all(journey, make_customers(20, "many")) if e not in few]
    enrollments_advance([e.pk for e in many], now=T0)

    counted = []
    for group in (few, many):
        with CaptureQueriesContext(connection) as queries:
            result = enrollments_advance([e.pk for e in group], now=T0 + DAY)
        assert result.advanced == len(group)
        counted.append(len(queries))

    assert counted[0] == counted[1]
    assert set(Enrollment.objects.values_list("state", flat=True)) == {"completed"}
    waited = EnrollmentStep.objects.filter(node_id="pause")
    assert set(waited.values_list("outcome", flat=True)) == {"waited"}
    assert waited.count() == 22  # the open steps were finished, not written again


@pytest.fixture
def with_goal(make_journey, journey_file, sendable):
    """A live journey: wait a day, then exit; goal: `activated` since enrolling."""
    nodes = [
        {"id": "pause", "type": "wait", "duration": {"days": 1}, "next": "done"},
        {"id": "done", "type": "exit"},
    ]
    return make_journey(
        journey_file(
            slug="goal",
            start="pause",
            nodes=nodes,
            goal={"event": "activated", "op": "since_enrolled"},
        )
    )


def test_goals_are_checked_for_the_chunk_at_once_each_since_its_own_enrollment(
    with_goal, make_customers, track, steps_of
):
    early, late, idle = make_customers(3)
    for customer, at in ((early, T0), (late, T0 + DAY), (idle, T0)):
        enrollments_start(journey=with_goal, customer_ids=[customer.pk], now=at)
    track(early.external_id, "activated", at=T0 + DAY / 2)  # after early's start, before late's
    track(late.external_id, "activated", at=T0 + DAY / 2)
    enrollments = {e.customer_id: e for e in Enrollment.objects.all()}
    Enrollment.objects.update(next_run_at=T0 + 2 * DAY)

    result = enrollments_advance([e.pk for e in enrollments.values()], now=T0 + 2 * DAY)

    assert result.advanced == 3
    states = dict(Enrollment.objects.values_list("customer_id", "state"))
    assert states == {early.pk: "converted", late.pk: "active", idle.pk: "active"}
    assert steps_of(enrollments[early.pk]) == [("(goal)", 1, "converted")]
    assert steps_of(enrollments[late.pk]) == [("pause", 1, "waiting")]


def test_checking_goals_reads_the_same_queries_for_two_enrollments_or_twenty(
    with_goal, make_customers
):
    counted = []
    for n, prefix in ((2, "few"), (20, "many")):
        customers = make_customers(n, prefix)
        enrollments_start(journey=with_goal, customer_ids=[c.pk for c in customers], now=T0)
        due = Enrollment.objects.filter(customer__in=customers).values_list("pk", flat=True)
        with CaptureQueriesContext(connection) as queries:
            assert enrollments_advance(list(due), now=T0).advanced == n
        counted.append(len(queries))

    assert counted[0] == counted[1]


def test_a_branch_tests_the_chunks_customers_at_once_and_each_takes_its_edge(
    live, make_customers, track, steps_of
):
    journey = live(
        [
            {"id": "pause", "type": "wait", "duration": {"days": 1}, "next": "check"},
            {
                "id": "check",
                "type": "branch",
                "condition": {"event": "activated", "op": "since_enrolled"},
                "yes": "done",
                "no": "bye",
            },
            {"id": "done", "type": "exit"},
            {"id": "bye", "type": "exit"},
        ]
    )
    counted = []
    for n, prefix in ((2, "few"), (20, "many")):
        customers = make_customers(n, prefix)
        enrollments_start(journey=journey, customer_ids=[c.pk for c in customers], now=T0)
        for customer in customers[::2]:
            track(customer.external_id, "activated", at=T0 + DAY / 2)
        due = list(Enrollment.objects.filter(customer__in=customers).order_by("pk"))
        enrollments_advance([e.pk for e in due], now=T0)
        with CaptureQueriesContext(connection) as queries:
            assert enrollments_advance([e.pk for e in due], now=T0 + DAY).advanced == n
        counted.append(len(queries))
        for enrollment in due:
            activated = enrollment.customer_id in {c.pk for c in customers[::2]}
            assert steps_of(enrollment) == [
                ("pause", 1, "waited"),
                ("check", 1, "yes" if activated else "no"),
                ("done" if activated else "bye", 1, "completed"),
            ]
        no = EnrollmentStep.objects.filter(enrollment__in=due, node_id="check", outcome="no")
        assert no.first().detail == "branch no because not: activated since enrolling"

    assert counted[0] == counted[1]


def test_a_chunks_bulk_writes_keep_every_value_as_gathered(live, make_customers):
    """Steps and enrollments are written by COPY on PostgreSQL: quotes, tabs,
    line breaks, braces, commas, backslashes, COPY's own null marker,
    non-ASCII text and nulls come back as they were, and the steps' ids
    follow the order they were gathered in."""
    journey = live([{"id": "done", "type": "exit"}])
    enrollments = enroll_all(journey, make_customers(2, "w"))
    awkward = 'a "quoted", {braced} \\ back\\slash, NULL, \\N, tab\there\r\nnext line, é ✓'
    steps = [
        EnrollmentStep(
            enrollment_id=enrollments[n % 2].pk,
            node_id=f"node {n}",
            visit=n + 1,
            started_at=T0 + timedelta(minutes=n),
            finished_at=None if n else T0,
            outcome="sent",
            detail=awkward if n else "",
        )
        for n in range(3)
    ]
    rows_insert(
        EnrollmentStep,
        steps,
        [
            "enrollment",
            "node_id",
            "visit",
            "started_at",
            "finished_at",
            "outcome",
            "detail",
            "message",
        ],
    )
    for n, enrollment in enumerate(enrollments):
        enrollment.context = {"note": awkward, "n": n, "none": None, "list": [1, "{x}"]}
        enrollment.exit_reason = awkward
        enrollment.next_run_at = None if n else T0 + DAY
    rows_update(Enrollment, enrollments, ["context", "exit_reason", "next_run_at"])

    written = list(EnrollmentStep.objects.order_by("pk"))
    assert [s.node_id for s in written] == ["node 0", "node 1", "node 2"]
    assert [s.visit for s in written] == [1, 2, 3]
    assert [s.detail for s in written] == ["", awkward, awkward]
    assert [s.finished_at for s in written] == [T0, None, None]
    assert written[2].started_at == T0 + timedelta(minutes=2)
    assert written[1].enrollment_id == enrollments[1].pk
    stored = list(Enrollment.objects.order_by("pk"))
    assert [e.context for e in stored] == [e.context for e in enrollments]
    assert {e.exit_reason for e in stored} == {awkward}
    assert [e.next_run_at for e in stored] == [T0 + DAY, None]
