"""`{"nps": "promoter|passive|detractor", "within_days": N}` in the condition
language: the customer's latest answer as of `now`, from the `nps_responded`
events surveys record. Hand-computed expectations, on both databases."""

from datetime import timedelta

import pytest

from apps.customers.models import Customer
from apps.customers.schemas import TrackIn
from apps.customers.services import ingest
from apps.segments.conditions import (
    ConditionError,
    customer_matches,
    segment_queryset,
    validate_definition,
)
from apps.surveys.services import survey_respond

from .conftest import T0

pytestmark = pytest.mark.django_db

NOW = T0


def answered(external_id: str, category: str, *, days_ago: float, seq: int = 0) -> None:
    """An nps_responded event as surveys records it (through ingest)."""
    at = NOW - timedelta(days=days_ago)
    ingest(
        [
            TrackIn(
                userId=external_id,
                event="nps_responded",
                properties={
                    "category": category,
                    "score": {"promoter": 9, "passive": 7}.get(category, 2),
                },
                timestamp=at,
                messageId=f"nps-test:{external_id}:{days_ago}:{seq}",
            )
        ],
        received_at=at,
        source="import",
    )


@pytest.fixture
def history(db):
    """
    promoter-now   promoter 10 days ago
    turned         detractor 100 days ago, promoter 5 days ago   -> promoter now
    soured         promoter 30 days ago, detractor 2 days ago    -> detractor now
    old-promoter   promoter 120 days ago
    passive        passive 1 day ago
    same-moment    detractor then passive, both 3 days ago       -> passive (later id)
    future         promoter 1 day *after* now                    -> nothing as of now
    silent         no answer
    """
    answered("promoter-now", "promoter", days_ago=10)
    answered("turned", "detractor", days_ago=100)
    answered("turned", "promoter", days_ago=5)
    answered("soured", "promoter", days_ago=30)
    answered("soured", "detractor", days_ago=2)
    answered("old-promoter", "promoter", days_ago=120)
    answered("passive", "passive", days_ago=1)
    answered("same-moment", "detractor", days_ago=3, seq=1)
    answered("same-moment", "passive", days_ago=3, seq=2)
    answered("future", "promoter", days_ago=-1)
    ingest([TrackIn(userId="silent", event="login", timestamp=NOW)], received_at=NOW)
    return {c.external_id: c.pk for c in Customer.objects.all()}


def members(definition) -> set[str]:
    return set(segment_queryset(definition, now=NOW).values_list("external_id", flat=True))


def test_promoters_are_those_whose_latest_answer_is_a_promoter(history):
    assert members({"nps": "promoter"}) == {"promoter-now", "turned", "old-promoter"}


def test_within_days_limits_to_recent_answers(history):
    assert members({"nps": "promoter", "within_days": 90}) == {"promoter-now", "turned"}
    assert members({"nps": "promoter", "within_days": 7}) == {"turned"}


def test_an_earlier_answer_in_the_window_does_not_count_once_changed(history):
    # soured was a promoter 30 days ago but answered detractor since.
    assert members({"nps": "detractor", "within_days": 90}) == {"soured"}
    assert members({"nps": "detractor"}) == {"soured"}


def test_passives_and_answers_at_the_same_moment(history):
    assert members({"nps": "passive"}) == {"passive", "same-moment"}


def test_answers_after_now_do_not_count(history):
    assert "future" not in members({"nps": "promoter"})
    later = NOW + timedelta(days=2)
    assert customer_matches({"nps": "promoter"}, history["future"], now=later)


def test_not_and_combinations_compile(history):
    no_answer = {"not": {"any": [{"nps": c} for c in ("promoter", "passive", "detractor")]}}
    assert members(no_answer) == {"future", "silent"}
    both = {
        "all": [
            {"nps": "promoter", "within_days": 90},
            {"event": "nps_responded", "op": "count_gte", "value": 2},
        ]
    }
    assert members(both) == {"turned"}


def test_one_customer_is_tested_the_same_way(history):
    for external_id, expected in {
        "promoter-now": True,
        "turned": True,
        "soured": False,
        "old-promoter": False,
        "silent": False,
    }.items():
        got = customer_matches(
            {"nps": "promoter", "within_days": 90}, history[external_id], now=NOW
        )
        assert got is expected, external_id


def test_a_real_answer_and_its_update_move_the_customer(invite, customer):
    invitation = invite(customer, at=NOW - timedelta(days=1))
    survey_respond(invitation=invitation, score=2, now=NOW - timedelta(hours=5))
    assert customer_matches({"nps": "detractor", "within_days": 90}, customer.pk, now=NOW)

    survey_respond(invitation=invitation, score=10, now=NOW - timedelta(hours=1))
    assert customer_matches({"nps": "promoter", "within_days": 90}, customer.pk, now=NOW)
    assert not customer_matches({"nps": "detractor"}, customer.pk, now=NOW)
    # As of before the update, the customer was still a detractor.
    assert customer_matches({"nps": "detractor"}, customer.pk, now=NOW - timedelta(hours=2))


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ({"nps": "fan"}, "condition: nps must be one of detractor, passive, promoter, got 'fan'"),
        ({"nps": ["promoter"]}, "condition: nps must be one of"),
        (
            {"nps": "promoter", "within_days": 0},
            "condition: within_days must be a whole number ≥ 1, got 0",
        ),
        (
            {"nps": "promoter", "within_days": "90"},
            "condition: within_days must be a whole number ≥ 1, got '90'",
        ),
        ({"nps": "promoter", "days": 9}, "condition: unknown key 'days' in a 'nps' condition"),
        ({"all": [{"nps": "promoter"}, {"nps": "x"}]}, "all[1]: nps must be one of"),
    ],
)
def test_invalid_nps_conditions_are_refused_naming_the_path(definition, message):
    with pytest.raises(ConditionError) as caught:
        validate_definition(definition)
    assert str(caught.value).startswith(message)


def test_a_valid_nps_condition_parses_in_both_contexts():
    for context in ("segment", "journey"):
        validate_definition({"nps": "detractor", "within_days": 30}, context=context)


def test_an_incremental_refresh_follows_answers_in_and_out_of_the_window(db, settings):
    """A segment of recent promoters: the first refresh is full; later ones
    test only the customers that may have changed (a new answer, an answer
    leaving the window) and agree with the condition."""
    settings.SEGMENT_FULL_REFRESH_EVERY_S = 30 * 86400
    from apps.segments.models import Segment
    from apps.segments.services import segment_refresh

    answered("early", "promoter", days_ago=5)
    answered("steady", "promoter", days_ago=1)
    answered("grump", "detractor", days_ago=1)
    segment = Segment.objects.create(
        slug="recent-promoters",
        name="Recent promoters",
        definition={"nps": "promoter", "within_days": 7},
    )
    ids = dict(Customer.objects.values_list("external_id", "pk"))

    first = segment_refresh(segment, now=NOW)
    assert first.mode == "full"
    assert set(first.entered_ids) == {ids["early"], ids["steady"]}

    # Three days on: early's answer (8 days old) left the window; grump changed its mind.
    later = NOW + timedelta(days=3)
    answered("grump", "promoter", days_ago=-2)  # given 2 days after NOW, before `later`
    second = segment_refresh(Segment.objects.get(pk=segment.pk), now=later)

    assert second.mode == "incremental", second.full_reason
    assert (set(second.entered_ids), set(second.exited_ids)) == ({ids["grump"]}, {ids["early"]})
    assert set(segment_queryset(segment.definition, now=later).values_list("pk", flat=True)) == {
        ids["steady"],
        ids["grump"],
    }
