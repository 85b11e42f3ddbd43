from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction

from apps.segments import hooks
from apps.segments.models import Segment, SegmentMembership
from apps.segments.services import segment_refresh, segment_static_upload, segments_refresh_all

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
PRO = {"trait": "plan", "op": "eq", "value": "pro"}
FREE = {"trait": "plan", "op": "eq", "value": "free"}


def test_the_hook_hears_each_refresh_once_with_who_entered_and_exited(
    identify, make_segment, membership_changes, django_capture_on_commit_callbacks
):
    a = identify("u-a", at=T0, plan="pro")
    b = identify("u-b", at=T0, plan="pro")
    segment = make_segment("pro", PRO)
    with django_capture_on_commit_callbacks(execute=True):
        segment_refresh(segment, now=T0)
    identify("u-a", at=T1, plan="free")
    c = identify("u-c", at=T1, plan="pro")

    with django_capture_on_commit_callbacks(execute=True):
        segment_refresh(segment, now=T1)

    assert membership_changes == [("pro", [a, b], [], T0), ("pro", [c], [a], T1)]


def test_a_refresh_run_calls_the_hook_once_per_segment_that_changed(
    identify, make_segment, membership_changes, django_capture_on_commit_callbacks
):
    a = identify("u-a", at=T0, plan="pro")
    b = identify("u-b", at=T0, plan="free")
    c = identify("u-c", at=T0, plan="pro")
    make_segment("pro", PRO)
    make_segment("free", FREE)
    make_segment("enterprise", {"trait": "plan", "op": "eq", "value": "enterprise"})

    with django_capture_on_commit_callbacks(execute=True):
        segments_refresh_all(now=T0)

    assert sorted(membership_changes) == [("free", [b], [], T0), ("pro", [a, c], [], T0)]


def test_the_hook_waits_for_the_commit(
    identify, make_segment, membership_changes, django_capture_on_commit_callbacks
):
    a = identify("u-a", at=T0, plan="pro")
    segment = make_segment("pro", PRO)

    with django_capture_on_commit_callbacks() as callbacks:
        segment_refresh(segment, now=T0)
    assert membership_changes == []
    for callback in callbacks:
        callback()

    assert membership_changes == [("pro", [a], [], T0)]


def test_the_hook_hears_nothing_when_the_refresh_is_rolled_back(
    identify, make_segment, membership_changes, django_capture_on_commit_callbacks
):
    identify("u-a", at=T0, plan="pro")
    segment = make_segment("pro", PRO)

    class Abort(Exception):
        pass

    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(Abort),
        transaction.atomic(),
    ):
        assert segment_refresh(segment, now=T0).entered_ids
        raise Abort

    assert callbacks == []
    assert membership_changes == []
    assert not SegmentMembership.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_hook_is_called_after_a_real_commit(identify, make_segment, membership_changes):
    a = identify("u-a", at=T0, plan="pro")
    segment = make_segment("pro", PRO)
    seen_committed = []
    # A listener reading the database sees the memberships it is told about.
    hooks.on_membership_change(
        listener := lambda *, segment, entered_ids, **_: seen_committed.append(
            SegmentMembership.objects.filter(customer_id__in=entered_ids).count()
        )
    )
    try:
        segment_refresh(segment, now=T0)
    finally:
        hooks.remove_listener(listener)

    assert membership_changes == [("pro", [a], [], T0)]
    assert seen_committed == [1]


def test_the_hook_hears_nothing_when_nothing_changed(
    identify, make_segment, membership_changes, django_capture_on_commit_callbacks
):
    identify("u-a", at=T0, plan="pro")
    segment = make_segment("pro", PRO)
    segment_refresh(segment, now=T0)

    with django_capture_on_commit_callbacks(execute=True):
        segment_refresh(segment, now=T1)

    assert membership_changes == []


def test_the_hook_hears_nothing_from_a_failed_refresh(
    make_segment, membership_changes, django_capture_on_commit_callbacks
):
    segment = make_segment("broken", {"segment": "missing"})

    with django_capture_on_commit_callbacks(execute=True):
        assert segment_refresh(segment, now=T0).error

    assert membership_changes == []


def test_a_failing_listener_does_not_keep_the_others_from_hearing(
    identify, make_segment, membership_changes, django_capture_on_commit_callbacks, caplog
):
    a = identify("u-a", at=T0, plan="pro")
    segment = make_segment("pro", PRO)

    def broken(**kwargs):
        raise RuntimeError("journeys are down")

    hooks._listeners.insert(0, broken)  # heard first
    try:
        with django_capture_on_commit_callbacks(execute=True):
            result = segment_refresh(segment, now=T0)
    finally:
        hooks.remove_listener(broken)

    assert result.ok
    assert membership_changes == [("pro", [a], [], T0)]
    assert "journeys are down" in caplog.text


def test_a_listener_registered_twice_is_called_once(
    identify, make_segment, membership_changes, django_capture_on_commit_callbacks
):
    identify("u-a", at=T0, plan="pro")
    segment = make_segment("pro", PRO)
    calls = []

    def listener(**kwargs):
        calls.append(kwargs["segment"].slug)

    assert hooks.on_membership_change(listener) is listener
    hooks.on_membership_change(listener)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            segment_refresh(segment, now=T0)
    finally:
        hooks.remove_listener(listener)

    assert calls == ["pro"]


def test_a_static_upload_is_heard_like_a_refresh(
    identify, make_segment, membership_changes, django_capture_on_commit_callbacks
):
    a = identify("u-a", at=T0)
    b = identify("u-b", at=T0)
    vip = make_segment("vip", kind=Segment.Kind.STATIC)
    segment_static_upload(vip, ["u-a"], mode="append", now=T0)

    with django_capture_on_commit_callbacks(execute=True):
        segment_static_upload(vip, ["u-b", "nobody"], mode="replace", now=T1)

    assert membership_changes == [("vip", [b], [a], T1)]
