"""Triggers (segments, events, date traits, schedules), re-entry, the one
active enrollment, and the holdout."""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from apps.customers.models import Customer
from apps.journeys.engine import enrollments_advance
from apps.journeys.enrollment import enrollment_start, enrollments_start, in_holdout
from apps.journeys.models import Enrollment, EnrollmentStep, TriggerFire
from apps.journeys.services import journey_pause
from apps.journeys.triggers import (
    NEVER_AFTER,
    NEVER_BEFORE,
    date_triggers_check,
    events_received,
    fire_moment,
    latest_slot,
    schedule_triggers_check,
    segment_members_changed,
    trait_date,
)
from apps.segments.services import segment_refresh, segment_static_upload

from .conftest import T0

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)
EXIT = [{"id": "done", "type": "exit"}]


@pytest.fixture
def live(make_journey, journey_file):
    """live(trigger, **top) -> a published journey of one exit node."""

    def make(trigger: dict, **top):
        top.setdefault("goal", None)
        top.setdefault("reentry", "never")
        top.setdefault("start", "done")
        top.setdefault("nodes", EXIT)
        at = top.pop("at", T0 - DAY)
        return make_journey(journey_file(trigger=trigger, **top), at=at)

    return make


def enrolled(journey) -> list[str]:
    return sorted(
        Enrollment.objects.filter(journey=journey).values_list("customer__external_id", flat=True)
    )


def finish_all(at: datetime) -> None:
    enrollments_advance(list(Enrollment.objects.values_list("pk", flat=True)), now=at)


# --- segments ------------------------------------------------------------------------------


def test_customers_entering_a_segment_are_enrolled_by_the_refresh(
    live, segment, make_customers, django_capture_on_commit_callbacks
):
    journey = live({"type": "segment_entered", "segment": "trialing"})
    make_customers(3, prefix="trial", traits={"status": "trial"})
    make_customers(2, prefix="paid", traits={"status": "active"})

    with django_capture_on_commit_callbacks(execute=True):
        segment_refresh(segment, now=T0)

    assert enrolled(journey) == ["trial-0", "trial-1", "trial-2"]
    enrollment = Enrollment.objects.filter(journey=journey).first()
    assert enrollment.context == {"trigger": {"type": "segment_entered", "segment": "trialing"}}
    assert (enrollment.state, enrollment.current_node) == ("active", "done")
    assert (enrollment.entered_at, enrollment.next_run_at) == (T0, T0)


def test_enrolling_from_a_segment_is_one_pass_however_many_entered(
    live, segment, make_customers, django_assert_max_num_queries
):
    live({"type": "segment_entered", "segment": "trialing"})
    few = [c.pk for c in make_customers(3, prefix="few")]
    many = [c.pk for c in make_customers(300, prefix="many")]

    with django_assert_max_num_queries(6) as few_queries:
        segment_members_changed(segment=segment, entered_ids=few, exited_ids=[], now=T0)
    with django_assert_max_num_queries(6) as many_queries:
        segment_members_changed(segment=segment, entered_ids=many, exited_ids=[], now=T0)

    assert len(many_queries.captured_queries) == len(few_queries.captured_queries)
    assert Enrollment.objects.count() == 303


def test_customers_leaving_a_segment_enroll_in_segment_exited_journeys(
    live, segment, make_customers, django_capture_on_commit_callbacks
):
    entered = live({"type": "segment_entered", "segment": "trialing"})
    exited = live({"type": "segment_exited", "segment": "trialing"}, slug="winback")
    (customer,) = make_customers(1, traits={"status": "trial"})
    with django_capture_on_commit_callbacks(execute=True):
        segment_refresh(segment, now=T0)
    Customer.objects.filter(pk=customer.pk).update(traits={"status": "active"})

    with django_capture_on_commit_callbacks(execute=True):
        segment_refresh(segment, now=T0 + DAY)

    assert enrolled(entered) == enrolled(exited) == ["c-0"]


def test_only_live_journeys_enroll(live, segment, make_customers, make_journey, journey_file):
    paused = live({"type": "segment_entered", "segment": "trialing"})
    journey_pause(paused, now=T0)
    draft = make_journey(
        journey_file(
            slug="draft",
            trigger={"type": "segment_entered", "segment": "trialing"},
            start="done",
            nodes=EXIT,
        ),
        publish=False,
    )
    ids = [c.pk for c in make_customers(2)]

    segment_members_changed(segment=segment, entered_ids=ids, exited_ids=[], now=T0)

    assert enrolled(paused) == enrolled(draft) == []


def test_leaving_the_segment_exits_journeys_that_say_so(
    make_journey, journey_file, sendable, segment, make_customers
):
    wait = [{"id": "later", "type": "wait", "duration": {"days": 3}}]
    trigger = {"type": "segment_entered", "segment": "trialing"}
    exits = make_journey(
        journey_file(trigger=trigger, start="later", nodes=wait, exit_on_segment_exit=True),
        at=T0 - DAY,
    )
    stays = make_journey(
        journey_file(slug="stays", trigger=trigger, start="later", nodes=wait), at=T0 - DAY
    )
    ids = [c.pk for c in make_customers(2)]
    segment_members_changed(segment=segment, entered_ids=ids, exited_ids=[], now=T0)
    finish_all(T0)

    segment_members_changed(segment=segment, entered_ids=[], exited_ids=ids[:1], now=T0 + DAY)

    left = Enrollment.objects.get(journey=exits, customer_id=ids[0])
    assert (left.state, left.exit_reason, left.finished_at) == (
        "exited",
        "left the segment 'trialing'",
        T0 + DAY,
    )
    step = EnrollmentStep.objects.get(enrollment=left, node_id="(segment exit)")
    assert (step.outcome, step.detail) == ("exited", "left the segment 'trialing'")
    assert Enrollment.objects.get(journey=exits, customer_id=ids[1]).state == "active"
    assert set(Enrollment.objects.filter(journey=stays).values_list("state", flat=True)) == {
        "active"
    }


def test_a_static_upload_enrolls_like_a_refresh(
    live, make_segment_static, make_customers, django_capture_on_commit_callbacks
):
    journey = live({"type": "segment_entered", "segment": "vip"})
    make_customers(2)

    with django_capture_on_commit_callbacks(execute=True):
        segment_static_upload(make_segment_static, ["c-0", "c-1"], mode="replace", now=T0)

    assert enrolled(journey) == ["c-0", "c-1"]


@pytest.fixture
def make_segment_static(db):
    from apps.segments.models import Segment

    return Segment.objects.create(slug="vip", name="VIP", kind=Segment.Kind.STATIC)


# --- events --------------------------------------------------------------------------------


def test_matching_events_enroll_with_the_event_in_the_context(live, make_customers, track):
    journey = live({"type": "event", "event": "signed_up", "where": {"plan": "pro"}})
    make_customers(3)
    pro = track("c-0", "signed_up", at=T0, plan="pro")
    starter = track("c-1", "signed_up", at=T0, plan="starter")
    other = track("c-2", "logged_in", at=T0, plan="pro")

    result = events_received(event_ids=[pro.pk, starter.pk, other.pk], now=T0)

    assert result.enrolled == 1
    assert enrolled(journey) == ["c-0"]
    assert Enrollment.objects.get().context == {
        "trigger": {"type": "event", "event": "signed_up"},
        "event": {
            "id": pro.pk,
            "name": "signed_up",
            "properties": {"plan": "pro"},
            "occurred_at": T0.isoformat(),
        },
    }


def test_where_compares_json_types(live, customer, track):
    live({"type": "event", "event": "paid", "where": {"annual": True}})
    one = track(customer.external_id, "paid", at=T0, annual=1)
    text = track(customer.external_id, "paid", at=T0, annual="true")

    events_received(event_ids=[one.pk, text.pk], now=T0)

    assert not Enrollment.objects.exists()


def test_an_active_customer_is_not_enrolled_again_by_another_event(live, customer, track):
    journey = live(
        {"type": "event", "event": "signed_up"},
        reentry="always",
        nodes=[{"id": "done", "type": "wait", "duration": {"days": 1}}],
    )
    first = track(customer.external_id, "signed_up", at=T0)
    second = track(customer.external_id, "signed_up", at=T0 + timedelta(minutes=1))

    events_received(event_ids=[first.pk, second.pk], now=T0)
    events_received(event_ids=[second.pk], now=T0 + timedelta(minutes=1))

    assert Enrollment.objects.filter(journey=journey).count() == 1
    assert Enrollment.objects.get().context["event"]["id"] == first.pk


def test_an_arriving_event_converts_an_enrollment_whose_goal_it_meets(
    live, customer, track, steps_of
):
    live(
        {"type": "event", "event": "signed_up"},
        goal={"event": "activated", "op": "since_enrolled"},
        nodes=[{"id": "done", "type": "wait", "duration": {"days": 7}}],
    )
    events_received(event_ids=[track(customer.external_id, "signed_up", at=T0).pk], now=T0)
    finish_all(T0)
    activated = track(customer.external_id, "activated", at=T0 + DAY)

    result = events_received(event_ids=[activated.pk], now=T0 + DAY)

    enrollment = Enrollment.objects.get()
    assert result.converted == 1
    assert (enrollment.state, enrollment.finished_at) == ("converted", T0 + DAY)
    assert steps_of(enrollment)[-1] == ("(goal)", 1, "converted")


# --- date traits -----------------------------------------------------------------------------

RENEWAL = {"type": "date_trait", "trait": "renewal_at", "offset_days": -30, "at": "10:00"}


def renewing(make_customers, zone: str, renewal_at: str, prefix: str):
    (customer,) = make_customers(1, prefix=prefix, timezone=zone, traits={"renewal_at": renewal_at})
    return customer


def test_a_date_trait_fires_at_the_local_time_in_each_customers_zone(live, make_customers):
    journey = live(RENEWAL)
    renewing(make_customers, "Europe/London", "2026-04-10", "london")
    renewing(make_customers, "Asia/Tokyo", "2026-04-10", "tokyo")
    tokyo_ten = datetime(2026, 3, 11, 1, 0, tzinfo=UTC)  # 10:00 JST
    london_ten = datetime(2026, 3, 11, 10, 0, tzinfo=UTC)  # 10:00 GMT

    before = date_triggers_check(now=tokyo_ten - timedelta(minutes=1))
    tokyo = date_triggers_check(now=tokyo_ten)
    not_yet = date_triggers_check(now=london_ten - timedelta(minutes=1))
    london = date_triggers_check(now=london_ten)

    assert (before, tokyo, not_yet, london) == (0, 1, 0, 1)
    assert enrolled(journey) == ["london-0", "tokyo-0"]
    enrollment = Enrollment.objects.get(customer__external_id="tokyo-0")
    assert enrollment.context == {
        "trigger": {
            "type": "date_trait",
            "trait": "renewal_at",
            "date": "2026-04-10",
            "offset_days": -30,
        }
    }


def test_two_checks_of_the_same_moment_enroll_once(live, make_customers):
    journey = live(RENEWAL, reentry="always")
    customer = renewing(make_customers, "Europe/London", "2026-04-10", "c")
    moment = datetime(2026, 3, 11, 10, 0, tzinfo=UTC)

    first = date_triggers_check(now=moment)
    finish_all(moment)
    second = date_triggers_check(now=moment + timedelta(minutes=1))

    assert (first, second) == (1, 0)
    fire = TriggerFire.objects.get()
    assert (fire.journey, fire.customer, fire.key, fire.enrolled) == (
        journey,
        customer,
        f"{customer.pk}:2026-04-10:-30",
        1,
    )


def test_a_trait_that_moves_gets_the_fire_of_its_new_date(live, make_customers):
    journey = live(RENEWAL, reentry="always")
    customer = renewing(make_customers, "Europe/London", "2026-04-10", "c")
    date_triggers_check(now=datetime(2026, 3, 11, 10, 0, tzinfo=UTC))
    finish_all(datetime(2026, 3, 11, 10, 0, tzinfo=UTC))
    Customer.objects.filter(pk=customer.pk).update(traits={"renewal_at": "2026-04-20"})

    again = date_triggers_check(now=datetime(2026, 3, 21, 10, 0, tzinfo=UTC))

    assert again == 1
    assert Enrollment.objects.filter(journey=journey).count() == 2
    assert sorted(TriggerFire.objects.values_list("key", flat=True)) == [
        f"{customer.pk}:2026-04-10:-30",
        f"{customer.pk}:2026-04-20:-30",
    ]


def test_a_time_trait_counts_by_its_date_in_the_customers_zone(live, make_customers):
    live({**RENEWAL, "offset_days": -7})
    # 23:30 UTC on the 20th is already the 21st in Tokyo.
    renewing(make_customers, "Asia/Tokyo", "2026-03-20T23:30:00Z", "tokyo")

    assert date_triggers_check(now=datetime(2026, 3, 13, 1, 0, tzinfo=UTC)) == 0
    assert date_triggers_check(now=datetime(2026, 3, 14, 1, 0, tzinfo=UTC)) == 1


def test_a_date_past_what_python_holds_is_no_date_and_its_moment_never_comes():
    tokyo, honolulu = ZoneInfo("Asia/Tokyo"), ZoneInfo("Pacific/Honolulu")

    assert trait_date("9999-12-31T23:00:00Z", tokyo) is None
    assert trait_date("0001-01-01T01:00:00+05:00", honolulu) is None
    assert fire_moment(date(9999, 12, 31), 1, "10:00", tokyo) == NEVER_AFTER
    assert fire_moment(date(9999, 12, 31), 0, "23:00", honolulu) == NEVER_AFTER
    assert fire_moment(date(1, 1, 1), -1, "10:00", tokyo) == NEVER_BEFORE


def test_a_moment_older_than_the_lookback_or_the_journey_does_not_fire(
    live, make_customers, settings
):
    settings.JOURNEY_TRIGGER_LOOKBACK_S = 3600
    live(RENEWAL, at=datetime(2026, 3, 11, 9, 0, tzinfo=UTC))
    renewing(make_customers, "Europe/London", "2026-04-10", "late")  # due 11 March 10:00
    renewing(make_customers, "Europe/London", "2026-04-09", "before")  # due 10 March 10:00

    assert date_triggers_check(now=datetime(2026, 3, 11, 11, 1, tzinfo=UTC)) == 0
    assert not TriggerFire.objects.exists()


def test_a_customer_already_active_is_fired_but_not_enrolled_twice(live, make_customers):
    journey = live(
        RENEWAL,
        reentry="always",
        nodes=[{"id": "done", "type": "wait", "duration": {"days": 60}}],
    )
    customer = renewing(make_customers, "Europe/London", "2026-04-10", "c")
    enrollment_start(journey=journey, customer_id=customer.pk, now=T0)

    assert date_triggers_check(now=datetime(2026, 3, 11, 10, 0, tzinfo=UTC)) == 0
    assert TriggerFire.objects.get().enrolled == 0


# --- schedules -------------------------------------------------------------------------------

WEEKLY = {"type": "schedule", "cron": "0 9 * * 1", "segment": "trialing"}


def test_latest_slot_finds_the_cron_minute_in_utc():
    monday = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    assert latest_slot("0 9 * * 1", after=monday - DAY, until=monday + DAY) == monday
    assert latest_slot("0 9 * * 1", after=monday, until=monday + DAY) is None
    assert latest_slot("*/15 * * * *", after=monday, until=monday + timedelta(minutes=44)) == (
        monday + timedelta(minutes=30)
    )
    sunday = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    assert latest_slot("0 9 * * 0", after=sunday - DAY, until=monday) == sunday


def test_a_schedule_enrolls_the_segments_members_once_per_slot(
    live, segment, make_customers, django_capture_on_commit_callbacks
):
    journey = live(WEEKLY, reentry="always")
    make_customers(2, prefix="trial", traits={"status": "trial"})
    make_customers(1, prefix="paid", traits={"status": "active"})
    with django_capture_on_commit_callbacks(execute=True):
        segment_refresh(segment, now=T0 - timedelta(hours=1))

    early = schedule_triggers_check(now=T0 - timedelta(minutes=1))
    first = schedule_triggers_check(now=T0 + timedelta(seconds=30))
    again = schedule_triggers_check(now=T0 + timedelta(minutes=1))
    finish_all(T0 + timedelta(minutes=1))
    next_week = schedule_triggers_check(now=T0 + 7 * DAY)

    assert (early, first, again, next_week) == (0, 2, 0, 2)
    assert enrolled(journey) == ["trial-0", "trial-0", "trial-1", "trial-1"]
    assert list(TriggerFire.objects.order_by("key").values_list("key", "enrolled")) == [
        ("slot:2026-03-02T09:00Z", 2),
        ("slot:2026-03-09T09:00Z", 2),
    ]


def test_a_slot_missed_while_beat_was_down_runs_once_late(live, segment, make_customers):
    live(WEEKLY)
    ids = [c.pk for c in make_customers(1)]
    from apps.segments.models import SegmentMembership

    SegmentMembership.objects.create(segment=segment, customer_id=ids[0], entered_at=T0 - DAY)

    late = schedule_triggers_check(now=T0 + timedelta(hours=2))
    later = schedule_triggers_check(now=T0 + timedelta(hours=3))

    assert (late, later) == (1, 0)


# --- re-entry, one active, holdout ---------------------------------------------------------------


def test_reentry_never_refuses_a_customer_who_was_in_the_journey(live, customer):
    journey = live({"type": "event", "event": "x"}, reentry="never")
    assert enrollment_start(journey=journey, customer_id=customer.pk, now=T0)
    finish_all(T0)

    assert enrollment_start(journey=journey, customer_id=customer.pk, now=T0 + 90 * DAY) is None


def test_reentry_always_admits_again_once_the_last_enrollment_ended(live, customer):
    journey = live(
        {"type": "event", "event": "x"},
        reentry="always",
        nodes=[{"id": "done", "type": "wait", "duration": {"days": 1}}],
    )
    assert enrollment_start(journey=journey, customer_id=customer.pk, now=T0)
    while_active = enrollment_start(journey=journey, customer_id=customer.pk, now=T0)
    finish_all(T0)
    finish_all(T0 + DAY)

    again = enrollment_start(journey=journey, customer_id=customer.pk, now=T0 + DAY)

    assert while_active is None
    assert again is not None


def test_reentry_after_n_days_counts_from_the_last_entry(live, customer):
    journey = live({"type": "event", "event": "x"}, reentry={"policy": "after", "days": 30})
    enrollment_start(journey=journey, customer_id=customer.pk, now=T0)
    finish_all(T0)

    too_soon = enrollment_start(journey=journey, customer_id=customer.pk, now=T0 + 30 * DAY)
    later = enrollment_start(
        journey=journey, customer_id=customer.pk, now=T0 + 30 * DAY + timedelta(seconds=1)
    )

    assert too_soon is None
    assert later is not None


def test_bulk_enrollment_skips_the_already_active_and_unknown_customers(live, make_customers):
    journey = live({"type": "event", "event": "x"}, reentry="always")
    ids = [c.pk for c in make_customers(3)]

    first = enrollments_start(journey=journey, customer_ids=ids[:2] + ids[:2], now=T0)
    second = enrollments_start(journey=journey, customer_ids=[*ids, 987654321], now=T0)

    assert (first, second) == (2, 1)
    assert Enrollment.objects.filter(journey=journey, state="active").count() == 3


def test_a_journey_that_is_not_live_refuses_to_enroll(live, customer):
    journey = live({"type": "event", "event": "x"})
    journey_pause(journey, now=T0)

    with pytest.raises(ValueError, match="journey 'onboarding' is paused: only live journeys"):
        enrollment_start(journey=journey, customer_id=customer.pk, now=T0)


def test_the_holdout_is_stable_per_customer_and_about_its_share(live, make_customers):
    journey = live({"type": "event", "event": "x"}, holdout_percent=20, reentry="always")
    ids = [c.pk for c in make_customers(2000)]

    enrollments_start(journey=journey, customer_ids=ids, now=T0)
    first = dict(Enrollment.objects.values_list("customer_id", "is_holdout"))
    finish_all(T0)
    enrollments_start(journey=journey, customer_ids=ids, now=T0 + DAY)
    second = dict(
        Enrollment.objects.filter(entered_at=T0 + DAY).values_list("customer_id", "is_holdout")
    )

    assert first == second
    assert first == {i: in_holdout("onboarding", i, 20) for i in ids}
    assert 0.17 < sum(first.values()) / len(ids) < 0.23
