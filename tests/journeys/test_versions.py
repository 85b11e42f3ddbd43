import copy
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings

from apps.customers.models import Customer
from apps.journeys import selectors
from apps.journeys.graph import JourneyError
from apps.journeys.models import Enrollment, Journey, JourneyVersion
from apps.journeys.services import (
    journey_archive,
    journey_draft_save,
    journey_import,
    journey_pause,
    journey_publish,
    journey_resume,
)

from .conftest import BASE_FILE, T0

pytestmark = pytest.mark.django_db


@pytest.fixture
def enroll(db):
    """enroll(journey, node, n=1, next_run_at=...) -> active enrollments on the
    journey's live version, each for a new customer, at `node`."""
    counter = iter(range(1, 10_000))

    def make(journey, node, n=1, *, next_run_at=T0 + timedelta(days=1), version=None, **fields):
        rows = []
        for _ in range(n):
            i = next(counter)
            customer = Customer.objects.create(external_id=f"c-{node}-{i}-{journey.pk}")
            rows.append(
                Enrollment.objects.create(
                    journey=journey,
                    journey_version=version or journey.live_version,
                    customer=customer,
                    current_node=node,
                    next_run_at=next_run_at,
                    entered_at=T0,
                    **fields,
                )
            )
        return rows

    return make


def second_version(**changes) -> dict:
    """The base file with `wait1` renamed `pause` (and a shorter wait)."""
    data = copy.deepcopy(BASE_FILE)
    data.update(changes)
    data["nodes"][0]["next"] = "pause"
    data["nodes"][1] = {"id": "pause", "type": "wait", "duration": {"days": 1}, "next": "check"}
    return data


# --- publishing ------------------------------------------------------------------------


def test_publishing_makes_the_next_version_live(make_journey, now):
    journey = make_journey(publish=False)
    assert journey.status == Journey.Status.DRAFT
    user = get_user_model().objects.create_user("marketer")
    version = journey_publish(journey, now=now, user=user)
    assert (version.number, version.published_at, version.published_by) == (1, now, user)
    assert version.definition == journey.draft
    journey.refresh_from_db()
    assert (journey.status, journey.live_version_id) == (Journey.Status.LIVE, version.pk)

    journey_draft_save(journey, second_version())
    later = journey_publish(journey, now=now + timedelta(hours=1))
    assert later.number == 2
    journey.refresh_from_db()
    assert journey.live_version == later
    assert JourneyVersion.objects.get(number=1).definition["nodes"][1]["id"] == "wait1"


def test_publishing_an_unchanged_draft_creates_no_version(make_journey, now):
    journey = make_journey()
    assert journey_publish(journey, now=now).number == 1
    assert journey.versions.count() == 1


def test_a_published_version_refuses_a_changed_definition(make_journey):
    version = make_journey().live_version
    version.definition = {**version.definition, "name": "Edited in place"}
    with pytest.raises(JourneyError, match="published and immutable"):
        version.save()
    version.refresh_from_db()
    assert version.definition["name"] == "Onboarding"
    version.save()  # saving it unchanged is fine


def test_publishing_rechecks_the_draft_against_current_templates(make_journey, now):
    journey = make_journey(publish=False)
    from apps.messaging.models import Template

    Template.objects.filter(slug="welcome").delete()
    with pytest.raises(JourneyError) as info:
        journey_publish(journey, now=now)
    assert info.value.errors == [("nodes[welcome].template", "unknown template 'welcome'")]
    assert not JourneyVersion.objects.exists()


def test_an_archived_journey_cannot_be_published(make_journey, now):
    journey = make_journey()
    journey_archive(journey, now=now)
    with pytest.raises(JourneyError, match="archived journey cannot be published"):
        journey_publish(journey, now=now)


def test_publishing_a_paused_journey_keeps_it_paused(make_journey, now):
    journey = make_journey()
    journey_pause(journey, now=now)
    journey_import(second_version(), now=now, publish=True)
    journey.refresh_from_db()
    assert journey.status == Journey.Status.PAUSED
    assert journey.live_version.number == 2


# --- in-flight customers ---------------------------------------------------------------


def test_in_flight_enrollments_stay_on_their_version_by_default(make_journey, enroll, now):
    journey = make_journey()
    [waiting] = enroll(journey, "wait1")
    journey_import(second_version(), now=now, publish=True)
    waiting.refresh_from_db()
    assert (waiting.journey_version.number, waiting.current_node) == (1, "wait1")


def test_a_mapping_moves_enrollments_at_their_next_step(make_journey, enroll, now):
    journey = make_journey()
    due = T0 + timedelta(hours=5)
    waiting = enroll(journey, "wait1", 2, next_run_at=due)
    [branching] = enroll(journey, "check")
    [finished] = enroll(journey, "done", state=Enrollment.State.COMPLETED)
    [unstarted] = enroll(journey, "")
    journey_draft_save(journey, second_version())
    version = journey_publish(journey, now=now, migrate={"mapping": {"wait1": "pause"}})
    assert version.migrated == 4
    unstarted.refresh_from_db()
    assert (unstarted.journey_version, unstarted.current_node) == (version, "")
    for enrollment in waiting:
        enrollment.refresh_from_db()
        assert (enrollment.journey_version, enrollment.current_node) == (version, "pause")
        assert enrollment.next_run_at == due
    branching.refresh_from_db()
    assert (branching.journey_version, branching.current_node) == (version, "check")
    finished.refresh_from_db()
    assert finished.journey_version.number == 1  # history is not rewritten


def test_a_mapping_must_place_every_occupied_node(make_journey, enroll, now):
    journey = make_journey()
    enroll(journey, "wait1", 3)
    enroll(journey, "check")
    journey_draft_save(journey, second_version())
    with pytest.raises(JourneyError) as info:
        journey_publish(journey, now=now, migrate={"mapping": {}})
    assert info.value.errors == [
        (
            "migrate.mapping[wait1]",
            "3 enrollment(s) are at 'wait1', which the new version does not have: "
            "map it to one of its nodes",
        )
    ]
    assert journey.versions.count() == 1  # nothing published


def test_a_mapping_to_a_node_the_new_version_lacks_is_refused(make_journey, enroll, now):
    journey = make_journey()
    enroll(journey, "wait1")
    journey_draft_save(journey, second_version())
    with pytest.raises(JourneyError) as info:
        journey_publish(journey, now=now, migrate={"mapping": {"wait1": "paws"}})
    assert info.value.errors == [
        ("migrate.mapping[wait1]", "unknown node 'paws' in the new version")
    ]


def test_a_malformed_migrate_argument_is_refused(make_journey, now):
    journey = make_journey()
    with pytest.raises(JourneyError, match='must be \\{"mapping"'):
        journey_publish(journey, now=now, migrate={"map": {}})
    with pytest.raises(JourneyError, match="must be strings"):
        journey_publish(journey, now=now, migrate={"mapping": {"a": 1}})


def test_migration_refuses_while_the_engine_holds_enrollments(make_journey, enroll, now):
    journey = make_journey()
    enroll(journey, "wait1")
    [held] = enroll(journey, "check", lease_until=now + timedelta(seconds=30), lease_token="t")
    journey_draft_save(journey, second_version())
    with pytest.raises(JourneyError, match="1 enrollment\\(s\\) are being advanced right now"):
        journey_publish(journey, now=now, migrate={"mapping": {"wait1": "pause"}})
    assert journey.versions.count() == 1
    assert Enrollment.objects.filter(journey_version__number=1).count() == 2
    # Once the claim has expired, the move goes through.
    later = now + timedelta(minutes=1)
    version = journey_publish(journey, now=later, migrate={"mapping": {"wait1": "pause"}})
    held.refresh_from_db()
    assert held.journey_version == version


# --- pause, resume, archive ------------------------------------------------------------------


def test_pause_and_resume_keep_due_times(make_journey, enroll, now):
    journey = make_journey()
    due = now + timedelta(hours=2)
    [waiting] = enroll(journey, "wait1", next_run_at=due)
    journey_pause(journey, now=now)
    journey.refresh_from_db()
    assert (journey.status, journey.paused_at) == (Journey.Status.PAUSED, now)
    with pytest.raises(JourneyError, match="only a live journey can be paused \\(it is paused\\)"):
        journey_pause(journey, now=now)
    journey_resume(journey, now=now + timedelta(days=3))
    journey.refresh_from_db()
    assert (journey.status, journey.paused_at) == (Journey.Status.LIVE, None)
    waiting.refresh_from_db()
    assert waiting.next_run_at == due
    with pytest.raises(JourneyError, match="only a paused journey can be resumed"):
        journey_resume(journey, now=now)


def test_a_draft_cannot_be_paused(make_journey, now):
    with pytest.raises(JourneyError, match="it is draft"):
        journey_pause(make_journey(publish=False), now=now)


def test_archive_ends_active_enrollments_as_exited(make_journey, enroll, now):
    journey = make_journey()
    active = enroll(journey, "wait1", 2, lease_until=now, lease_token="x")
    [converted] = enroll(journey, "done", state=Enrollment.State.CONVERTED)
    assert journey_archive(journey, now=now) == 2
    journey.refresh_from_db()
    assert journey.status == Journey.Status.ARCHIVED
    for enrollment in active:
        enrollment.refresh_from_db()
        assert enrollment.state == Enrollment.State.EXITED
        assert enrollment.exit_reason == "journey archived"
        assert (enrollment.finished_at, enrollment.next_run_at, enrollment.lease_token) == (
            now,
            None,
            "",
        )
    converted.refresh_from_db()
    assert converted.state == Enrollment.State.CONVERTED
    with pytest.raises(JourneyError, match="already archived"):
        journey_archive(journey, now=now)


# --- staleness on resume ------------------------------------------------------------------------


def test_a_send_due_longer_ago_than_the_staleness_is_stale(make_journey, enroll, now):
    journey = make_journey()
    [enrollment] = enroll(journey, "nudge", next_run_at=now - timedelta(hours=25))
    assert selectors.is_stale(enrollment, now=now)
    enrollment.next_run_at = now - timedelta(hours=23)
    assert not selectors.is_stale(enrollment, now=now)
    enrollment.next_run_at = None
    assert not selectors.is_stale(enrollment, now=now)


@override_settings(JOURNEY_RESUME_STALENESS=3600)
def test_the_staleness_is_a_setting_in_seconds_or_a_timedelta(make_journey, enroll, now):
    journey = make_journey()
    [enrollment] = enroll(journey, "nudge", next_run_at=now - timedelta(hours=2))
    assert selectors.is_stale(enrollment, now=now)
    with override_settings(JOURNEY_RESUME_STALENESS=timedelta(hours=3)):
        assert not selectors.is_stale(enrollment, now=now)


def test_where_enrollments_are_is_counted_per_version_and_node(make_journey, enroll, now):
    journey = make_journey()
    enroll(journey, "wait1", 2)
    version_one = journey.live_version
    journey_import(second_version(), now=now, publish=True)
    journey.refresh_from_db()
    enroll(journey, "pause")
    enroll(journey, "check", version=version_one)
    assert selectors.active_enrollments_by_node(journey) == [
        {"version": 1, "node": "check", "count": 1},
        {"version": 1, "node": "wait1", "count": 2},
        {"version": 2, "node": "pause", "count": 1},
    ]
    assert selectors.journeys_for_admin().get(pk=journey.pk).active_count == 4


def test_a_version_graph_is_parsed_once_and_follows_its_definition(make_journey):
    version = make_journey().live_version
    first = selectors.version_definition(version)
    assert selectors.version_definition(version) is first
    assert first.successors("welcome") == ["wait1"]
