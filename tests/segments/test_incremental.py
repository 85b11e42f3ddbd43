"""Incremental refreshes: only the customers that may have changed are evaluated,
and the memberships still equal a recomputation from scratch."""

import io
import random
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import connection

from apps.customers.models import Customer
from apps.customers.schemas import IdentifyIn, TrackIn
from apps.customers.services import ingest
from apps.segments.conditions import segment_queryset
from apps.segments.models import Segment, SegmentMembership
from apps.segments.services import (
    refresh,
    segment_refresh,
    segment_static_upload,
    segments_refresh_all,
)

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
PRO = {"trait": "plan", "op": "eq", "value": "pro"}
DORMANT = {
    "all": [
        {"event": "login", "op": "count_gte", "value": 1},
        {"event": "login", "op": "not_since", "days": 14},
    ]
}
RENEWAL_DUE = {"trait": "renewal_at", "op": "within_next", "days": 30}


@pytest.fixture(autouse=True)
def no_periodic_full_refresh(settings):
    """Every refresh after the first is incremental unless a test says otherwise."""
    settings.SEGMENT_FULL_REFRESH_EVERY_S = 365 * 86400


def open_members(segment: Segment) -> list[int]:
    return sorted(
        SegmentMembership.objects.filter(segment=segment, exited_at=None).values_list(
            "customer_id", flat=True
        )
    )


def recomputed(segment: Segment, now: datetime) -> list[int]:
    """The members from scratch, as a full refresh would compute them."""
    return sorted(segment_queryset(segment.definition, now=now).values_list("pk", flat=True))


# --- the choice between full and incremental ----------------------------------------------


def test_the_first_refresh_is_full_and_the_next_ones_incremental(identify, make_segment):
    identify("u-a", at=T0, plan="pro")
    segment = make_segment("pro", PRO)

    first = segment_refresh(segment, now=T0)
    second = segment_refresh(segment, now=T0 + MINUTE)

    assert (first.mode, first.full_reason) == ("full", "first refresh")
    assert (second.mode, second.full_reason) == ("incremental", "")
    segment.refresh_from_db()
    assert segment.full_refreshed_at == T0 and segment.refreshed_at == T0 + MINUTE
    assert segment.refresh_watermark is not None and len(segment.refresh_digest) == 64


def test_a_changed_definition_makes_the_next_refresh_full(identify, make_segment):
    a = identify("u-a", at=T0, plan="pro")
    b = identify("u-b", at=T0, plan="team")
    segment = make_segment("paying", PRO)
    segment_refresh(segment, now=T0)

    Segment.objects.filter(pk=segment.pk).update(
        definition={"trait": "plan", "op": "in", "value": ["pro", "team"]}
    )
    result = segment_refresh(segment, now=T0 + MINUTE)

    assert result.full_reason == "the definition changed"
    assert (result.entered_ids, open_members(segment)) == ([b], [a, b])


def test_a_changed_nested_segment_makes_the_next_refresh_full(identify, make_segment):
    identify("u-a", at=T0, plan="pro")
    b = identify("u-b", at=T0, plan="team")
    inner = make_segment("paying", PRO)
    outer = make_segment("paying-too", {"segment": "paying"})
    segment_refresh(outer, now=T0)

    inner.definition = {"trait": "plan", "op": "eq", "value": "team"}
    inner.save()
    result = segment_refresh(outer, now=T0 + MINUTE)

    assert result.full_reason == "the definition changed"
    assert open_members(outer) == [b]


def test_the_safety_net_refreshes_in_full_at_its_interval(identify, make_segment, settings):
    settings.SEGMENT_FULL_REFRESH_EVERY_S = 3600
    identify("u-a", at=T0, plan="pro")
    segment = make_segment("pro", PRO)
    segment_refresh(segment, now=T0)

    before = segment_refresh(segment, now=T0 + HOUR - MINUTE)
    at_interval = segment_refresh(segment, now=T0 + HOUR)
    after = segment_refresh(segment, now=T0 + HOUR + MINUTE)

    assert [r.full_reason for r in (before, at_interval, after)] == [
        "", "periodic full refresh", ""
    ]  # fmt: skip
    segment.refresh_from_db()
    assert segment.full_refreshed_at == T0 + HOUR


def test_a_refresh_as_of_an_earlier_time_is_full(identify, make_segment, track):
    a = identify("u-a", at=T0)
    track("u-a", "login", at=T0)
    segment = make_segment("recent", {"event": "login", "op": "since", "days": 1})
    assert segment_refresh(segment, now=T0 + 2 * DAY).member_count == 0

    back = segment_refresh(segment, now=T0 + HOUR)

    assert back.full_reason == "now is before the previous refresh"
    assert open_members(segment) == [a]


def test_a_full_refresh_can_be_asked_for(identify, make_segment):
    identify("u-a", at=T0, plan="pro")
    segment = make_segment("pro", PRO)
    segment_refresh(segment, now=T0)

    result = segment_refresh(segment, now=T0 + MINUTE, full=True)

    assert result.full_reason == "asked for"


def test_too_many_changed_customers_make_the_refresh_full(identify, make_segment, monkeypatch):
    identify("u-a", at=T0, plan="pro")
    segment = make_segment("pro", PRO)
    segment_refresh(segment, now=T0)
    monkeypatch.setattr(refresh, "INCREMENTAL_MAX_CHANGED", 1)
    b = identify("u-b", at=T0 + MINUTE, plan="pro")
    c = identify("u-c", at=T0 + MINUTE, plan="pro")

    result = segment_refresh(segment, now=T0 + 2 * MINUTE)

    assert result.full_reason == "over 1 customers changed"
    assert result.entered_ids == [b, c]


def test_without_the_stamping_triggers_refreshes_are_full(identify, make_segment, caplog):
    identify("u-a", at=T0, plan="pro")
    segment = make_segment("pro", PRO)
    segment_refresh(segment, now=T0)
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER customer_touch_traits ON customers_customer")
    Customer.objects.filter(external_id="u-a").update(traits={"plan": "free"})

    result = segment_refresh(segment, now=T0 + MINUTE)

    assert result.full_reason == "the customers' touch stamping triggers are missing"
    assert (result.exited_ids, open_members(segment)) == ([Customer.objects.get().pk], [])
    assert "stamping triggers are missing" in caplog.text


def test_an_upload_to_a_nested_static_segment_makes_dependants_refresh_in_full(
    identify, make_segment
):
    a = identify("u-a", at=T0, plan="pro")
    b = identify("u-b", at=T0, plan="pro")
    vip = make_segment("vip", kind=Segment.Kind.STATIC)
    segment_static_upload(vip, ["u-a"], mode="append", now=T0)
    pro_vips = make_segment("pro-vips", {"all": [{"segment": "vip"}, PRO]})
    segment_refresh(pro_vips, now=T0)
    assert segment_refresh(pro_vips, now=T0 + MINUTE).mode == "incremental"

    segment_static_upload(vip, ["u-b"], mode="replace", now=T0 + 2 * MINUTE)
    result = segment_refresh(pro_vips, now=T0 + 3 * MINUTE)

    assert result.full_reason == "the definition changed"
    assert (result.entered_ids, result.exited_ids) == ([b], [a])
    # An upload that changes nothing leaves the dependants incremental.
    segment_static_upload(vip, ["u-b"], mode="append", now=T0 + 4 * MINUTE)
    assert segment_refresh(pro_vips, now=T0 + 5 * MINUTE).mode == "incremental"


# --- changed customers ----------------------------------------------------------------------


def test_a_customer_changed_between_two_refreshes_enters_and_leaves(
    identify, make_segment, membership_changes, django_capture_on_commit_callbacks
):
    a = identify("u-a", at=T0, plan="free")
    b = identify("u-b", at=T0, plan="pro")
    segment = make_segment("pro", PRO)
    segment_refresh(segment, now=T0)

    identify("u-a", at=T0 + MINUTE, plan="pro")
    identify("u-b", at=T0 + MINUTE, plan="free")
    with django_capture_on_commit_callbacks(execute=True):
        moved = segment_refresh(segment, now=T0 + 2 * MINUTE)

    assert moved.mode == "incremental"
    assert (moved.entered_ids, moved.exited_ids, moved.member_count) == ([a], [b], 1)
    assert membership_changes == [("pro", [a], [b], T0 + 2 * MINUTE)]
    assert open_members(segment) == [a]


def test_a_change_undone_before_the_next_refresh_moves_no_one(identify, make_segment):
    identify("u-a", at=T0, plan="pro")
    segment = make_segment("pro", PRO)
    segment_refresh(segment, now=T0)

    identify("u-a", at=T0 + MINUTE, plan="free")
    identify("u-a", at=T0 + 2 * MINUTE, plan="pro")
    result = segment_refresh(segment, now=T0 + 3 * MINUTE)

    assert (result.mode, result.entered_ids, result.exited_ids) == ("incremental", [], [])


@pytest.mark.django_db(transaction=True)
def test_only_the_changed_customers_are_evaluated(identify, make_segment):
    for n in range(5):
        identify(f"u-{n}", at=T0, plan="free")
    segment = make_segment("pro", PRO)
    segment_refresh(segment, now=T0)

    changed = identify("u-3", at=T0 + MINUTE, plan="pro")
    result = segment_refresh(segment, now=T0 + 2 * MINUTE)

    assert result.entered_ids == [changed]
    # Any transaction still running elsewhere on the server holds the
    # snapshot's xmin back, which can only widen the set.
    assert 1 <= result.candidates <= 5


def test_new_events_move_the_customer_they_belong_to(identify, track, make_segment):
    a = identify("u-a", at=T0)
    track("u-a", "login", at=T0)
    b = identify("u-b", at=T0)
    track("u-b", "login", at=T0)
    dormant = make_segment("dormant", DORMANT)
    assert segment_refresh(dormant, now=T0 + 15 * DAY).entered_ids == [a, b]

    track("u-b", "login", at=T0 + 15 * DAY + MINUTE)
    result = segment_refresh(dormant, now=T0 + 15 * DAY + 2 * MINUTE)

    assert (result.mode, result.exited_ids, open_members(dormant)) == ("incremental", [b], [a])


def test_a_customer_created_or_changed_outside_ingest_is_noticed(make_segment):
    everyone_free = make_segment("not-pro", {"not": PRO})
    segment_refresh(everyone_free, now=T0)

    created = Customer.objects.create(external_id="u-new", traits={"plan": "free"})
    added = segment_refresh(everyone_free, now=T0 + MINUTE)
    Customer.objects.filter(pk=created.pk).update(traits={"plan": "pro"})
    removed = segment_refresh(everyone_free, now=T0 + 2 * MINUTE)

    assert (added.mode, added.entered_ids) == ("incremental", [created.pk])
    assert (removed.mode, removed.exited_ids) == ("incremental", [created.pk])


def test_a_deleted_customer_takes_its_memberships_along(identify, make_segment):
    a = identify("u-a", at=T0, plan="pro")
    b = identify("u-b", at=T0, plan="pro")
    segment = make_segment("pro", PRO)
    segment_refresh(segment, now=T0)
    # A closed stay and an open one: each kind has its own index.
    identify("u-a", at=T0 + MINUTE, plan="free")
    segment_refresh(segment, now=T0 + MINUTE)
    identify("u-a", at=T0 + 2 * MINUTE, plan="pro")
    segment_refresh(segment, now=T0 + 2 * MINUTE)
    assert SegmentMembership.objects.filter(customer_id=a).count() == 2

    Customer.objects.get(external_id="u-a").delete()
    result = segment_refresh(segment, now=T0 + 3 * MINUTE, full=True)

    assert SegmentMembership.objects.filter(segment=segment).count() == 1
    assert (result.member_count, open_members(segment)) == (1, [b])


# --- time passing, with no new data ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_time_passing_moves_customers_in_an_incremental_refresh(identify, track, make_segment):
    a = identify("u-a", at=T0, renewal_at=(T0 + 40 * DAY).isoformat())
    track("u-a", "login", at=T0)
    track("u-a", "signed_up", at=T0)
    dormant = make_segment("dormant", DORMANT)
    renewal = make_segment("renewal-due", RENEWAL_DUE)
    new = make_segment("new-signups", {"event": "signed_up", "op": "since", "days": 7})
    segments_refresh_all(now=T0 + HOUR)

    day_8 = {r.slug: r for r in segments_refresh_all(now=T0 + 8 * DAY)}
    day_15 = {r.slug: r for r in segments_refresh_all(now=T0 + 15 * DAY)}
    day_41 = {r.slug: r for r in segments_refresh_all(now=T0 + 41 * DAY)}

    assert {r.mode for r in (*day_8.values(), *day_15.values(), *day_41.values())} == {
        "incremental"
    }
    assert day_8["new-signups"].exited_ids == [a]
    assert (day_15["dormant"].entered_ids, day_15["renewal-due"].entered_ids) == ([a], [a])
    assert day_41["renewal-due"].exited_ids == [a]
    assert open_members(dormant) == [a]
    assert open_members(renewal) == open_members(new) == []


def test_events_leaving_a_count_window_move_customers(identify, track, make_segment):
    a = identify("u-a", at=T0)
    for hours in (0, 1, 2):
        track("u-a", "feature_used", at=T0 + hours * HOUR)
    busy = make_segment(
        "busy", {"event": "feature_used", "op": "count_gte", "value": 3, "within_days": 2}
    )
    assert segment_refresh(busy, now=T0 + DAY).entered_ids == [a]

    still = segment_refresh(busy, now=T0 + 2 * DAY - MINUTE)
    left = segment_refresh(busy, now=T0 + 2 * DAY + MINUTE)

    assert (still.mode, still.exited_ids) == ("incremental", [])
    assert (left.mode, left.exited_ids) == ("incremental", [a])


def test_usage_dropping_as_time_passes_is_caught(identify, track, make_segment):
    a = identify("u-a", at=T0)
    for day in range(4):
        for n in range(3):
            track("u-a", "feature_used", at=T0 + day * DAY + n * HOUR)
    slowing = make_segment(
        "slowing", {"event": "feature_used", "op": "dropped_by", "percent": 50, "days": 2}
    )
    assert segment_refresh(slowing, now=T0 + 4 * DAY).member_count == 0

    # No new events: two days later the last two days have none, the two before six.
    result = segment_refresh(slowing, now=T0 + 6 * DAY)

    assert (result.mode, result.entered_ids) == ("incremental", [a])


@pytest.mark.django_db(transaction=True)
def test_an_event_dated_in_the_future_counts_once_its_time_comes(identify, make_segment):
    segment = make_segment("recent", {"event": "login", "op": "since", "days": 1})
    a = identify("u-a", at=T0)
    segment_refresh(segment, now=T0)
    # Recorded now, dated an hour ahead (a scheduled event, a skewed clock).
    ingest([TrackIn(userId="u-a", event="login", timestamp=T0 + HOUR)], received_at=T0)

    before = segment_refresh(segment, now=T0 + MINUTE)
    after = segment_refresh(segment, now=T0 + 2 * HOUR)

    assert (before.mode, before.entered_ids) == ("incremental", [])
    assert (after.mode, after.entered_ids) == ("incremental", [a])


def test_a_nested_segment_s_time_condition_moves_the_outer_one(identify, track, make_segment):
    a = identify("u-a", at=T0, plan="pro")
    track("u-a", "login", at=T0)
    make_segment("dormant", DORMANT)
    pro_dormant = make_segment("pro-dormant", {"all": [PRO, {"segment": "dormant"}]})
    segment_refresh(pro_dormant, now=T0 + DAY)

    result = segment_refresh(pro_dormant, now=T0 + 15 * DAY)

    assert (result.mode, result.entered_ids) == ("incremental", [a])


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("op", "entering", "leaving"),
    [
        # Dates relative to the first refresh; the second is two days later.
        ("within_next", 6 * DAY, 1 * DAY),
        ("within_last", 1 * DAY, -4 * DAY),
        ("before_days_ago", -4 * DAY, None),  # once before, always before
        ("after_days_ago", None, -4 * DAY),
    ],
)
def test_a_date_trait_crossing_an_edge_moves_the_customer(
    identify, make_segment, op, entering, leaving
):
    now, later = T0 + 30 * DAY, T0 + 32 * DAY
    ids = {}
    for role, offset in (("entering", entering), ("leaving", leaving)):
        if offset is not None:
            ids[role] = identify(f"u-{role}", at=T0, due=(now + offset).isoformat())
    identify("u-elsewhere", at=T0, due=(now - 40 * DAY).isoformat())
    identify("u-not-a-date", at=T0, due="soon")
    segment = make_segment("dated", {"trait": "due", "op": op, "days": 5})
    first = segment_refresh(segment, now=now)

    second = segment_refresh(segment, now=later)

    assert second.mode == "incremental"
    assert ids.get("entering") not in first.entered_ids
    assert leaving is None or ids["leaving"] in first.entered_ids
    assert second.entered_ids == ([ids["entering"]] if entering is not None else [])
    assert second.exited_ids == ([ids["leaving"]] if leaving is not None else [])
    assert open_members(segment) == recomputed(segment, later)


# --- incremental = full, on random histories ------------------------------------------------

RANDOM_SEGMENTS = {
    "dormant": DORMANT,
    "recent-login": {"event": "login", "op": "since", "days": 3},
    "never-logged-in": {"event": "login", "op": "count_lt", "value": 1},
    "busy": {"event": "feature_used", "op": "count_gte", "value": 3, "within_days": 5},
    "quiet": {"event": "feature_used", "op": "count_lt", "value": 2, "within_days": 4},
    "regular": {"event": "login", "op": "count_gte", "value": 2},
    "slowing": {"event": "feature_used", "op": "dropped_by", "percent": 50, "days": 3},
    "renewal-soon": {"trait": "renewal_at", "op": "within_next", "days": 5},
    "renewed-lately": {"trait": "renewal_at", "op": "within_last", "days": 4},
    "old-signup": {"trait": "signed_up_at", "op": "before_days_ago", "days": 6},
    "fresh-signup": {"trait": "signed_up_at", "op": "after_days_ago", "days": 6},
    "pro": PRO,
    "pro-and-dormant": {"all": [{"segment": "pro"}, {"segment": "dormant"}]},
    "not-busy-or-pro": {"any": [{"not": {"segment": "busy"}}, PRO]},
}


def _random_time(rng: random.Random, around: datetime, days: float) -> str:
    return (around + timedelta(hours=rng.uniform(-24 * days, 24 * days))).isoformat()


@pytest.mark.django_db(transaction=True)
def test_incremental_refreshes_agree_with_a_recomputation_over_a_random_history(make_segment):
    rng = random.Random(20261102)
    segments = [make_segment(slug, definition) for slug, definition in RANDOM_SEGMENTS.items()]
    now = T0
    users = [f"u-{n}" for n in range(30)]
    ingest(
        [
            IdentifyIn(
                userId=user,
                timestamp=now,
                traits={
                    "plan": rng.choice(["pro", "free", None]),
                    "renewal_at": _random_time(rng, now, 12),
                    "signed_up_at": _random_time(rng, now - 6 * DAY, 6),
                },
            )
            for user in users
        ],
        received_at=now,
    )
    modes = []
    for step in range(14):
        calls = []
        for user in rng.sample(users, 6):
            for _ in range(rng.randrange(4)):
                name = rng.choice(["login", "feature_used", "feature_used"])
                # Mostly since the last refresh; some in the future (due later).
                ahead = rng.random() < 0.15
                at = now + timedelta(hours=rng.uniform(1, 30) if ahead else -rng.uniform(0, 20))
                calls.append(TrackIn(userId=user, event=name, timestamp=at))
        for user in rng.sample(users, 3):
            traits = rng.choice(
                [{"plan": rng.choice(["pro", "free"])}, {"renewal_at": _random_time(rng, now, 8)}]
            )
            calls.append(IdentifyIn(userId=user, timestamp=now, traits=traits))
        if step % 4 == 1:
            users.append(f"u-new-{step}")
            calls.append(IdentifyIn(userId=users[-1], timestamp=now, traits={"plan": "pro"}))
        ingest(calls, received_at=now)
        if step % 5 == 2:  # a write outside ingest, seen by the stamping trigger
            Customer.objects.filter(external_id=rng.choice(users)).update(
                traits={"plan": "pro", "renewal_at": _random_time(rng, now, 3)}
            )
        now += timedelta(hours=rng.uniform(5, 40))

        results = segments_refresh_all(now=now)

        assert all(r.ok for r in results), [r.error for r in results]
        modes += [r.mode for r in results]
        for segment in segments:
            assert open_members(segment) == recomputed(segment, now), (step, segment.slug)
    assert modes.count("full") == len(segments)  # the first refresh of each only


# --- the date traits' expression indexes ---------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_date_trait_gets_an_expression_index_that_finds_its_crossers(identify, make_segment):
    from apps.segments.conditions import parse
    from apps.segments.conditions.traits_sql import trait_time_index_name
    from apps.segments.incremental import candidates_sql, time_edges

    identify("u-a", at=T0, renewal_at=(T0 + 3 * DAY).isoformat())
    segment = make_segment("renewal-due", RENEWAL_DUE)
    segment_refresh(segment, now=T0)

    name = trait_time_index_name("renewal_at")
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [name])
        (definition,) = cursor.fetchone()
        edges = time_edges(parse(RENEWAL_DUE), lambda slug: None)
        sql, params = candidates_sql(edges, watermark=0, since=T0, until=T0 + MINUTE)
        cursor.execute("SET enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("RESET enable_seqscan")
    assert "tenure_iso_utc" in definition and "renewal_at" in definition
    assert name in plan


def test_the_indexed_time_function_reads_traits_as_the_conditions_do():
    values = [
        "2026-11-02", "2026-11-02T09:30", "2026-11-02 09:30:15.5", "2026-11-02T09:30:00Z",
        "2026-11-02T09:30:00+05:30", "2026-11-02T09:30:00-08:00", "2026-02-30", "2026-13-01",
        "soon", "", "20261102", "2026-11-02T25:00",
    ]  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT v, tenure_iso_utc(v) IS NOT DISTINCT FROM tenure_iso_timestamptz(v) "
            "FROM unnest(%s::text[]) AS v",
            [values],
        )
        agree = dict(cursor.fetchall())
        cursor.execute("SET TIME ZONE 'America/New_York'")
        # A time without an offset is UTC whatever the session's zone: an index
        # built by any session holds the same values.
        cursor.execute("SELECT tenure_iso_utc('2026-11-02T09:30') = '2026-11-02T09:30Z'")
        (utc_anyway,) = cursor.fetchone()
        cursor.execute("SET TIME ZONE 'UTC'")
    assert agree == dict.fromkeys(values, True)
    assert utc_anyway is True


def test_refresh_segments_full_evaluates_everyone_and_says_why(identify, make_segment):
    identify("u-a", at=T0, plan="pro")
    segment = make_segment("pro", PRO)
    segment_refresh(segment, now=T0)
    out = io.StringIO()

    call_command("refresh_segments", "--full", stdout=out)
    call_command("refresh_segments", stdout=out)

    first, second = out.getvalue().splitlines()
    assert first.startswith("pro: 1 members") and first.endswith("(full: asked for)")
    assert second.endswith(" evaluated)") and "full" not in second


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("op", ["within_next", "within_last", "before_days_ago", "after_days_ago"])
def test_a_segment_read_through_the_time_index_has_the_same_members(identify, op):
    from apps.segments.conditions import customer_matches
    from apps.segments.incremental import ensure_trait_time_index

    values = [
        (T0 + 2 * DAY).isoformat(), (T0 - 2 * DAY).isoformat(), (T0 + 9 * DAY).isoformat(),
        (T0 - 9 * DAY).isoformat(), "2026-11-04", "2026-10-29T10:00", "2026-11-03T23:30-08:00",
        (T0 + 5 * DAY).isoformat(), (T0 - 5 * DAY).isoformat(), "2026-02-30", "soon", 20261104,
        True, None,
    ]  # fmt: skip
    ids = [identify(f"u-{n}", at=T0, due=value) for n, value in enumerate(values)]
    identify("u-none", at=T0)
    definition = {"trait": "due", "op": op, "days": 5}
    ensure_trait_time_index("due")

    through_index = segment_queryset(definition, now=T0)
    one_by_one = [
        pk for pk in [*ids] if customer_matches(definition, pk, now=T0, context="segment")
    ]

    assert "tenure_iso_utc" in str(through_index.query)
    assert sorted(through_index.values_list("pk", flat=True)) == sorted(one_by_one)
    assert one_by_one  # the values cover both sides
