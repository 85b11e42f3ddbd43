"""The `group` call: accounts and their members, as `ingest` stores them."""

import json
from datetime import UTC, datetime

import pytest
from django.core.management import call_command

from apps.customers.models import Account, AccountMembership, Customer, Event
from apps.customers.schemas import GroupIn, IdentifyIn
from apps.customers.services import ingest

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


@pytest.mark.django_db
def test_a_group_call_creates_the_account_and_makes_the_customer_a_member():
    ingest(
        [GroupIn(userId="u-1", groupId="acme", traits={"name": "Acme", "plan": "enterprise"})],
        received_at=NOW,
    )

    account = Account.objects.get(external_id="acme")
    assert account.name == "Acme"
    assert account.traits == {"name": "Acme", "plan": "enterprise"}
    assert list(account.members.values_list("external_id", flat=True)) == ["u-1"]
    assert AccountMembership.objects.get().grouped_at == NOW


@pytest.mark.django_db
def test_later_group_calls_merge_traits_in_call_order_and_a_customer_may_join_several():
    ingest(
        [GroupIn(userId="u-1", groupId="acme", traits={"plan": "pro", "seats": 5})], received_at=NOW
    )

    ingest(
        [
            GroupIn(userId="u-2", groupId="acme", traits={"plan": "business"}),
            GroupIn(userId="u-2", groupId="acme", traits={"plan": "enterprise"}),
            GroupIn(userId="u-1", groupId="globex", traits=None),
        ],
        received_at=NOW,
    )

    acme = Account.objects.get(external_id="acme")
    assert acme.traits == {"plan": "enterprise", "seats": 5}
    assert sorted(acme.members.values_list("external_id", flat=True)) == ["u-1", "u-2"]
    u1 = Customer.objects.get(external_id="u-1")
    assert sorted(u1.accounts.values_list("external_id", flat=True)) == ["acme", "globex"]


def stamps() -> dict[str, int]:
    return dict(Customer.objects.values_list("external_id", "touched_seq"))


def restamped(before: dict[str, int]) -> list[str]:
    """Who got a new stamp since `before`. Compared stamp by stamp, not with
    a watermark: another session's open transaction on the same server holds
    a watermark back (tests of the watermark itself are in tests/segments)."""
    return sorted(eid for eid, stamp in stamps().items() if before.get(eid) != stamp)


@pytest.mark.django_db(transaction=True)  # stamps are transaction ids
def test_an_account_whose_traits_change_stamps_its_members_for_the_next_refresh():
    ingest([GroupIn(userId="u-1", groupId="acme", traits={"plan": "pro"})], received_at=NOW)
    ingest([IdentifyIn(userId="u-2")], received_at=NOW)
    before = stamps()

    ingest([GroupIn(userId="u-3", groupId="acme", traits={"plan": "enterprise"})], received_at=NOW)

    assert restamped(before) == ["u-1", "u-3"]


@pytest.mark.django_db(transaction=True)  # stamps are transaction ids
def test_an_unchanged_group_call_stamps_nobody():
    ingest([GroupIn(userId="u-1", groupId="acme", traits={"plan": "pro"})], received_at=NOW)
    before = stamps()

    ingest([GroupIn(userId="u-1", groupId="acme", traits={"plan": "pro"})], received_at=NOW)

    assert restamped(before) == []


@pytest.mark.django_db
def test_import_events_takes_group_and_alias_lines(tmp_path):
    path = tmp_path / "calls.jsonl"
    lines = [
        {"type": "track", "anonymousId": "anon-1", "event": "viewed_pricing"},
        {"type": "identify", "userId": "u-1", "traits": {"plan": "pro"}},
        {"type": "alias", "previousId": "anon-1", "userId": "u-1"},
        {"type": "group", "userId": "u-1", "groupId": "acme", "traits": {"name": "Acme"}},
        {"type": "page", "userId": "u-1", "name": "Docs"},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")

    call_command("import_events", str(path), "--no-progress")

    customer = Customer.objects.get(external_id="u-1")
    assert sorted(customer.events.values_list("name", flat=True)) == [
        "page_viewed",
        "viewed_pricing",
    ]
    assert Customer.objects.get(anonymous_id="anon-1").merged_into == customer
    assert list(customer.accounts.values_list("name", flat=True)) == ["Acme"]
    assert Event.objects.count() == 2


@pytest.mark.django_db
def test_a_membership_is_dated_by_the_group_calls_own_time():
    signed_up = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

    ingest([GroupIn(userId="u-1", groupId="acme", timestamp=signed_up)], received_at=NOW)

    membership = AccountMembership.objects.get()
    assert (membership.created_at, membership.grouped_at) == (signed_up, signed_up)
