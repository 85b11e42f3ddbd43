"""The engine: a tick claims what is due, a worker advances it node by node,
every visit leaves a step with its outcome and reason."""

from datetime import timedelta

import pytest

from apps.journeys.engine import engine_tick, enrollments_advance
from apps.journeys.enrollment import enrollment_start
from apps.journeys.models import Enrollment, EnrollmentStep, JourneyVersion
from apps.journeys.services import journey_pause, journey_resume
from apps.messaging.models import Message, Template

from .conftest import EMAIL_FOOTER_HTML, EMAIL_FOOTER_TEXT, T0

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


@pytest.fixture
def journey(make_journey, sendable):
    return make_journey()


def enroll(journey, customer, *, at=T0) -> Enrollment:
    enrollment = enrollment_start(journey=journey, customer_id=customer.pk, now=at)
    assert enrollment is not None
    return enrollment


def test_a_new_enrollment_sends_the_welcome_email_then_waits(journey, customer, steps_of):
    enrollment = enroll(journey, customer)

    result = enrollments_advance([enrollment.pk], now=T0)

    enrollment.refresh_from_db()
    assert (result.advanced, result.steps, result.failed) == (1, 2, 0)
    assert steps_of(enrollment) == [("welcome", 1, "sent"), ("wait1", 1, "waiting")]
    assert (enrollment.state, enrollment.current_node) == ("active", "wait1")
    assert enrollment.next_run_at == T0 + 2 * DAY
    message = Message.objects.get()
    assert message.idempotency_key == f"enr:{enrollment.pk}:welcome:1"
    assert (message.status, message.journey, message.node_id) == ("queued", "onboarding", "welcome")
    assert message.enrollment_id == enrollment.pk
    step = EnrollmentStep.objects.get(node_id="welcome")
    assert step.message == message
    assert step.detail == f"sent: email 'welcome' (message #{message.pk})"
    wait = EnrollmentStep.objects.get(node_id="wait1")
    assert wait.finished_at is None
    assert wait.detail == "waiting 2 days, until 2026-03-04 09:00 UTC"


def test_an_enrollment_that_is_not_due_is_left_alone(journey, customer, steps_of):
    enrollment = enroll(journey, customer)
    enrollments_advance([enrollment.pk], now=T0)

    result = enrollments_advance([enrollment.pk], now=T0 + DAY)

    assert (result.advanced, result.skipped) == (0, 1)
    assert steps_of(enrollment) == [("welcome", 1, "sent"), ("wait1", 1, "waiting")]


def test_after_the_wait_the_branch_and_the_sms_run_and_the_enrollment_completes(
    journey, customer, steps_of, sms_consent
):
    sms_consent(customer)
    enrollment = enroll(journey, customer)
    enrollments_advance([enrollment.pk], now=T0)

    enrollments_advance([enrollment.pk], now=T0 + 2 * DAY)

    enrollment.refresh_from_db()
    assert steps_of(enrollment) == [
        ("welcome", 1, "sent"),
        ("wait1", 1, "waited"),
        ("check", 1, "no"),
        ("nudge", 1, "sent"),
        ("done", 1, "completed"),
    ]
    assert (enrollment.state, enrollment.current_node) == ("completed", "done")
    assert enrollment.finished_at == T0 + 2 * DAY
    assert enrollment.next_run_at is None
    assert EnrollmentStep.objects.get(node_id="check").detail == (
        "branch no because not: activated since enrolling"
    )
    assert list(Message.objects.order_by("pk").values_list("channel", "status")) == [
        ("email", "queued"),
        ("sms", "queued"),
    ]


def test_a_refused_send_records_the_policys_reason_and_the_journey_goes_on(
    journey, customer, steps_of
):
    enrollment = enroll(journey, customer)
    enrollments_advance([enrollment.pk], now=T0)

    enrollments_advance([enrollment.pk], now=T0 + 2 * DAY)

    nudge = EnrollmentStep.objects.get(node_id="nudge")
    assert (nudge.outcome, nudge.detail) == ("suppressed", "no consent: sms")
    assert nudge.message.status == Message.Status.SUPPRESSED
    enrollment.refresh_from_db()
    assert enrollment.state == Enrollment.State.COMPLETED


def test_meeting_the_goal_converts_the_enrollment_at_its_next_advance(
    journey, customer, steps_of, track
):
    enrollment = enroll(journey, customer)
    enrollments_advance([enrollment.pk], now=T0)
    track(customer.external_id, "activated", at=T0 + DAY)

    enrollments_advance([enrollment.pk], now=T0 + 2 * DAY)

    enrollment.refresh_from_db()
    assert enrollment.state == Enrollment.State.CONVERTED
    assert enrollment.exit_reason == "goal met: activated since enrolling"
    assert steps_of(enrollment)[-1] == ("(goal)", 1, "converted")
    assert Message.objects.count() == 1  # no nudge


def test_an_event_before_the_enrollment_does_not_meet_a_since_enrolled_goal(
    journey, customer, steps_of, track
):
    track(customer.external_id, "activated", at=T0 - DAY)
    enrollment = enroll(journey, customer)

    enrollments_advance([enrollment.pk], now=T0)

    enrollment.refresh_from_db()
    assert enrollment.state == Enrollment.State.ACTIVE


def test_a_render_error_fails_the_enrollment_and_keeps_the_failed_message(
    make_journey, template, customer, steps_of
):
    journey = make_journey()  # the plain templates lack the marketing footer
    enrollment = enroll(journey, customer)

    result = enrollments_advance([enrollment.pk], now=T0)

    enrollment.refresh_from_db()
    assert (result.advanced, result.failed) == (1, 0)
    assert enrollment.state == Enrollment.State.FAILED
    message = Message.objects.get()
    assert message.status == Message.Status.FAILED
    step = EnrollmentStep.objects.get()
    assert (step.node_id, step.outcome, step.message) == ("welcome", "failed", message)
    assert "must contain the unsubscribe link" in step.detail
    assert enrollment.exit_reason == step.detail[:300]


def test_a_failing_node_fails_only_its_enrollment_and_the_chunk_goes_on(
    make_journey, journey_file, make_template, sendable, customer, make_customers, steps_of
):
    make_template("hello", html=f"<p>Hello</p>{EMAIL_FOOTER_HTML}", text=EMAIL_FOOTER_TEXT)
    nodes = [{"id": "hello", "type": "email", "template": "hello"}]
    first = make_journey()
    second = make_journey(journey_file(slug="second", name="Second", start="hello", nodes=nodes))
    others = make_customers(2)
    # In id order: one before the broken one, one after.
    fine = [enroll(second, others[0])]
    broken = enroll(first, customer)
    fine.append(enroll(second, others[1]))
    Template.objects.filter(slug="welcome").delete()  # gone after publishing

    result = enrollments_advance([broken.pk, *(e.pk for e in fine)], now=T0)

    assert (result.advanced, result.failed) == (2, 1)
    broken.refresh_from_db()
    assert broken.state == Enrollment.State.FAILED
    assert broken.exit_reason == "UnknownTemplate: template 'welcome' does not exist"
    assert steps_of(broken) == [("welcome", 1, "failed")]
    assert not Message.objects.filter(enrollment_id=broken.pk).exists()
    for enrollment in fine:
        enrollment.refresh_from_db()
        assert steps_of(enrollment) == [("hello", 1, "sent")]
        assert enrollment.state == Enrollment.State.COMPLETED


def test_a_version_whose_stored_graph_no_longer_parses_fails_its_enrollments(journey, customer):
    enrollment = enroll(journey, customer)
    JourneyVersion.objects.filter(pk=journey.live_version_id).update(
        definition={"slug": "onboarding", "nodes": "garbage"}
    )

    result = enrollments_advance([enrollment.pk], now=T0)

    enrollment.refresh_from_db()
    assert result.failed == 1
    assert enrollment.state == Enrollment.State.FAILED
    assert enrollment.exit_reason.startswith("JourneyError: ")
    assert "nodes: must be a list of nodes" in enrollment.exit_reason


def test_holdout_enrollments_send_nothing_but_travel_the_graph(
    make_journey, journey_file, sendable, customer, steps_of
):
    journey = make_journey(journey_file(holdout_percent=100))
    enrollment = enroll(journey, customer)
    assert enrollment.is_holdout

    enrollments_advance([enrollment.pk], now=T0)
    enrollments_advance([enrollment.pk], now=T0 + 2 * DAY)

    assert steps_of(enrollment) == [
        ("welcome", 1, "holdout"),
        ("wait1", 1, "waited"),
        ("check", 1, "no"),
        ("nudge", 1, "holdout"),
        ("done", 1, "completed"),
    ]
    assert EnrollmentStep.objects.get(node_id="welcome").detail == "holdout: not sent"
    assert not Message.objects.exists()


def test_an_enrollment_moved_to_a_new_version_before_starting_begins_at_its_start(
    journey, customer, steps_of
):
    enrollment = enroll(journey, customer)
    Enrollment.objects.filter(pk=enrollment.pk).update(current_node="")

    enrollments_advance([enrollment.pk], now=T0)

    assert steps_of(enrollment)[0] == ("welcome", 1, "sent")


# --- the tick ----------------------------------------------------------------------------


def test_the_tick_claims_due_enrollments_and_publishes_them_in_chunks(
    journey, make_customers, settings, django_capture_on_commit_callbacks
):
    settings.ENGINE_CHUNK_SIZE = 2
    due = [enroll(journey, c) for c in make_customers(5)]
    later = enroll(journey, make_customers(1, prefix="later")[0], at=T0 + DAY)
    published: list[list[int]] = []

    with django_capture_on_commit_callbacks(execute=True):
        result = engine_tick(now=T0, publish=published.append)

    assert (result.claimed, result.tasks) == (5, 3)
    assert sorted(i for chunk in published for i in chunk) == sorted(e.pk for e in due)
    assert [len(chunk) for chunk in published] == [2, 2, 1]
    claimed = Enrollment.objects.filter(pk__in=[e.pk for e in due])
    assert {e.lease_until for e in claimed} == {T0 + timedelta(seconds=settings.ENGINE_LEASE_S)}
    assert len({e.lease_token for e in claimed}) == 1
    assert Enrollment.objects.get(pk=later.pk).lease_until is None


def test_the_tick_claims_in_batches_up_to_its_limit(journey, make_customers, settings):
    settings.ENGINE_CLAIM_BATCH = 2
    settings.ENGINE_MAX_PER_TICK = 5
    for c in make_customers(7):
        enroll(journey, c)

    first = engine_tick(now=T0, publish=lambda ids: None)
    second = engine_tick(now=T0, publish=lambda ids: None)

    assert (first.claimed, second.claimed) == (5, 2)


def test_the_tick_stops_claiming_while_enough_claims_wait_for_workers(
    journey, make_customers, settings
):
    settings.ENGINE_MAX_CLAIMED = 4
    for c in make_customers(10):
        enroll(journey, c)

    first = engine_tick(now=T0, publish=lambda ids: None)
    held = engine_tick(now=T0, publish=lambda ids: None)
    claimed = Enrollment.objects.filter(lease_until__isnull=False).order_by("pk")
    enrollments_advance(list(claimed.values_list("pk", flat=True)[:3]), now=T0)
    after = engine_tick(now=T0, publish=lambda ids: None)

    assert (first.claimed, first.outstanding) == (4, 0)
    assert (held.claimed, held.outstanding) == (0, 4)
    assert (after.claimed, after.outstanding) == (3, 1)


def test_a_claim_nobody_processed_is_claimed_again_when_its_lease_expires(
    journey, customer, settings
):
    enroll(journey, customer)
    engine_tick(now=T0, publish=lambda ids: None)

    before = engine_tick(now=T0 + timedelta(seconds=settings.ENGINE_LEASE_S - 1), publish=print)
    after = engine_tick(now=T0 + timedelta(seconds=settings.ENGINE_LEASE_S), publish=print)

    assert (before.claimed, after.claimed) == (0, 1)


def test_a_claim_takes_expired_leases_first_then_unclaimed_ones_never_live_ones(
    journey, make_customers, settings, django_capture_on_commit_callbacks
):
    """Held rows are due first, yet a claim passes them by (each kind is read
    from its own partial index); a lost claim is taken again before fresh work."""
    live, early, expired, latest = (
        enroll(journey, c, at=T0 + timedelta(seconds=n)) for n, c in enumerate(make_customers(4))
    )
    lease = timedelta(seconds=settings.ENGINE_LEASE_S)
    Enrollment.objects.filter(pk=live.pk).update(lease_until=T0 + 2 * lease, lease_token="a")
    Enrollment.objects.filter(pk=expired.pk).update(lease_until=T0 + lease, lease_token="b")
    now = T0 + lease
    settings.ENGINE_CLAIM_BATCH = 1
    settings.ENGINE_MAX_PER_TICK = 2
    published: list[list[int]] = []

    with django_capture_on_commit_callbacks(execute=True):
        first = engine_tick(now=now, publish=published.append)
        second = engine_tick(now=now, publish=published.append)

    assert (first.claimed, second.claimed) == (2, 1)
    assert published == [[expired.pk], [early.pk], [latest.pk]]
    assert Enrollment.objects.get(pk=live.pk).lease_token == "a"


def test_advancing_releases_the_claim(journey, customer):
    enrollment = enroll(journey, customer)
    engine_tick(now=T0, publish=lambda ids: None)

    enrollments_advance([enrollment.pk], now=T0)

    enrollment.refresh_from_db()
    assert (enrollment.lease_until, enrollment.lease_token) == (None, "")


def test_the_tick_publishes_only_after_its_claim_commits(
    journey, customer, django_capture_on_commit_callbacks
):
    enroll(journey, customer)
    published: list[list[int]] = []

    with django_capture_on_commit_callbacks() as callbacks:
        engine_tick(now=T0, publish=published.append)
        assert published == []
    for callback in callbacks:
        callback()

    assert len(published) == 1


# --- pause and resume ------------------------------------------------------------------------


def test_a_paused_journey_is_skipped_by_the_tick_and_catches_up_after_resume(
    journey, customer, steps_of, django_capture_on_commit_callbacks
):
    enrollment = enroll(journey, customer)
    enrollments_advance([enrollment.pk], now=T0)
    journey_pause(journey, now=T0 + DAY)

    paused = engine_tick(now=T0 + 3 * DAY, publish=lambda ids: None)
    journey_resume(journey, now=T0 + 3 * DAY)
    published: list[list[int]] = []
    with django_capture_on_commit_callbacks(execute=True):
        resumed = engine_tick(now=T0 + 3 * DAY, publish=published.append)
    enrollments_advance(published[0], now=T0 + 3 * DAY)

    assert (paused.claimed, resumed.claimed) == (0, 1)
    assert steps_of(enrollment)[:3] == [
        ("welcome", 1, "sent"),
        ("wait1", 1, "waited"),
        ("check", 1, "no"),
    ]


def test_a_worker_skips_and_releases_an_enrollment_whose_journey_was_paused_after_the_claim(
    journey, customer, steps_of
):
    enrollment = enroll(journey, customer)
    engine_tick(now=T0, publish=lambda ids: None)
    journey_pause(journey, now=T0)

    result = enrollments_advance([enrollment.pk], now=T0)

    enrollment.refresh_from_db()
    assert result.skipped == 1
    assert steps_of(enrollment) == []
    assert enrollment.lease_until is None


def test_after_a_long_pause_a_send_that_is_too_late_is_skipped_and_recorded(
    journey, customer, steps_of, settings
):
    settings.JOURNEY_RESUME_STALENESS = timedelta(hours=24)
    enrollment = enroll(journey, customer)
    enrollments_advance([enrollment.pk], now=T0)
    journey_pause(journey, now=T0 + DAY)
    journey_resume(journey, now=T0 + 5 * DAY)

    enrollments_advance([enrollment.pk], now=T0 + 5 * DAY)

    nudge = EnrollmentStep.objects.get(node_id="nudge")
    assert nudge.outcome == "skipped"
    assert nudge.detail == (
        "skipped: stale, due 2026-03-04 09:00 UTC, 3 days late "
        "(the journey was paused or the engine stopped)"
    )
    assert Message.objects.count() == 1
    assert steps_of(enrollment)[-1] == ("done", 1, "completed")


def test_a_send_within_the_staleness_still_goes_after_resume(
    journey, customer, steps_of, settings, sms_consent
):
    settings.JOURNEY_RESUME_STALENESS = timedelta(hours=24)
    sms_consent(customer)
    enrollment = enroll(journey, customer)
    enrollments_advance([enrollment.pk], now=T0)
    journey_pause(journey, now=T0 + DAY)
    journey_resume(journey, now=T0 + 2 * DAY + timedelta(hours=6))

    enrollments_advance([enrollment.pk], now=T0 + 2 * DAY + timedelta(hours=6))

    assert EnrollmentStep.objects.get(node_id="nudge").outcome == "sent"


def test_beat_runs_the_tick_and_the_trigger_checks_as_registered_tasks(settings):
    from config.celery import app, system_schedule

    schedule = system_schedule()
    app.loader.import_default_modules()  # what a worker does: autodiscover the tasks

    assert schedule["engine-tick"]["schedule"] == settings.ENGINE_TICK_INTERVAL_S
    assert schedule["journey-triggers"]["task"] == "apps.journeys.tasks.check_triggers"
    for name in ("engine-tick", "journey-triggers"):
        assert schedule[name]["task"] in app.tasks
    assert "apps.journeys.tasks.advance_enrollments" in app.tasks
