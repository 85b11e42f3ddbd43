"""`{"account": C}` conditions (any of the customer's accounts satisfies the
trait condition C), and segments holding known customers only: anonymous
visitors and merged profiles never belong to one."""

from datetime import UTC, datetime, timedelta

import pytest

from apps.customers.models import Customer
from apps.customers.schemas import AliasIn, GroupIn, IdentifyIn, TrackIn
from apps.customers.services import ingest
from apps.segments.conditions import (
    ConditionError,
    customer_matches,
    parse,
    segment_queryset,
)
from apps.segments.models import SegmentMembership
from apps.segments.services import segment_refresh, segment_static_upload

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
MINUTE, DAY = timedelta(minutes=1), timedelta(days=1)
ENTERPRISE = {"account": {"trait": "plan", "op": "eq", "value": "enterprise"}}


@pytest.fixture(autouse=True)
def no_periodic_full_refresh(settings):
    settings.SEGMENT_FULL_REFRESH_EVERY_S = 365 * 86400


def group(user_id: str, group_id: str, *, at: datetime = NOW, **traits) -> None:
    ingest([GroupIn(userId=user_id, groupId=group_id, traits=traits)], received_at=at)


def ids() -> dict[str, int]:
    return dict(Customer.objects.known().values_list("external_id", "id"))


def members(definition, now=NOW) -> set[str]:
    return set(segment_queryset(definition, now=now).values_list("external_id", flat=True))


def one_by_one(definition, now=NOW) -> set[str]:
    return {c for c, pk in ids().items() if customer_matches(definition, pk, now=now)}


def open_members(segment) -> set[str]:
    return set(
        SegmentMembership.objects.filter(segment=segment, exited_at=None).values_list(
            "customer__external_id", flat=True
        )
    )


@pytest.fixture
def companies():
    """ann and bo at Acme (enterprise, 40 seats); cy at Beta (starter) and at
    Acme too; di at Gamma (no plan); ed in no account."""
    ingest(
        [
            IdentifyIn(userId=u, traits={"plan": "basic"})
            for u in ("ann", "bo", "cy", "di", "ed")
        ]
        + [
            GroupIn(userId="ann", groupId="acme",
                    traits={"name": "Acme", "plan": "enterprise", "seats": 40,
                            "renewal_at": "2026-12-01T00:00:00Z"}),
            GroupIn(userId="bo", groupId="acme"),
            GroupIn(userId="cy", groupId="beta",
                    traits={"name": "Beta", "plan": "starter", "seats": 3}),
            GroupIn(userId="cy", groupId="acme"),
            GroupIn(userId="di", groupId="gamma", traits={"name": "Gamma"}),
        ],
        received_at=NOW - DAY,
    )  # fmt: skip


ACCOUNT_CASES = [
    (ENTERPRISE, {"ann", "bo", "cy"}),
    ({"account": {"trait": "plan", "op": "eq", "value": "starter"}}, {"cy"}),
    # the account's traits, not the customer's (everyone's own plan is basic)
    ({"account": {"trait": "plan", "op": "eq", "value": "basic"}}, set()),
    ({"account": {"trait": "seats", "op": "lt", "value": 10}}, {"cy"}),
    ({"account": {"trait": "plan", "op": "not_exists"}}, {"di"}),
    # inside: "an account that is not enterprise" (cy's Beta, di's Gamma)
    ({"account": {"not": {"trait": "plan", "op": "eq", "value": "enterprise"}}}, {"cy", "di"}),
    # outside: "no enterprise account", ed (in none) included
    ({"not": ENTERPRISE}, {"di", "ed"}),
    # all inside is one account meeting both; two accounts meeting one each is not it
    (
        {"account": {"all": [{"trait": "plan", "op": "eq", "value": "starter"},
                             {"trait": "seats", "op": "gt", "value": 10}]}},
        set(),
    ),
    (
        {"all": [{"account": {"trait": "plan", "op": "eq", "value": "starter"}},
                 {"account": {"trait": "seats", "op": "gt", "value": 10}}]},
        {"cy"},
    ),
    (
        {"account": {"any": [{"trait": "plan", "op": "eq", "value": "starter"},
                             {"trait": "name", "op": "eq", "value": "Gamma"}]}},
        {"cy", "di"},
    ),
    ({"account": {"trait": "renewal_at", "op": "within_next", "days": 30}}, {"ann", "bo", "cy"}),
    ({"account": {"trait": "renewal_at", "op": "within_next", "days": 5}}, set()),
    (
        {"all": [{"trait": "plan", "op": "eq", "value": "basic"}, ENTERPRISE]},
        {"ann", "bo", "cy"},
    ),
]  # fmt: skip


@pytest.mark.parametrize(("definition", "expected"), ACCOUNT_CASES, ids=lambda x: str(x)[:70])
def test_account_conditions_match_customers_by_any_of_their_accounts(
    companies, definition, expected
):
    assert members(definition) == expected
    assert one_by_one(definition) == expected


def test_an_account_condition_is_one_query_for_a_segment(companies, django_assert_num_queries):
    queryset = segment_queryset(ENTERPRISE, now=NOW)
    with django_assert_num_queries(1):
        assert len(list(queryset.values_list("pk", flat=True))) == 3


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ({"account": {"event": "login", "op": "since", "days": 3}},
         "account: an account condition tests the account's traits: 'event' conditions"),
        ({"all": [{"trait": "plan", "op": "exists"},
                  {"account": {"any": [{"trait": "plan", "op": "eq", "value": "x"},
                                       {"segment": "trialing"}]}}]},
         "all[1].account.any[1]: an account condition tests the account's traits: 'segment'"),
        ({"account": {"not": {"nps": "promoter"}}}, "account.not: an account condition"),
        ({"account": {"account": {"trait": "plan", "op": "exists"}}},
         "account: an account condition tests the account's traits: 'account'"),
        ({"account": {"trait": "plan", "op": "eqq", "value": 1}}, "account: unknown op 'eqq'"),
        ({"account": []}, "account: must be an object"),
        ({"account": {"trait": "plan", "op": "eq", "value": "x"}, "op": "eq"},
         "condition: unknown key 'op' in a 'account' condition"),
    ],
)  # fmt: skip
def test_invalid_account_conditions_are_refused_naming_the_path(definition, message):
    with pytest.raises(ConditionError) as caught:
        parse(definition)
    assert str(caught.value).startswith(message)


def test_an_account_condition_works_in_journey_branches_too():
    assert parse(ENTERPRISE, context="journey") == parse(ENTERPRISE)


def test_a_step_describes_an_account_condition_in_words():
    from apps.journeys.enrollment import describe_condition

    both = {"account": {"all": [{"trait": "plan", "op": "eq", "value": "enterprise"},
                                {"trait": "seats", "op": "gt", "value": 10}]}}  # fmt: skip

    assert describe_condition(ENTERPRISE) == "an account where plan is 'enterprise'"
    assert describe_condition({"not": both}) == (
        "not an account where plan is 'enterprise' and seats > 10"
    )


# --- incremental refreshes -----------------------------------------------------------


def test_members_follow_their_accounts_traits_at_the_next_incremental_refresh(
    companies, make_segment
):
    segment = make_segment("enterprise", ENTERPRISE)
    assert segment_refresh(segment, now=NOW).mode == "full"
    assert open_members(segment) == {"ann", "bo", "cy"}

    # Acme downgrades, Gamma upgrades; ed joins Gamma; fy joins Acme.
    group("ann", "acme", at=NOW + MINUTE, plan="growth")
    group("di", "gamma", at=NOW + MINUTE, plan="enterprise")
    group("ed", "gamma", at=NOW + MINUTE)
    ingest([IdentifyIn(userId="fy")], received_at=NOW + MINUTE)
    group("fy", "acme", at=NOW + MINUTE)
    result = segment_refresh(segment, now=NOW + 2 * MINUTE)

    assert result.mode == "incremental"
    by_id = {pk: c for c, pk in ids().items()}
    assert {by_id[pk] for pk in result.exited_ids} == {"ann", "bo", "cy"}
    assert {by_id[pk] for pk in result.entered_ids} == {"di", "ed"}
    assert open_members(segment) == members(ENTERPRISE, now=NOW + 2 * MINUTE) == {"di", "ed"}
    full = segment_refresh(segment, now=NOW + 3 * MINUTE, full=True)
    assert (full.entered_ids, full.exited_ids) == ([], [])


def test_a_trait_change_that_changes_nothing_keeps_everyone(companies, make_segment):
    segment = make_segment("enterprise", ENTERPRISE)
    segment_refresh(segment, now=NOW)

    group("bo", "acme", at=NOW + MINUTE, seats=41)
    result = segment_refresh(segment, now=NOW + 2 * MINUTE)

    assert result.mode == "incremental"
    assert (result.entered_ids, result.exited_ids) == ([], [])
    assert open_members(segment) == {"ann", "bo", "cy"}


def test_an_account_date_entering_the_window_brings_its_members_in(companies, make_segment):
    due = {"account": {"trait": "renewal_at", "op": "within_next", "days": 7}}
    segment = make_segment("renewing-accounts", due)
    assert segment_refresh(segment, now=NOW).entered_ids == []

    # Nothing is written: Acme's renewal (Dec 1) comes within 7 days on Nov 24.
    later = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    result = segment_refresh(segment, now=later)

    assert result.mode == "incremental"
    assert open_members(segment) == members(due, now=later) == {"ann", "bo", "cy"}
    # ... and out again once it has passed.
    after = datetime(2026, 12, 2, tzinfo=UTC)
    assert segment_refresh(segment, now=after).mode == "incremental"
    assert open_members(segment) == set()


# --- known customers only ------------------------------------------------------------


def test_an_anonymous_visitor_matching_the_condition_is_not_a_member(make_segment):
    ingest(
        [
            IdentifyIn(userId="ann", traits={"plan": "pro"}),
            TrackIn(anonymousId="anon-1", event="pricing_viewed"),
            GroupIn(anonymousId="anon-1", groupId="acme", traits={"plan": "enterprise"}),
            GroupIn(userId="ann", groupId="acme"),
        ],
        received_at=NOW,
    )
    visitor = Customer.objects.get(anonymous_id="anon-1")
    viewed = {"event": "pricing_viewed", "op": "since", "days": 1}
    segment = make_segment("viewers", viewed)
    enterprise = make_segment("enterprise", ENTERPRISE)

    segment_refresh(segment, now=NOW)
    segment_refresh(enterprise, now=NOW)

    assert members(viewed) == set() and open_members(segment) == set()
    assert open_members(enterprise) == {"ann"}
    assert not customer_matches(viewed, visitor.pk, now=NOW)
    assert segment_queryset(viewed, now=NOW, among=f"SELECT {visitor.pk}").count() == 0


def test_a_merged_profile_leaves_at_the_next_refresh(make_segment):
    ingest(
        [IdentifyIn(userId="old-id", traits={"plan": "pro"}), IdentifyIn(userId="new-id")],
        received_at=NOW,
    )
    segment = make_segment("pro", {"trait": "plan", "op": "eq", "value": "pro"})
    segment_refresh(segment, now=NOW)
    assert open_members(segment) == {"old-id"}
    old = Customer.objects.get(external_id="old-id")

    ingest([AliasIn(previousId="old-id", userId="new-id")], received_at=NOW + MINUTE)
    result = segment_refresh(segment, now=NOW + 2 * MINUTE)

    # The merged profile exits; the customer it became takes its plan and enters.
    assert result.mode == "incremental"
    assert result.exited_ids == [old.pk]
    assert open_members(segment) == {"new-id"}
    assert not customer_matches(segment.definition, old.pk, now=NOW + 2 * MINUTE)


def test_a_static_list_takes_known_customers_only(make_segment):
    ingest(
        [IdentifyIn(userId="a"), IdentifyIn(userId="b"), IdentifyIn(userId="c")],
        received_at=NOW,
    )
    ingest([AliasIn(previousId="b", userId="c")], received_at=NOW)
    segment = make_segment("vip", kind="static")

    report = segment_static_upload(segment, ["a", "b", "c"], mode="replace", now=NOW)

    assert report.unknown_ids == ["b"]
    assert open_members(segment) == {"a", "c"}
