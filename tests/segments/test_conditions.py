"""Every operator of the condition language against a hand-computed answer, on
whichever database the suite runs (make test runs it on both), in both of its
compiled forms: a segment (one query over everyone) and one customer at a time."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.utils import timezone

from apps.customers.models import Customer
from apps.customers.schemas import IdentifyIn, TrackIn
from apps.customers.services import ingest
from apps.segments.conditions import (
    ConditionError,
    customer_matches,
    parse,
    segment_queryset,
    validate_definition,
)
from apps.segments.models import Segment, SegmentMembership

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)

TRAITS = {
    "c1": {
        "plan": "pro", "mrr": 199, "seats": 12, "vip": True, "tags": ["beta", "eu"],
        "email": "ann@corp.example", "renewal_at": "2026-12-01T00:00:00Z",
        "signed_up_at": "2026-11-18",
    },
    "c2": {
        "plan": "starter", "mrr": 29, "vip": False, "tags": ["us"], "email": "bo@example.com",
        "renewal_at": "2026-11-25T10:00:00+02:00", "nickname": None,
    },
    "c3": {"plan": "growth", "mrr": "79", "renewal_at": "not a date", "company": "Acme Pro"},
    "c4": {},
    "c5": {"plan": "pro", "mrr": 199.0, "renewal_at": "2026-02-30", "seats": "12"},
    "c6": {
        "plan": 5, "renewal_at": "2026-10-01T00:00:00Z", "signed_up_at": "2026-08-01T00:00:00Z",
    },
}  # fmt: skip

EVENTS = [
    ("c1", "login", -1), ("c1", "login", -2), ("c1", "login", -20), ("c1", "feature_used", -3),
    ("c2", "login", -20), ("c2", "login", -40),
    ("c3", "login", +1), ("c3", "login", -30),
    ("c5", "login", -5), ("c5", "login", -5), ("c5", "login", -5), ("c5", "login", -6),
    ("c6", "signed_up", -100),
]  # fmt: skip

ALL = set(TRAITS)


@pytest.fixture
def people():
    calls = [IdentifyIn(userId=c, traits=t) for c, t in TRAITS.items() if t]
    calls += [IdentifyIn(userId="c4", traits={})]
    calls += [
        TrackIn(userId=c, event=name, timestamp=NOW + days * DAY, messageId=f"{c}-{i}")
        for i, (c, name, days) in enumerate(EVENTS)
    ]
    ingest(calls, received_at=NOW)
    ids = dict(Customer.objects.values_list("external_id", "id"))
    assert set(ids) == ALL
    return ids


def members(definition, now=NOW) -> set[str]:
    return set(segment_queryset(definition, now=now).values_list("external_id", flat=True))


def one_by_one(definition, ids, now=NOW) -> set[str]:
    return {c for c, pk in ids.items() if customer_matches(definition, pk, now=now)}


CASES = [
    # traits: equality is typed (199 == 199.0, "79" is not 79), absent never matches
    ({"trait": "plan", "op": "eq", "value": "pro"}, {"c1", "c5"}),
    ({"trait": "plan", "op": "ne", "value": "pro"}, {"c2", "c3", "c6"}),
    ({"trait": "plan", "op": "in", "value": ["starter", "growth"]}, {"c2", "c3"}),
    ({"trait": "plan", "op": "not_in", "value": ["pro"]}, {"c2", "c3", "c6"}),
    ({"trait": "plan", "op": "eq", "value": 5}, {"c6"}),
    ({"trait": "mrr", "op": "eq", "value": 199}, {"c1", "c5"}),
    ({"trait": "mrr", "op": "eq", "value": "79"}, {"c3"}),
    ({"trait": "seats", "op": "eq", "value": 12}, {"c1"}),
    ({"trait": "vip", "op": "eq", "value": True}, {"c1"}),
    ({"trait": "vip", "op": "eq", "value": False}, {"c2"}),
    ({"trait": "vip", "op": "ne", "value": True}, {"c2"}),
    ({"trait": "mrr", "op": "in", "value": [29, "79"]}, {"c2", "c3"}),
    # a string never equals another type whose text is the same
    ({"trait": "seats", "op": "eq", "value": "12"}, {"c5"}),
    ({"trait": "seats", "op": "ne", "value": "12"}, {"c1"}),
    ({"trait": "vip", "op": "in", "value": ["true", "false"]}, set()),
    ({"trait": "tags", "op": "eq", "value": "beta"}, set()),
    ({"trait": "nickname", "op": "in", "value": ["null", "None"]}, set()),
    # ordering: numbers with numbers, strings with strings (byte order), times as times
    ({"trait": "mrr", "op": "gt", "value": 50}, {"c1", "c5"}),
    ({"trait": "mrr", "op": "gte", "value": 199}, {"c1", "c5"}),
    ({"trait": "mrr", "op": "lt", "value": 100}, {"c2"}),
    ({"trait": "mrr", "op": "lte", "value": 29.0}, {"c2"}),
    ({"trait": "plan", "op": "gt", "value": "p"}, {"c1", "c2", "c5"}),
    ({"trait": "signed_up_at", "op": "gt", "value": "2026-09-01"}, {"c1"}),
    ({"trait": "renewal_at", "op": "lt", "value": "2026-11-30T00:00:00Z"}, {"c2", "c6"}),
    ({"trait": "renewal_at", "op": "gte", "value": "2026-11-25T08:00:00Z"}, {"c1", "c2"}),
    # contains: case-sensitive substring of a string, or an element of an array
    ({"trait": "tags", "op": "contains", "value": "beta"}, {"c1"}),
    ({"trait": "email", "op": "contains", "value": "example.com"}, {"c2"}),
    ({"trait": "company", "op": "contains", "value": "Pro"}, {"c3"}),
    ({"trait": "company", "op": "contains", "value": "pro"}, set()),
    # presence: null counts as absent
    ({"trait": "plan", "op": "exists"}, {"c1", "c2", "c3", "c5", "c6"}),
    ({"trait": "plan", "op": "not_exists"}, {"c4"}),
    ({"trait": "nickname", "op": "exists"}, set()),
    ({"trait": "nickname", "op": "not_exists"}, ALL),
    # time traits relative to now; "not a date" and 2026-02-30 are never times
    ({"trait": "renewal_at", "op": "within_next", "days": 30}, {"c1", "c2"}),
    ({"trait": "renewal_at", "op": "within_next", "days": 7}, {"c2"}),
    ({"trait": "renewal_at", "op": "within_last", "days": 60}, {"c6"}),
    ({"trait": "renewal_at", "op": "before_days_ago", "days": 30}, {"c6"}),
    ({"trait": "signed_up_at", "op": "after_days_ago", "days": 7}, {"c1"}),
    ({"trait": "renewal_at", "op": "after_days_ago", "days": 0}, {"c1", "c2"}),
    # events as of now: c3's login tomorrow does not count yet
    ({"event": "login", "op": "since", "days": 14}, {"c1", "c5"}),
    ({"event": "login", "op": "not_since", "days": 14}, {"c2", "c3", "c4", "c6"}),
    ({"event": "feature_used", "op": "since", "days": 7}, {"c1"}),
    ({"event": "login", "op": "count_gte", "value": 2, "within_days": 7}, {"c1", "c5"}),
    ({"event": "login", "op": "count_gte", "value": 3}, {"c1", "c5"}),
    ({"event": "login", "op": "count_gte", "value": 2}, {"c1", "c2", "c5"}),
    ({"event": "login", "op": "count_lt", "value": 2}, {"c3", "c4", "c6"}),
    ({"event": "login", "op": "count_lt", "value": 1, "within_days": 30}, {"c3", "c4", "c6"}),
    ({"event": "login", "op": "count_gte", "value": 0}, ALL),
    ({"event": "login", "op": "count_lt", "value": 0}, set()),
    # trend: over 14 days c2 went 1 → 0 (c1 rose, c5 had none before); over 3 days c5 went 3 → 0
    ({"event": "login", "op": "dropped_by", "percent": 50, "days": 14}, {"c2"}),
    ({"event": "login", "op": "dropped_by", "percent": 100, "days": 14}, {"c2"}),
    ({"event": "login", "op": "dropped_by", "percent": 50, "days": 3}, {"c5"}),
    # composition; not of a comparison on an absent trait matches
    ({"not": {"trait": "plan", "op": "eq", "value": "pro"}}, {"c2", "c3", "c4", "c6"}),
    (
        {"all": [{"trait": "plan", "op": "eq", "value": "pro"},
                 {"event": "login", "op": "since", "days": 3}]},
        {"c1"},
    ),
    (
        {"any": [{"trait": "vip", "op": "eq", "value": False},
                 {"event": "signed_up", "op": "since", "days": 365}]},
        {"c2", "c6"},
    ),
    (
        {"all": [{"trait": "plan", "op": "exists"},
                 {"not": {"any": [{"trait": "mrr", "op": "gt", "value": 100},
                                  {"event": "login", "op": "since", "days": 30}]}}]},
        {"c3", "c6"},
    ),
]  # fmt: skip


@pytest.mark.parametrize(("definition", "expected"), CASES, ids=lambda x: str(x)[:70])
def test_each_operator_matches_the_hand_computed_customers(people, definition, expected):
    assert members(definition) == expected
    assert one_by_one(definition, people) == expected


def test_a_segment_is_one_query(people, django_assert_num_queries):
    definition = {
        "all": [
            {"trait": "plan", "op": "in", "value": ["pro", "starter"]},
            {"event": "login", "op": "count_gte", "value": 2, "within_days": 30},
            {"not": {"event": "login", "op": "since", "days": 2}},
        ]
    }
    qs = segment_queryset(definition, now=NOW)

    with django_assert_num_queries(1):
        assert set(qs.values_list("external_id", flat=True)) == {"c5"}


def test_nested_segments_and_static_lists(people):
    Segment.objects.create(
        slug="pros", name="Pros", definition={"trait": "plan", "op": "eq", "value": "pro"}
    )
    static = Segment.objects.create(slug="vips", name="VIPs", kind=Segment.Kind.STATIC)
    SegmentMembership.objects.create(segment=static, customer_id=people["c2"], entered_at=NOW)
    SegmentMembership.objects.create(
        segment=static, customer_id=people["c3"], entered_at=NOW - 9 * DAY, exited_at=NOW - DAY
    )

    assert members({"segment": "pros"}) == {"c1", "c5"}
    assert members({"segment": "vips"}) == {"c2"}
    assert members({"any": [{"segment": "pros"}, {"segment": "vips"}]}) == {"c1", "c2", "c5"}
    assert one_by_one({"not": {"segment": "vips"}}, people) == ALL - {"c2"}


def test_since_enrolled_counts_events_from_the_enrollment_on(people):
    definition = {"event": "login", "op": "since_enrolled"}

    def matches(external_id, enrolled_days_ago):
        return customer_matches(
            definition, people[external_id], now=NOW, enrolled_at=NOW - enrolled_days_ago * DAY
        )

    assert matches("c2", 25) is True
    assert matches("c2", 10) is False
    assert matches("c3", 10) is False  # its login is tomorrow: not yet


def test_time_relative_conditions_move_with_the_clock(people):
    definition = {"trait": "renewal_at", "op": "within_next", "days": 7}

    with time_machine.travel(NOW, tick=False):
        today = members(definition, now=timezone.now())
    with time_machine.travel(NOW + 5 * DAY, tick=False):
        in_five_days = members(definition, now=timezone.now())

    assert today == {"c2"}
    assert in_five_days == {"c1"}  # c2's renewal has passed, c1's comes within a week


def test_events_after_now_count_once_now_reaches_them(people):
    definition = {"event": "login", "op": "since", "days": 14}

    assert "c3" not in members(definition, now=NOW)
    assert "c3" in members(definition, now=NOW + 2 * DAY)
    assert members({"event": "login", "op": "count_gte", "value": 2}, now=NOW + 2 * DAY) == {
        "c1", "c2", "c3", "c5",
    }  # fmt: skip


# --- validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        (
            {"all": [{"trait": "a", "op": "exists"}, {"trait": "b", "op": "exists"},
                     {"any": [{"trait": "plan", "op": "eqq", "value": "x"}]}]},
            "all[2].any[0]: unknown op 'eqq'; use one of ",
        ),
        ({"trait": "plan", "op": "in", "value": "pro"},
         "condition: 'in' needs a non-empty list as its value, got a string"),
        ({"trait": "renewal_at", "op": "within_next", "days": "30"},
         "condition: days must be a whole number ≥ 0, got '30'"),
        ({"event": "login", "op": "since", "days": 0},
         "condition: days must be a whole number ≥ 1, got 0"),
        ({"event": "login", "op": "since", "days": 10**30},
         "condition: days must be at most 36,600, got 1000000000000000000000000000000"),
        ({"trait": "renewal_at", "op": "within_last", "days": 10**6},
         "condition: days must be at most 36,600, got 1000000"),
        ({"event": "login", "op": "count_gte", "value": 2**63},
         "condition: value must be at most 2,147,483,647, got 9223372036854775808"),
        ({"trait": "plan", "op": "contains", "value": 2**63},
         "condition.value: a whole number must be within ±9,223,372,036,854,775,807"),
        ({"trait": "mrr", "op": "in", "value": [1, float("nan")]},
         "condition.value[1]: must be a finite number, got nan"),
        ({"trait": "plan", "op": "contains", "value": "\x00"},
         "condition.value: contains a NUL character"),
        ({"trait": "plan", "op": "in", "value": ["a", "\ud800"]},
         "condition.value[1]: contains a lone surrogate"),
        ({"event": "lo\x00gin", "op": "since", "days": 3},
         "condition.event: contains a NUL character"),
        ({"segment": "\x00"}, "condition: segment must be a segment's slug, got '\\x00'"),
        ({"trait": "plan", "op": "eq", "vlaue": "pro"},
         "condition: unknown key 'vlaue' in a 'trait' condition"),
        ({"trait": "plan", "op": "eq"}, "condition: 'eq' needs a value"),
        ({"trait": "plan", "op": "eq", "value": None},
         "condition.value: null is not a value; use 'exists' or 'not_exists'"),
        ({"trait": "mrr", "op": "gt", "value": True},
         "condition.value: a true/false value cannot be ordered"),
        ({"trait": "plan", "op": "exists", "value": 1}, "condition: 'exists' takes no 'value'"),
        ({"trait": "plan name", "op": "exists"},
         "condition: trait must be a name of letters, digits, _ or -, got 'plan name'"),
        ({"event": "login", "op": "count_gte"},
         "condition: value must be a whole number ≥ 0, got None"),
        ({"event": "login"}, "condition: needs an op, one of count_gte, count_lt, dropped_by"),
        ({"event": "login", "op": "dropped_by", "percent": 150, "days": 7},
         "condition: percent must be at most 100, got 150"),
        ({"not": [{"trait": "plan", "op": "exists"}]},
         "not: must be an object like {\"trait\": …}, got a list"),
        ({"all": []}, "condition: all must be a non-empty list of conditions"),
        ({"trait": "plan", "event": "login"},
         "condition: needs exactly one of all, any, not, trait, event, segment, nps, account; "
         "found 'trait', 'event'"),
        ("plan = pro", "condition: must be an object"),
        ({"nps": "fans", "within_days": 90},
         "condition: nps must be one of detractor, passive, promoter, got 'fans'"),
        ({"event": "activated", "op": "since_enrolled"},
         "condition: 'since_enrolled' only works in a journey's branches and goals"),
        ({"any": [{"trait": "plan", "op": "exists"}, {"segment": "nope"}]},
         "any[1]: unknown segment 'nope'"),
    ],
)  # fmt: skip
def test_invalid_definitions_are_refused_naming_the_path(definition, message):
    with pytest.raises(ConditionError) as refused:
        validate_definition(definition)

    assert str(refused.value).startswith(message)


def test_since_enrolled_is_accepted_in_a_journey_context():
    parse({"event": "activated", "op": "since_enrolled"}, context="journey")


def test_segment_cycles_are_refused():
    Segment.objects.create(slug="a", name="A", definition={"segment": "b"})
    Segment.objects.create(slug="b", name="B", definition={"trait": "plan", "op": "exists"})

    validate_definition({"segment": "a"}, slug="c")  # fine: c → a → b
    with pytest.raises(ConditionError, match=r"refers back to itself \(b → a → b\)"):
        validate_definition({"segment": "a"}, slug="b")
    with pytest.raises(ConditionError, match=r"all\[0\]: segment 'a' refers back"):
        validate_definition({"all": [{"segment": "a"}]}, slug="a")
    # found inside segment a, reported where the edited tree refers to a
    with pytest.raises(ConditionError, match=r"^any\[1\]: segment 'b' refers back"):
        validate_definition({"any": [{"trait": "x", "op": "exists"}, {"segment": "a"}]}, slug="b")
