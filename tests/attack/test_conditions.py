"""The condition language (apps/segments/conditions.py) against generated
trees: each is either refused with a ConditionError naming the path of the
bad node, or compiles and evaluates, as a segment (one query) and for one
customer, without any other exception. The customers it runs over have
traits of every JSON type and events."""

import re
from datetime import UTC, datetime

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from apps.customers.schemas import IdentifyIn, TrackIn
from apps.customers.services import ingest
from apps.segments.conditions import (
    COMPARE_OPS,
    COUNT_OPS,
    DATE_OPS,
    NPS_CATEGORIES,
    PRESENCE_OPS,
    RECENCY_OPS,
    ConditionError,
    customer_matches,
    segment_queryset,
)
from apps.segments.models import Segment
from tests.attack.conftest import rolled_back, shows

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
# "condition: …", "all[2].not: …", "any[0].value[1]: …"
PATH = re.compile(
    r"^(condition|((all|any)\[\d+\]|not)(\.((all|any)\[\d+\]|not))*)(\.value(\[\d+\])?)?: "
)

TRAITS = ["plan", "mrr", "tags", "renewal_at", "nested", "nothing", "missing", "a-b_9"]
EVENT_NAMES = ["signed_up", "activated", "nps_responded", "x" * 200, "\x00", ""]
odd_numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 10**9, 2**31, 2**63, 10**20]),
)
odd_texts = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["2026-11-01", "2026-02-30T00:00:00Z", "9999-12-31T23:59:59-14:00", "%",
                     "_", "'", "\\", "\x00", "ünï"]),
)  # fmt: skip
scalars = st.one_of(st.none(), st.booleans(), odd_numbers, odd_texts)
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(odd_texts, scalars))
days = st.one_of(st.integers(-2, 400), odd_numbers, odd_texts, st.none())


whole = st.one_of(st.integers(0, 400), st.sampled_from([1, 2**31, 2**63, 10**9, 10**20]))
scalar_values = st.one_of(st.booleans(), odd_numbers, odd_texts)


def valid_leaf() -> st.SearchStrategy:
    """Well-formed leaves with edge values: most trees get past the parser."""
    trait_name = st.sampled_from(TRAITS)
    event_name = st.sampled_from(EVENT_NAMES[:4])
    return st.one_of(
        st.fixed_dictionaries(
            {"trait": trait_name, "op": st.sampled_from(sorted(COMPARE_OPS - {"in", "not_in"})),
             "value": scalar_values}
        ),
        st.fixed_dictionaries(
            {"trait": trait_name, "op": st.sampled_from(["in", "not_in"]),
             "value": st.lists(scalar_values, min_size=1, max_size=3)}
        ),
        st.fixed_dictionaries({"trait": trait_name, "op": st.sampled_from(sorted(PRESENCE_OPS))}),
        st.fixed_dictionaries(
            {"trait": trait_name, "op": st.sampled_from(sorted(DATE_OPS)), "days": whole}
        ),
        st.fixed_dictionaries(
            {"event": event_name, "op": st.sampled_from(sorted(COUNT_OPS)), "value": whole},
            optional={"within_days": whole},
        ),
        st.fixed_dictionaries(
            {"event": event_name, "op": st.sampled_from(sorted(RECENCY_OPS)), "days": whole}
        ),
        st.fixed_dictionaries(
            {"event": event_name, "op": st.just("dropped_by"), "days": whole,
             "percent": st.integers(1, 100)}
        ),
        st.fixed_dictionaries({"event": event_name, "op": st.just("since_enrolled")}),
        st.fixed_dictionaries({"segment": st.sampled_from(["base", "nope"])}),
        st.fixed_dictionaries(
            {"nps": st.sampled_from(sorted(NPS_CATEGORIES))}, optional={"within_days": whole}
        ),
    )  # fmt: skip


def invalid_leaf() -> st.SearchStrategy:
    """Anything near a leaf: wrong types, unknown ops and keys, not an object."""
    trait = st.fixed_dictionaries(
        {"trait": st.one_of(st.sampled_from(TRAITS), odd_texts),
         "op": st.sampled_from([*sorted(COMPARE_OPS | PRESENCE_OPS | DATE_OPS), "eqq", None])},
        optional={"value": values, "days": days},
    )  # fmt: skip
    event = st.fixed_dictionaries(
        {"event": st.one_of(st.sampled_from(EVENT_NAMES), odd_texts),
         "op": st.sampled_from([*sorted(COUNT_OPS | RECENCY_OPS), "dropped_by", "since_enrolled"])},
        optional={"value": days, "within_days": days, "days": days, "percent": days},
    )  # fmt: skip
    other = st.one_of(
        st.fixed_dictionaries({"segment": values}),
        st.fixed_dictionaries({"nps": values}, optional={"within_days": days}),
        values,  # not a condition at all
    )
    return st.one_of(trait, event, other)


def leaf() -> st.SearchStrategy:
    return st.one_of(valid_leaf(), valid_leaf(), valid_leaf(), invalid_leaf())


trees = st.recursive(
    leaf(),
    lambda inner: st.one_of(
        st.fixed_dictionaries({"all": st.lists(inner, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"any": st.lists(inner, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"not": inner}),
        st.dictionaries(st.sampled_from(["all", "any", "not", "trait", "x"]), inner, max_size=2),
    ),
    max_leaves=6,
)


@pytest.fixture
def population(db) -> list[int]:
    """Customers with traits of every JSON type (and none), and events."""
    traits = [
        {"plan": "pro", "mrr": 199, "tags": ["beta", "eu"], "renewal_at": "2026-12-01T00:00:00Z",
         "nested": {"a": [1, {"b": None}]}, "nothing": None},
        {"plan": 7, "mrr": "79", "tags": "beta", "renewal_at": "not a date", "nested": [],
         "a-b_9": True},
        {"mrr": 1e300, "renewal_at": "2026-02-30", "plan": ""},
        {},
    ]  # fmt: skip
    calls = [IdentifyIn(userId=f"c{i}", traits=t) for i, t in enumerate(traits)]
    calls += [
        TrackIn(userId=f"c{i % 3}", event=name, timestamp=NOW.replace(day=1 + i), messageId=f"e{i}")
        for i, name in enumerate(["signed_up", "activated", "nps_responded", "activated"])
    ]
    ingest(calls, received_at=NOW)
    Segment.objects.create(slug="base", name="Base", definition={"trait": "plan", "op": "exists"})
    from apps.customers.models import Customer

    return list(Customer.objects.order_by("pk").values_list("pk", flat=True))


# What the attack run and earlier fuzzing found, always tried.
@example(definition={"trait": "renewal_at", "op": "within_last", "days": 2**31})
@example(definition={"event": "signed_up", "op": "since", "days": 10**9})
@example(definition={"event": "signed_up", "op": "dropped_by", "days": 2**31, "percent": 1})
@example(definition={"nps": "promoter", "within_days": 10**10})
@example(definition={"trait": "plan", "op": "contains", "value": 2**63})
@example(definition={"trait": "mrr", "op": "gt", "value": float("nan")})
@given(definition=trees)
def test_any_condition_is_refused_naming_its_path_or_evaluates(population, definition):
    for context in ("segment", "journey"):
        try:
            with shows(definition=definition, context=context), rolled_back():
                evaluate(definition, context, population)
            event(f"{context}: evaluated")
        except ConditionError as exc:
            event(f"{context}: refused")
            assert PATH.match(str(exc)), f"{definition!r}: the error names no path: {exc}"


def evaluate(definition, context: str, population: list[int]) -> None:
    if context == "segment":
        members = list(segment_queryset(definition, now=NOW).values_list("pk", flat=True))
        assert set(members) <= set(population)
    else:
        for pk in population:
            assert customer_matches(definition, pk, now=NOW, enrolled_at=NOW.replace(day=1)) in (
                True,
                False,
            )
