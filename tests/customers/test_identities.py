"""Anonymous visitors, promotion and merging of profiles, and aliases, as
`ingest` stores them (the HTTP wire is tested in test_api*.py)."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import override_settings

from apps.customers.models import Customer, Event, EventStat
from apps.customers.schemas import AliasIn, IdentifyIn, PageIn, ScreenIn, TrackIn, parse_call
from apps.customers.services import anonymous_profiles_expire, ingest
from tests.conftest import stats_mismatches

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return NOW - timedelta(minutes=minutes)


def visit(anonymous_id: str, n: int, *, event: str = "viewed_pricing", start: int = 100) -> list:
    return [
        TrackIn(anonymousId=anonymous_id, event=event, timestamp=at(start - i)) for i in range(n)
    ]


def profile(**lookup) -> Customer:
    return Customer.objects.get(**lookup)


@pytest.mark.django_db
def test_a_visitor_with_only_an_anonymous_id_is_stored_as_an_anonymous_profile():
    ingest(visit("anon-1", 3), received_at=NOW)

    visitor = profile(anonymous_id="anon-1")
    assert visitor.external_id is None
    assert not visitor.is_known
    assert visitor.events.count() == 3
    assert not Customer.objects.known().exists()
    assert str(visitor) == "anonymous anon-1"


@pytest.mark.django_db
def test_a_visitor_who_signs_up_as_a_new_customer_becomes_that_customer_in_place():
    ingest(visit("anon-1", 3), received_at=NOW)
    before = profile(anonymous_id="anon-1").pk

    result = ingest(
        [IdentifyIn(userId="u-1", anonymousId="anon-1", traits={"plan": "trial"})],
        received_at=NOW,
    )

    customer = profile(external_id="u-1")
    assert customer.pk == before  # promoted: nothing moved
    assert customer.anonymous_id == "anon-1"
    assert customer.is_known
    assert customer.traits == {"plan": "trial"}
    assert customer.events.count() == 3
    assert result.customers_created == 0
    assert result.profiles_merged == 0
    assert Customer.objects.count() == 1


@pytest.mark.django_db
def test_a_visitor_who_logs_in_as_a_known_customer_is_merged_into_it():
    ingest(
        [
            IdentifyIn(userId="u-1", traits={"plan": "pro", "email": "ann@example.com"}),
            TrackIn(userId="u-1", event="login", timestamp=at(500)),
            TrackIn(userId="u-1", event="viewed_pricing", timestamp=at(400)),
        ],
        received_at=NOW - timedelta(hours=10),
    )
    ingest(
        [
            IdentifyIn(anonymousId="anon-1", traits={"plan": "free", "utm_source": "ads"}),
            *visit("anon-1", 4),
        ],
        received_at=NOW,
    )

    result = ingest([IdentifyIn(userId="u-1", anonymousId="anon-1")], received_at=NOW)

    assert result.profiles_merged == 1
    customer = profile(external_id="u-1")
    visitor = profile(anonymous_id="anon-1")
    assert visitor.merged_into_id == customer.pk
    assert visitor.merged_at == NOW
    assert not visitor.events.exists()
    assert customer.events.count() == 6
    # The customer's own traits win; those it lacked are kept.
    assert customer.traits == {"plan": "pro", "email": "ann@example.com", "utm_source": "ads"}
    stat = EventStat.objects.get(customer=customer, name="viewed_pricing")
    assert stat.count == 5
    assert stat.first_at == at(400)
    assert stat.last_at == at(97)
    assert stats_mismatches() == []
    assert list(Customer.objects.known()) == [customer]


@pytest.mark.django_db(transaction=True)  # stamps are transaction ids
def test_a_merge_stamps_the_customer_and_the_profile_for_the_next_segment_refresh():
    ingest([IdentifyIn(userId="u-1")], received_at=NOW)
    ingest(visit("anon-1", 2), received_at=NOW)
    ingest([IdentifyIn(userId="u-2")], received_at=NOW)
    before = dict(Customer.objects.values_list("pk", "touched_seq"))

    ingest([IdentifyIn(userId="u-1", anonymousId="anon-1")], received_at=NOW - timedelta(days=1))

    after = Customer.objects.values_list("pk", "external_id", "anonymous_id", "touched_seq")
    changed = {(eid, anon) for pk, eid, anon, stamp in after if before[pk] != stamp}
    assert changed == {("u-1", None), (None, "anon-1")}


@pytest.mark.django_db
def test_calls_for_a_merged_visitor_land_on_the_customer_it_became():
    ingest([IdentifyIn(userId="u-1")], received_at=NOW)
    ingest(visit("anon-1", 1), received_at=NOW)
    ingest([TrackIn(userId="u-1", anonymousId="anon-1", event="login")], received_at=NOW)

    ingest(visit("anon-1", 2, event="later"), received_at=NOW)

    customer = profile(external_id="u-1")
    assert customer.events.filter(name="later").count() == 2
    assert Customer.objects.filter(merged_into__isnull=True).count() == 1


@pytest.mark.django_db
def test_a_merge_repeated_changes_nothing():
    ingest([IdentifyIn(userId="u-1")], received_at=NOW)
    ingest(visit("anon-1", 3), received_at=NOW)
    call = IdentifyIn(userId="u-1", anonymousId="anon-1")
    ingest([call], received_at=NOW)
    snapshot = sorted(Event.objects.values_list("id", "customer_id"))

    again = ingest([call], received_at=NOW)

    assert again.profiles_merged == 0
    assert sorted(Event.objects.values_list("id", "customer_id")) == snapshot
    assert stats_mismatches() == []


@pytest.mark.django_db
def test_every_call_of_a_batch_lands_on_the_customer_the_batch_says_the_visitor_is():
    ingest([IdentifyIn(userId="u-1")], received_at=NOW)

    ingest(
        [
            TrackIn(anonymousId="anon-1", event="a", timestamp=at(3)),
            IdentifyIn(userId="u-1", anonymousId="anon-1"),
            TrackIn(anonymousId="anon-1", event="b", timestamp=at(1)),
        ],
        received_at=NOW,
    )

    customer = profile(external_id="u-1")
    assert sorted(customer.events.values_list("name", flat=True)) == ["a", "b"]
    assert not Customer.objects.filter(external_id__isnull=True, merged_into__isnull=True).exists()


@pytest.mark.django_db
def test_an_alias_merges_the_previous_user_id_and_its_later_calls_follow():
    ingest(
        [IdentifyIn(userId="old-1", traits={"plan": "pro"}), TrackIn(userId="old-1", event="x")],
        received_at=NOW,
    )
    ingest([IdentifyIn(userId="new-1", traits={"email": "a@example.com"})], received_at=NOW)

    ingest([AliasIn(previousId="old-1", userId="new-1")], received_at=NOW)
    ingest([TrackIn(userId="old-1", event="y")], received_at=NOW)

    new = profile(external_id="new-1")
    assert profile(external_id="old-1").merged_into == new
    assert sorted(new.events.values_list("name", flat=True)) == ["x", "y"]
    assert new.traits == {"email": "a@example.com", "plan": "pro"}
    assert new.email == "a@example.com"
    assert stats_mismatches() == []


@pytest.mark.django_db
def test_an_alias_to_a_new_user_id_promotes_an_anonymous_previous_profile():
    ingest(visit("anon-9", 2), received_at=NOW)

    ingest([AliasIn(previousId="anon-9", userId="u-9")], received_at=NOW)

    customer = profile(external_id="u-9")
    assert customer.anonymous_id == "anon-9"
    assert customer.events.count() == 2


@pytest.mark.django_db
def test_a_visitor_id_seen_first_with_a_new_customer_keeps_resolving_to_it():
    ingest([TrackIn(userId="u-1", anonymousId="anon-1", event="signed_up")], received_at=NOW)

    ingest(visit("anon-1", 1), received_at=NOW)

    assert profile(external_id="u-1").events.count() == 2
    assert Customer.objects.count() == 1


@pytest.mark.django_db
def test_an_anonymous_id_already_known_as_another_customer_does_not_merge_two_customers():
    ingest([TrackIn(userId="u-1", anonymousId="shared-laptop", event="login")], received_at=NOW)

    ingest([TrackIn(userId="u-2", anonymousId="shared-laptop", event="login")], received_at=NOW)

    assert set(Customer.objects.known().values_list("external_id", flat=True)) == {"u-1", "u-2"}
    assert profile(external_id="u-2").events.count() == 1


@pytest.mark.django_db
def test_the_merged_profiles_active_enrollments_end_as_merged(make_journey_for_merge):
    journey, old = make_journey_for_merge
    ingest([IdentifyIn(userId="new-1")], received_at=NOW)

    ingest([AliasIn(previousId=old.external_id, userId="new-1")], received_at=NOW)

    enrollment = old.enrollments.get(journey=journey)
    assert enrollment.state == "exited"
    assert enrollment.exit_reason == "merged"
    assert enrollment.steps.get(node_id="(merged)").detail == "merged"


@pytest.fixture
def make_journey_for_merge(db):
    from apps.journeys.enrollment import enrollments_start
    from apps.journeys.models import Journey
    from apps.journeys.services import journey_import

    ingest([IdentifyIn(userId="old-1", traits={"email": "old@example.com"})], received_at=NOW)
    old = profile(external_id="old-1")
    journey = journey_import(
        {
            "slug": "merge-test",
            "name": "Merge test",
            "trigger": {"type": "event", "event": "signed_up"},
            "start": "wait",
            "nodes": [
                {"id": "wait", "type": "wait", "duration": {"days": 3}, "next": "done"},
                {"id": "done", "type": "exit"},
            ],
        },
        publish=True,
        now=NOW,
    )
    journey = Journey.objects.get(pk=journey.pk)
    assert enrollments_start(journey=journey, customer_ids=[old.pk], now=NOW) == 1
    return journey, old


@pytest.mark.django_db
def test_anonymous_visitors_and_merged_profiles_are_never_enrolled(make_journey_for_merge):
    from apps.journeys.enrollment import enrollments_start

    journey, old = make_journey_for_merge
    ingest(visit("anon-1", 1), received_at=NOW)
    ingest([IdentifyIn(userId="new-1")], received_at=NOW)
    ingest([AliasIn(previousId="old-1", userId="new-1")], received_at=NOW)
    visitor = profile(anonymous_id="anon-1")

    started = enrollments_start(journey=journey, customer_ids=[visitor.pk, old.pk], now=NOW)

    assert started == 0


@pytest.mark.django_db
def test_page_and_screen_calls_become_view_events_with_their_name_and_path():
    ingest(
        [
            parse_call(
                {
                    "type": "page",
                    "anonymousId": "anon-1",
                    "name": "Pricing",
                    "category": "Marketing",
                    "properties": {"url": "https://example.com/pricing?plan=pro", "title": "P"},
                }
            ),
            ScreenIn(userId="u-1", name="Home", properties=None),
        ],
        received_at=NOW,
    )

    page = Event.objects.get(name="page_viewed")
    assert page.properties == {
        "url": "https://example.com/pricing?plan=pro",
        "title": "P",
        "name": "Pricing",
        "category": "Marketing",
        "path": "/pricing",
    }
    assert Event.objects.get(name="screen_viewed").properties == {"name": "Home"}
    assert isinstance(PageIn(userId="u", event="hacked"), TrackIn)
    assert PageIn(userId="u", event="hacked").event == "page_viewed"


@pytest.mark.django_db
def test_context_keeps_what_marketing_uses_and_never_the_ip_and_fills_empty_columns():
    context = {
        "ip": "203.0.113.9",
        "location": {"city": "Lyon"},
        "locale": "fr-FR",
        "timezone": "Europe/Paris",
        "userAgent": "Mozilla/5.0",
        "campaign": {"source": "newsletter", "medium": "email"},
    }
    ingest([IdentifyIn(userId="u-2", traits={"timezone": "America/New_York"})], received_at=NOW)

    ingest(
        [
            TrackIn(userId="u-1", event="login", context=context),
            TrackIn(userId="u-2", event="login", context=context),
        ],
        received_at=NOW,
    )

    event = Event.objects.filter(customer__external_id="u-1").get()
    assert event.context == {
        "locale": "fr-FR",
        "timezone": "Europe/Paris",
        "userAgent": "Mozilla/5.0",
        "campaign": {"source": "newsletter", "medium": "email"},
    }
    filled = profile(external_id="u-1")
    assert (filled.timezone, filled.locale) == ("Europe/Paris", "fr-FR")
    assert filled.traits == {"timezone": "Europe/Paris", "locale": "fr-FR"}
    kept = profile(external_id="u-2")
    assert (kept.timezone, kept.locale) == ("America/New_York", "fr-FR")


def test_sent_at_corrects_the_clients_clock():
    now = datetime.now(UTC)
    # The client's clock runs two days fast: its times and its sentAt both.
    call = parse_call(
        {
            "type": "track",
            "userId": "u-1",
            "event": "login",
            "timestamp": (now + timedelta(days=2, minutes=-5)).isoformat(),
            "sentAt": (now + timedelta(days=2)).isoformat(),
        }
    )

    assert abs(call.timestamp - (now - timedelta(minutes=5))) < timedelta(seconds=5)


def test_a_call_without_any_id_or_with_an_alias_to_itself_is_refused():
    with pytest.raises(ValueError, match="userId: one of userId and anonymousId is required"):
        parse_call({"type": "page", "name": "Home"})
    with pytest.raises(ValueError, match="previousId: must differ from userId"):
        parse_call({"type": "alias", "userId": "u", "previousId": "u"})
    with pytest.raises(ValueError, match="groupId: Field required"):
        parse_call({"type": "group", "userId": "u", "traits": {}})


def test_the_fields_segment_sdks_send_are_accepted_with_explicit_nulls():
    call = parse_call(
        {
            "type": "track",
            "event": "login",
            "userId": None,
            "anonymousId": "a-1",
            "properties": None,
            "context": None,
            "integrations": {"All": True},
            "_metadata": {"bundled": []},
            "channel": "server",
            "writeKey": "tk_x",
            "messageId": None,
            "timestamp": None,
            "originalTimestamp": "2026-11-02T11:00:00Z",
        }
    )

    assert call.properties == {}
    assert call.timestamp == datetime(2026, 11, 2, 11, 0, tzinfo=UTC)


@pytest.mark.django_db
def test_anonymous_visitors_past_their_time_to_live_are_deleted_with_their_events():
    days = 24 * 60
    ingest(visit("old-visitor", 2, start=40 * days), received_at=NOW - timedelta(days=40))
    ingest(visit("recent-visitor", 2, start=5 * days), received_at=NOW - timedelta(days=5))
    ingest(visit("signed-up", 2, start=40 * days), received_at=NOW - timedelta(days=40))
    ingest(
        [IdentifyIn(userId="u-1", anonymousId="signed-up")], received_at=NOW - timedelta(days=40)
    )

    with override_settings(ANONYMOUS_PROFILE_TTL_DAYS=30):
        deleted = anonymous_profiles_expire(now=NOW, chunk=1)

    assert deleted == 1
    assert not Customer.objects.filter(anonymous_id="old-visitor").exists()
    assert Customer.objects.filter(anonymous_id="recent-visitor").exists()
    assert profile(external_id="u-1").events.count() == 2
    assert Event.objects.count() == 4


# --- concurrency ---------------------------------------------------------------------------


def _concurrently(*work) -> list:
    """Run each function in its own thread and database connection, started
    together; returns their exceptions (None for success)."""
    barrier = threading.Barrier(len(work))
    errors: list = [None] * len(work)

    def run(i, fn):
        try:
            barrier.wait()
            fn()
        except Exception as exc:
            errors[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(work)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


@pytest.mark.django_db(transaction=True)
def test_two_identifies_racing_for_one_visitor_merge_it_once_and_lose_nothing():
    ingest([IdentifyIn(userId="u-1"), IdentifyIn(userId="u-2")], received_at=NOW)
    for round_ in range(5):
        anon = f"anon-{round_}"
        ingest(visit(anon, 20), received_at=NOW)

        errors = _concurrently(
            lambda a=anon: ingest([IdentifyIn(userId="u-1", anonymousId=a)], received_at=NOW),
            lambda a=anon: ingest([IdentifyIn(userId="u-2", anonymousId=a)], received_at=NOW),
        )

        assert errors == [None, None]
        visitor = profile(anonymous_id=anon)
        assert visitor.merged_into_id in {profile(external_id=u).pk for u in ("u-1", "u-2")}
        assert not visitor.events.exists()
    assert Event.objects.count() == 100
    assert stats_mismatches() == []


@pytest.mark.django_db(transaction=True)
def test_events_arriving_mid_merge_end_on_the_customer():
    ingest([IdentifyIn(userId="u-1")], received_at=NOW)
    for round_ in range(5):
        anon = f"anon-{round_}"
        ingest(visit(anon, 50), received_at=NOW)

        errors = _concurrently(
            lambda a=anon: ingest([IdentifyIn(userId="u-1", anonymousId=a)], received_at=NOW),
            *(
                lambda a=anon, i=i: ingest(visit(a, 1, event=f"mid-{i}"), received_at=NOW)
                for i in range(3)
            ),
        )

        assert errors == [None] * 4
        assert not profile(anonymous_id=anon).events.exists()
    assert profile(external_id="u-1").events.count() == 5 * 53
    assert stats_mismatches() == []
