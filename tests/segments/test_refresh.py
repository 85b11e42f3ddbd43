import io
import json
import threading
from datetime import UTC, date, datetime, timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections

from apps.customers.models import Customer
from apps.segments import services, tasks
from apps.segments.models import Segment, SegmentMembership, SegmentSnapshot
from apps.segments.selectors import (
    customer_segment_history,
    segment_members,
    segment_size_series,
)
from apps.segments.services import (
    REFRESH_LEASE,
    refresh,
    segment_refresh,
    segment_static_upload,
    segments_refresh_all,
)
from config.celery import system_schedule

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
PRO = {"trait": "plan", "op": "eq", "value": "pro"}
# Has logged in, but not in the last 14 days.
DORMANT = {
    "all": [
        {"event": "login", "op": "count_gte", "value": 1},
        {"event": "login", "op": "not_since", "days": 14},
    ]
}
RENEWAL_DUE = {"trait": "renewal_at", "op": "within_next", "days": 30}


def stays(segment: Segment) -> list[tuple[str, datetime, datetime | None]]:
    """Every membership row of the segment: (external id, entered, exited)."""
    return list(
        SegmentMembership.objects.filter(segment=segment)
        .order_by("customer__external_id", "entered_at")
        .values_list("customer__external_id", "entered_at", "exited_at")
    )


def snapshots(segment: Segment) -> list[tuple[date, int]]:
    return list(
        SegmentSnapshot.objects.filter(segment=segment)
        .order_by("day")
        .values_list("day", "member_count")
    )


# --- the diff ------------------------------------------------------------------------


def test_a_refresh_opens_a_membership_for_each_matching_customer(identify, make_segment):
    a = identify("u-a", at=T0, plan="pro")
    b = identify("u-b", at=T0, plan="pro")
    identify("u-c", at=T0, plan="free")
    identify("u-d", at=T0)
    segment = make_segment("pro", PRO)

    result = segment_refresh(segment, now=T0)

    assert result.ok
    assert (result.entered_ids, result.exited_ids, result.member_count) == ([a, b], [], 2)
    assert stays(segment) == [("u-a", T0, None), ("u-b", T0, None)]
    segment.refresh_from_db()
    assert (segment.member_count, segment.refreshed_at, segment.last_error) == (2, T0, "")
    assert segment.refresh_ms is not None


def test_a_customer_who_leaves_and_comes_back_has_two_stays(identify, make_segment):
    a = identify("u-a", at=T0, plan="pro")
    segment = make_segment("pro", PRO)
    segment_refresh(segment, now=T0)

    identify("u-a", at=T0 + HOUR, plan="free")
    left = segment_refresh(segment, now=T0 + HOUR)
    identify("u-a", at=T0 + 2 * HOUR, plan="pro")
    back = segment_refresh(segment, now=T0 + 2 * HOUR)

    assert (left.entered_ids, left.exited_ids, left.member_count) == ([], [a], 0)
    assert (back.entered_ids, back.exited_ids, back.member_count) == ([a], [], 1)
    assert stays(segment) == [("u-a", T0, T0 + HOUR), ("u-a", T0 + 2 * HOUR, None)]


def test_members_who_still_match_keep_their_stay(identify, make_segment):
    identify("u-a", at=T0, plan="pro")
    segment = make_segment("pro", PRO)
    segment_refresh(segment, now=T0)

    again = segment_refresh(segment, now=T0 + HOUR)

    assert (again.entered_ids, again.exited_ids, again.member_count) == ([], [], 1)
    assert stays(segment) == [("u-a", T0, None)]


def test_segments_are_diffed_independently(identify, make_segment):
    a = identify("u-a", at=T0, plan="pro")
    pro = make_segment("pro", PRO)
    everyone_pro = make_segment("pro-too", PRO)
    segment_refresh(pro, now=T0)

    result = segment_refresh(everyone_pro, now=T0)

    assert result.entered_ids == [a]
    assert stays(pro) == stays(everyone_pro) == [("u-a", T0, None)]


def test_time_passing_moves_customers_without_new_events(identify, track, make_segment):
    a = identify("u-a", at=T0)
    track("u-a", "login", at=T0)
    b = identify("u-b", at=T0, renewal_at=(T0 + 40 * DAY).isoformat())
    dormant = make_segment("dormant", DORMANT)
    renewal = make_segment("renewal-due", RENEWAL_DUE)

    early = {r.slug: r for r in segments_refresh_all(now=T0 + DAY)}
    later = {r.slug: r for r in segments_refresh_all(now=T0 + 15 * DAY)}

    assert early["dormant"].member_count == early["renewal-due"].member_count == 0
    assert later["dormant"].entered_ids == [a]
    assert later["renewal-due"].entered_ids == [b]
    assert stays(dormant) == [("u-a", T0 + 15 * DAY, None)]
    assert stays(renewal) == [("u-b", T0 + 15 * DAY, None)]


def test_the_beat_task_refreshes_as_of_the_clock(track, make_segment):
    track("u-a", "login", at=T0)
    dormant = make_segment("dormant", DORMANT)

    with time_machine.travel(T0 + 13 * DAY, tick=False):
        tasks.refresh_segment(dormant.pk)
    assert stays(dormant) == []
    with time_machine.travel(T0 + 15 * DAY, tick=False):
        tasks.refresh_segment(dormant.pk)

    assert stays(dormant) == [("u-a", T0 + 15 * DAY, None)]


def test_the_segment_task_refreshes_as_of_a_given_time(track, make_segment):
    track("u-a", "login", at=T0)
    dormant = make_segment("dormant", DORMANT)

    tasks.refresh_segment(dormant.pk, (T0 + 15 * DAY).isoformat())

    assert stays(dormant) == [("u-a", T0 + 15 * DAY, None)]


def test_the_segment_task_refuses_a_time_without_an_offset(make_segment):
    dormant = make_segment("dormant", DORMANT)

    with pytest.raises(ValueError, match="with an offset, got '2026-11-17T09:00:00'"):
        tasks.refresh_segment(dormant.pk, "2026-11-17T09:00:00")
    assert Segment.objects.get(pk=dormant.pk).refreshed_at is None


def test_beat_publishes_one_refresh_per_active_dynamic_segment_slowest_first(
    identify, make_segment
):
    identify("u-a", at=T0, plan="pro")
    quick = make_segment("quick", PRO, refresh_ms=20)
    slow = make_segment("slow", PRO, refresh_ms=900)
    never = make_segment("never", PRO)
    make_segment("paused", PRO, is_active=False)
    vip = make_segment("vip", kind=Segment.Kind.STATIC)
    published: list[int] = []

    ids = services.segments_refresh_publish(now=T0, publish=published.append)

    assert published == ids == [slow.pk, quick.pk, never.pk]
    # Publishing refreshes nothing itself; it records the static segments' size.
    assert Segment.objects.filter(refreshed_at__isnull=False).count() == 0
    assert snapshots(vip) == [(T0.date(), 0)]


def test_a_published_refresh_of_a_segment_since_paused_static_or_deleted_does_nothing(
    identify, make_segment
):
    identify("u-a", at=T0, plan="pro")
    paused = make_segment("paused", PRO)
    made_static = make_segment("made-static", PRO)
    deleted = make_segment("deleted", PRO)
    ids = services.segments_refresh_publish(now=T0, publish=lambda pk: None)
    Segment.objects.filter(pk=paused.pk).update(is_active=False)
    Segment.objects.filter(pk=made_static.pk).update(kind=Segment.Kind.STATIC, definition=None)
    deleted.delete()

    results = [services.segment_refresh_by_id(pk, now=T0) for pk in ids]

    assert results == [None, None, None]
    assert stays(paused) == stays(made_static) == []


def test_only_active_dynamic_segments_are_refreshed(identify, make_segment):
    identify("u-a", at=T0, plan="pro")
    make_segment("pro", PRO)
    paused = make_segment("paused", PRO, is_active=False)
    make_segment("vip", kind=Segment.Kind.STATIC)

    results = segments_refresh_all(now=T0)

    assert [r.slug for r in results] == ["pro"]
    assert stays(paused) == []


def test_a_static_segment_is_not_refreshed(make_segment):
    vip = make_segment("vip", kind=Segment.Kind.STATIC)

    with pytest.raises(ValueError, match="static segment is uploaded"):
        segment_refresh(vip, now=T0)


# --- failures ---------------------------------------------------------------------------


def test_a_failing_segment_is_recorded_and_does_not_stop_the_others(identify, make_segment, caplog):
    identify("u-a", at=T0, plan="pro")
    trial = make_segment("trial", PRO)
    broken = make_segment("a-broken", {"all": [PRO, {"segment": "trial"}]})  # refreshed first
    pro = make_segment("pro", PRO)
    trial.delete()

    results = {r.slug: r for r in segments_refresh_all(now=T0)}

    assert "all[1]: unknown segment 'trial'" in results["a-broken"].error
    assert results["pro"].ok and results["pro"].member_count == 1
    assert stays(pro) == [("u-a", T0, None)]
    broken.refresh_from_db()
    assert broken.last_error == results["a-broken"].error
    assert broken.refreshed_at is None
    assert (broken.refresh_lease_until, broken.refresh_lease_token) == (None, "")
    assert stays(broken) == []
    assert "a-broken" in caplog.text and "unknown segment 'trial'" in caplog.text


def test_an_unexpected_error_is_recorded_then_cleared_by_the_next_good_refresh(
    identify, make_segment, monkeypatch
):
    identify("u-a", at=T0, plan="pro")
    segment = make_segment("pro", PRO)
    real = refresh.segment_queryset

    def broken(definition, *, now):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(refresh, "segment_queryset", broken)
    failed = segment_refresh(segment, now=T0)
    monkeypatch.setattr(refresh, "segment_queryset", real)
    recovered = segment_refresh(segment, now=T0 + HOUR)

    assert failed.error == "RuntimeError: the database went away"
    assert recovered.ok and recovered.member_count == 1
    segment.refresh_from_db()
    assert (segment.last_error, segment.refreshed_at) == ("", T0 + HOUR)


def test_a_refresh_whose_lease_was_taken_over_keeps_nothing(identify, make_segment, monkeypatch):
    identify("u-a", at=T0, plan="pro")
    segment = make_segment("pro", PRO)
    real = refresh.apply_member_set

    def then_taken_over(*args, **kwargs):
        written = real(*args, **kwargs)
        Segment.objects.filter(pk=segment.pk).update(refresh_lease_token="another-refresh")
        return written

    monkeypatch.setattr(refresh, "apply_member_set", then_taken_over)
    result = segment_refresh(segment, now=T0)

    assert result.error.startswith("LeaseLost")
    assert stays(segment) == []
    assert snapshots(segment) == []


# --- the lease --------------------------------------------------------------------------


def test_a_refresh_skips_a_segment_whose_lease_is_held(identify, make_segment):
    identify("u-a", at=T0, plan="pro")
    segment = make_segment(
        "pro", PRO, refresh_lease_until=T0 + timedelta(minutes=5), refresh_lease_token="x"
    )

    result = segment_refresh(segment, now=T0)

    assert result.skipped == "another refresh of this segment is running"
    assert not result.ok and result.error == ""
    assert stays(segment) == []
    segment.refresh_from_db()
    assert (segment.refresh_lease_token, segment.refreshed_at) == ("x", None)


def test_an_expired_lease_is_taken_over_and_released_after(identify, make_segment):
    identify("u-a", at=T0, plan="pro")
    segment = make_segment(
        "pro", PRO, refresh_lease_until=T0 - timedelta(seconds=1), refresh_lease_token="dead"
    )

    result = segment_refresh(segment, now=T0)

    assert result.ok and result.member_count == 1
    segment.refresh_from_db()
    assert (segment.refresh_lease_until, segment.refresh_lease_token) == (None, "")


def test_of_two_claims_on_a_free_lease_only_the_first_wins(make_segment):
    segment = make_segment("pro", PRO)

    first = refresh._lease_claim(segment.pk, now=T0)
    second = refresh._lease_claim(segment.pk, now=T0 + REFRESH_LEASE - timedelta(seconds=1))
    after_expiry = refresh._lease_claim(segment.pk, now=T0 + REFRESH_LEASE)

    assert first and second is None and after_expiry not in (None, first)
    segment.refresh_from_db()
    assert segment.refresh_lease_until == T0 + 2 * REFRESH_LEASE
    assert segment.refresh_lease_token == after_expiry


@pytest.mark.django_db(transaction=True)
def test_a_refresh_started_while_another_runs_skips(identify, make_segment, monkeypatch):
    a = identify("u-a", at=T0, plan="pro")
    segment = make_segment("pro", PRO)
    inside, release = threading.Event(), threading.Event()
    real = refresh.segment_queryset

    def slow(definition, *, now):
        inside.set()
        assert release.wait(10)
        return real(definition, now=now)

    monkeypatch.setattr(refresh, "segment_queryset", slow)
    results = {}

    def first() -> None:
        try:
            results["first"] = segment_refresh(Segment.objects.get(pk=segment.pk), now=T0)
        finally:
            connections.close_all()

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert inside.wait(10), "the first refresh never started"
        second = segment_refresh(Segment.objects.get(pk=segment.pk), now=T0)
    finally:
        release.set()
        thread.join(10)

    assert second.skipped == "another refresh of this segment is running"
    assert results["first"].ok and results["first"].entered_ids == [a]
    assert stays(segment) == [("u-a", T0, None)]
    # Once the first is done the lease is free again.
    assert segment_refresh(segment, now=T0 + HOUR).ok


@pytest.mark.django_db(transaction=True)
def test_of_many_concurrent_claims_from_separate_connections_exactly_one_wins(make_segment):
    segment = make_segment("pro", PRO)
    barrier = threading.Barrier(8)
    tokens: list[str | None] = []

    def claim() -> None:
        try:
            barrier.wait(10)
            tokens.append(refresh._lease_claim(segment.pk, now=T0))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    winners = [t for t in tokens if t]
    assert len(tokens) == 8 and len(winners) == 1
    segment.refresh_from_db()
    assert segment.refresh_lease_token == winners[0]


# --- snapshots --------------------------------------------------------------------------


def test_refreshes_keep_one_snapshot_per_segment_and_day_with_the_latest_size(
    identify, make_segment
):
    identify("u-a", at=T0, plan="pro")
    segment = make_segment("pro", PRO)
    segment_refresh(segment, now=T0)
    identify("u-b", at=T0 + HOUR, plan="pro")
    segment_refresh(segment, now=T0 + HOUR)
    identify("u-a", at=T0 + DAY, plan="free")
    segment_refresh(segment, now=T0 + DAY)

    assert snapshots(segment) == [(T0.date(), 2), (T0.date() + DAY, 1)]


def test_a_failed_refresh_takes_no_snapshot(make_segment):
    segment = make_segment("broken", {"segment": "missing"})

    segment_refresh(segment, now=T0)

    assert snapshots(segment) == []


def test_the_refresh_run_also_records_the_size_of_static_segments(identify, make_segment):
    identify("u-a", at=T0)
    vip = make_segment("vip", kind=Segment.Kind.STATIC)
    segment_static_upload(vip, ["u-a"], mode="append", now=T0)

    segments_refresh_all(now=T0 + DAY)

    assert snapshots(vip) == [(T0.date(), 1), (T0.date() + DAY, 1)]


def test_the_size_series_lists_the_window_s_days_oldest_first(make_segment):
    segment = make_segment("pro", PRO)
    today = date(2026, 11, 2)
    for days_ago, size in ((120, 1), (90, 2), (89, 3), (1, 4), (0, 5)):
        SegmentSnapshot.objects.create(
            segment=segment, day=today - timedelta(days=days_ago), member_count=size
        )
    SegmentSnapshot.objects.create(segment=make_segment("other", PRO), day=today, member_count=9)

    series = segment_size_series(segment, days=90, today=today)

    assert series == [(today - timedelta(days=89), 3), (today - DAY, 4), (today, 5)]


# --- selectors ----------------------------------------------------------------------------


def test_segment_members_are_the_customers_with_an_open_stay(identify, make_segment):
    a = identify("u-a", at=T0, plan="pro")
    identify("u-b", at=T0, plan="pro")
    segment = make_segment("pro", PRO)
    segment_refresh(segment, now=T0)
    identify("u-b", at=T0 + HOUR, plan="free")
    segment_refresh(segment, now=T0 + HOUR)

    assert list(segment_members(segment).values_list("pk", flat=True)) == [a]


def test_a_customer_s_history_lists_stays_newest_first_with_their_segment(
    identify, make_segment, django_assert_num_queries
):
    a = identify("u-a", at=T0, plan="pro")
    pro = make_segment("pro", PRO)
    paying = make_segment("paying", {"trait": "plan", "op": "in", "value": ["pro", "team"]})
    segment_refresh(pro, now=T0)
    identify("u-a", at=T0 + HOUR, plan="team")
    segment_refresh(pro, now=T0 + HOUR)
    segment_refresh(paying, now=T0 + 2 * HOUR)

    customer = Customer.objects.get(pk=a)

    with django_assert_num_queries(1):
        history = [
            (m.segment.slug, m.entered_at, m.exited_at) for m in customer_segment_history(customer)
        ]

    assert history == [("paying", T0 + 2 * HOUR, None), ("pro", T0, T0 + HOUR)]


# --- the command and the schedule ---------------------------------------------------------


def test_refresh_segments_prints_each_segment_s_changes(identify, make_segment):
    identify("u-a", at=T0, plan="pro")
    make_segment("pro", PRO)
    out = io.StringIO()

    call_command("refresh_segments", stdout=out)

    assert "pro: 1 members, +1 entered, \N{MINUS SIGN}0 exited" in out.getvalue()


def test_refresh_segments_reports_a_failure_and_exits_non_zero(identify, make_segment):
    identify("u-a", at=T0, plan="pro")
    make_segment("broken", {"segment": "missing"})
    make_segment("pro", PRO)
    out = io.StringIO()

    with pytest.raises(CommandError, match=r"1 segment\(s\) failed: broken"):
        call_command("refresh_segments", stdout=out)

    assert "broken: FAILED: ConditionError: condition: unknown segment 'missing'" in out.getvalue()
    assert "pro: 1 members" in out.getvalue()


def test_refresh_segments_can_refresh_one_segment(identify, make_segment):
    identify("u-a", at=T0, plan="pro")
    make_segment("pro", PRO)
    other = make_segment("other", PRO)
    out = io.StringIO()

    call_command("refresh_segments", "--segment", "pro", stdout=out)

    assert out.getvalue().startswith("pro: 1 members")
    assert stays(other) == []


def test_refresh_segments_refuses_an_unknown_slug(db):
    with pytest.raises(CommandError, match="no segment 'nope'"):
        call_command("refresh_segments", "--segment", "nope")


def test_beat_refreshes_the_segments_every_minute():
    entry = system_schedule()["refresh-segments"]

    assert entry["task"] == tasks.refresh_segments.name
    assert entry["schedule"] == 60.0


# --- load_segments -------------------------------------------------------------------------


def load(tmp_path, items, *args) -> str:
    path = tmp_path / "segments.json"
    path.write_text(json.dumps(items))
    out = io.StringIO()
    call_command("load_segments", str(path), *args, stdout=out)
    return out.getvalue()


def test_only_new_leaves_existing_segments_as_a_marketer_edited_them(tmp_path):
    load(tmp_path, [{"slug": "pro", "name": "Pro", "definition": PRO}])
    Segment.objects.filter(slug="pro").update(name="Pro (edited)")

    out = load(
        tmp_path,
        [{"slug": "pro", "name": "Pro", "definition": PRO},
         {"slug": "vip", "name": "VIP", "kind": "static"}],
        "--only-new",
    )  # fmt: skip

    assert "1 segment(s) created, 0 updated, 1 kept as they were" in out
    assert Segment.objects.get(slug="pro").name == "Pro (edited)"
    assert Segment.objects.filter(slug="vip").exists()


def test_load_segments_creates_then_updates_by_slug(tmp_path):
    items = [
        {"slug": "pro", "name": "Pro", "description": "Paying", "definition": PRO,
         "kind": "dynamic"},
        {"slug": "vip", "name": "VIP", "description": "", "definition": None,
         "kind": "static"},
    ]  # fmt: skip

    first = load(tmp_path, items)
    items[0]["name"] = "Pro plan"
    second = load(tmp_path, items)

    assert "2 segment(s) created, 0 updated" in first
    assert "0 segment(s) created, 2 updated" in second
    pro = Segment.objects.get(slug="pro")
    assert (pro.name, pro.description, pro.definition, pro.kind) == (
        "Pro plan", "Paying", PRO, "dynamic"
    )  # fmt: skip
    assert Segment.objects.get(slug="vip").kind == "static"


def test_segments_in_a_file_may_refer_to_ones_later_in_it(tmp_path):
    load(
        tmp_path,
        [
            {"slug": "pro-dormant", "name": "Dormant pros",
             "definition": {"all": [{"segment": "pro"}, DORMANT]}},
            {"slug": "pro", "name": "Pro", "definition": PRO},
        ],
    )  # fmt: skip

    assert set(Segment.objects.values_list("slug", flat=True)) == {"pro", "pro-dormant"}


def test_one_invalid_definition_and_nothing_is_loaded(tmp_path, make_segment):
    make_segment("pro", PRO, name="Pro")
    bad = {"all": [PRO, {"trait": "plan", "op": "eqq", "value": "pro"}]}

    with pytest.raises(CommandError) as refused:
        load(
            tmp_path,
            [
                {"slug": "pro", "name": "Renamed", "definition": PRO},
                {"slug": "new", "name": "New", "definition": bad},
            ],
        )

    message = str(refused.value)
    assert "nothing loaded" in message
    assert "segments[1] ('new'): definition: all[1]: unknown op 'eqq'" in message
    assert list(Segment.objects.values_list("slug", "name")) == [("pro", "Pro")]


def test_a_cycle_between_segments_of_a_file_is_refused(tmp_path):
    with pytest.raises(CommandError, match="refers back"):
        load(
            tmp_path,
            [
                {"slug": "a", "name": "A", "definition": {"segment": "b"}},
                {"slug": "b", "name": "B", "definition": {"segment": "a"}},
            ],
        )

    assert not Segment.objects.exists()


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ({"slug": "pro"}, "must hold a list of segments"),
        ([{"slug": "pro", "definition": PRO}], "segments[0] ('pro'): name: Field required"),
        ([{"slug": "pro", "name": "P", "definition": PRO, "kindd": "x"}], "kindd"),
        ([{"slug": "p r o", "name": "P", "definition": PRO}], "segments[0] ('p r o'): slug"),
        (
            [{"slug": "pro", "name": "P", "definition": PRO},
             {"slug": "pro", "name": "Q", "definition": PRO}],
            "segments[1] ('pro'): the slug 'pro' appears twice",
        ),
        ([{"slug": "vip", "name": "V", "kind": "static", "definition": PRO}], "no definition"),
        ([{"slug": "pro", "name": "P"}], "segments[0] ('pro'): definition: condition: must be"),
    ],
)  # fmt: skip
def test_load_segments_names_the_entry_it_refuses(tmp_path, items, expected):
    with pytest.raises(CommandError) as refused:
        load(tmp_path, items)

    assert expected in str(refused.value)
    assert not Segment.objects.exists()


def test_load_segments_refuses_a_file_that_is_not_json(tmp_path):
    path = tmp_path / "segments.json"
    path.write_text('[{"slug": "pro",')

    with pytest.raises(CommandError, match=r"not valid JSON: .* \(line 1, column"):
        call_command("load_segments", str(path))


def test_reloading_keeps_a_deactivated_segment_inactive(tmp_path, make_segment):
    make_segment("pro", PRO, is_active=False)

    load(tmp_path, [{"slug": "pro", "name": "Pro", "definition": PRO}])

    assert Segment.objects.get(slug="pro").is_active is False
