import hashlib
import json
import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from io import StringIO
from zoneinfo import available_timezones

import pytest
from django.core.management import CommandError, call_command

from apps.customers import demo
from apps.customers.models import Customer, Event, EventStat
from apps.customers.validation import E164
from tests.conftest import stats_mismatches

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
SEED = 7
CUSTOMERS = 200
DAY = timedelta(days=1)


def seed_demo(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("seed_demo", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def seed(customers: int = CUSTOMERS, seed: int = SEED, *args: str) -> str:
    out, _ = seed_demo(
        "--customers", str(customers), "--seed", str(seed), "--now", NOW.isoformat(), *args
    )
    return out


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value)


def digest() -> str:
    """Everything the seeder decides (not the clock-driven created/updated)."""
    customers = [
        (c.external_id, c.email, c.phone, c.timezone, c.locale, c.traits, str(c.last_seen_at))
        for c in Customer.objects.order_by("external_id")
    ]
    events = [
        (e.customer.external_id, e.name, e.properties, str(e.occurred_at), str(e.received_at),
         e.message_id)
        for e in Event.objects.select_related("customer").order_by("message_id")
    ]  # fmt: skip
    stats = list(
        EventStat.objects.order_by("customer__external_id", "name").values_list(
            "customer__external_id", "name", "count", "first_at", "last_at"
        )
    )
    blob = json.dumps([customers, events, stats], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@pytest.fixture
def seeded():
    """The demo base as stored: customers by external id, their events in time
    order as (name, occurred_at, properties), and the generator's personas."""
    seed()
    customers = {c.external_id: c for c in Customer.objects.all()}
    events = defaultdict(list)
    for external_id, name, at, properties in Event.objects.order_by(
        "occurred_at", "message_id"
    ).values_list("customer__external_id", "name", "occurred_at", "properties"):
        events[external_id].append((name, at, properties))
    personas = {
        c.external_id: c.persona for c in demo.demo_customers(seed=SEED, now=NOW, count=CUSTOMERS)
    }
    return customers, events, personas


def times(events, name):
    return [at for n, at, _ in events if n == name]


# --- determinism and idempotency ------------------------------------------------


def test_the_same_seed_and_now_give_the_same_data_and_another_seed_does_not():
    seed(60)
    first = digest()
    Customer.objects.all().delete()

    seed(60)
    assert digest() == first

    Customer.objects.all().delete()
    seed(60, SEED + 1)
    assert digest() != first


def test_rerunning_the_same_seed_stores_nothing_new_and_keeps_eventstat_exact():
    out = seed(80)
    events, stats = Event.objects.count(), EventStat.objects.count()
    assert "80 customers (80 new)" in out
    assert f"{events:,} events (0 already there)" in out
    before = digest()

    out = seed(80)

    assert "80 customers (0 new) and 0 events" in out
    assert f"({events:,} already there)" in out
    assert Event.objects.count() == events
    assert EventStat.objects.count() == stats
    assert digest() == before
    assert stats_mismatches() == []


def test_more_customers_with_the_same_seed_adds_new_ones_and_keeps_the_first():
    seed(30)
    first = {c.external_id: c.traits for c in Customer.objects.all()}
    first_events = set(Event.objects.values_list("message_id", "occurred_at"))

    seed(50)

    assert Customer.objects.count() == 50
    for customer in Customer.objects.filter(external_id__in=first):
        assert customer.traits == first[customer.external_id]
    assert first_events <= set(Event.objects.values_list("message_id", "occurred_at"))
    assert stats_mismatches() == []


def test_small_chunks_store_the_same_data_as_one_big_chunk():
    seed(40, SEED, "--chunk", "1")
    small = digest()
    Customer.objects.all().delete()

    seed(40, SEED, "--chunk", "100000")

    assert digest() == small


def test_message_ids_are_deterministic_per_seed_customer_and_event():
    seed(20)
    pattern = re.compile(rf"^demo-{SEED}-(\d+)-(\d+)$")
    for external_id, message_id in Event.objects.values_list("customer__external_id", "message_id"):
        match = pattern.match(message_id)
        assert match, message_id
        assert external_id == demo.external_id_for(int(match[1]))


# --- the lifecycle --------------------------------------------------------------


def test_every_customer_has_a_consistent_lifecycle(seeded):
    customers, events, _ = seeded
    assert len(customers) == CUSTOMERS
    for external_id, customer in customers.items():
        t, ev = customer.traits, events[external_id]
        signed_up = parse(t["signed_up_at"])
        assert NOW - 120 * DAY <= signed_up <= NOW
        assert parse(t["trial_ends_at"]) == signed_up + 14 * DAY
        assert times(ev, "signed_up") == [signed_up]
        assert all(signed_up <= at <= NOW for _, at, _ in ev)
        assert customer.last_seen_at == max(at for _, at, _ in ev)
        assert t["plan"] in demo.PLANS
        started = times(ev, "subscription_started")

        if t["status"] == "trialing":
            assert parse(t["trial_ends_at"]) > NOW
            assert t["mrr"] == 0 and started == [] and "renewal_at" not in t
        elif t["status"] in ("active", "past_due"):
            assert parse(t["trial_ends_at"]) <= NOW
            price = demo.PLANS[t["plan"]]
            assert t["mrr"] == (
                price if t["billing_interval"] == "month" else round(price * 10 / 12, 2)
            )
            assert len(started) == 1 and parse(t["converted_at"]) == started[0]
            assert parse(t["renewal_at"]) > NOW
            assert times(ev, "subscription_canceled") == []
            if t["status"] == "past_due":
                assert any(NOW - at < 12 * DAY for at in times(ev, "payment_failed"))
        else:
            assert t["status"] == "canceled"
            assert t["mrr"] == 0 and "renewal_at" not in t
            canceled_at = parse(t["canceled_at"])
            if t["cancel_reason"] == "trial_expired":
                assert times(ev, "trial_expired") == [canceled_at] and started == []
            else:
                [(_, at, properties)] = [e for e in ev if e[0] == "subscription_canceled"]
                assert at == canceled_at and properties["reason"] == t["cancel_reason"]
                assert len(started) == 1 and started[0] < canceled_at


def test_the_status_mix_is_that_of_a_real_subscription_business(seeded):
    customers, _, _ = seeded
    statuses = [c.traits["status"] for c in customers.values()]
    share = {s: statuses.count(s) / len(statuses) for s in set(statuses)}
    assert set(share) == {"trialing", "active", "past_due", "canceled"}
    assert 0.3 <= share["active"] <= 0.6
    assert 0.1 <= share["trialing"] <= 0.3
    assert 0.2 <= share["canceled"] <= 0.5
    plans = {c.traits["plan"] for c in customers.values()}
    assert plans == set(demo.PLANS)
    intervals = {c.traits["billing_interval"] for c in customers.values()}
    assert intervals == {"month", "year"}


def test_monthly_subscriptions_renew_every_month_and_some_renew_soon(seeded):
    customers, events, _ = seeded
    due_in = []
    for external_id, customer in customers.items():
        t = customer.traits
        if t["status"] not in ("active", "past_due"):
            continue
        renewal_at = parse(t["renewal_at"])
        if t["billing_interval"] == "year":
            assert renewal_at - parse(t["converted_at"]) >= 365 * DAY
            continue
        billing = [
            at
            for name, at, _ in events[external_id]
            if name in ("subscription_started", "subscription_renewed", "payment_failed")
        ]
        for earlier, later in zip(billing, [*billing[1:], renewal_at], strict=True):
            assert 28 * DAY <= later - earlier <= 31 * DAY
        due_in.append(renewal_at - NOW)
    assert all(d <= 31 * DAY for d in due_in)
    assert sum(d <= DAY for d in due_in) >= 1
    assert sum(d <= 7 * DAY for d in due_in) >= 5
    assert sum(d > 14 * DAY for d in due_in) >= 10


def test_healthy_paying_customers_log_in_every_week(seeded):
    customers, events, personas = seeded
    healthy = [
        e for e, c in customers.items()
        if personas[e] == demo.HEALTHY and c.traits["status"] in ("active", "past_due")
    ]  # fmt: skip
    assert len(healthy) >= 40
    for external_id in healthy:
        logins = times(events[external_id], "login")
        assert NOW - logins[-1] <= 8 * DAY
        assert len([at for at in logins if at > NOW - 28 * DAY]) >= 4


def test_at_risk_customers_still_pay_but_went_quiet_after_their_usage_decayed(seeded):
    customers, events, personas = seeded
    at_risk = [e for e, p in personas.items() if p == demo.AT_RISK]
    assert len(at_risk) >= 5
    before, after = 0, 0
    for external_id in at_risk:
        assert customers[external_id].traits["status"] in ("active", "past_due")
        stat = EventStat.objects.get(customer=customers[external_id], name="login")
        assert stat.last_at <= NOW - 14 * DAY
        assert times(events[external_id], "activated")
        logins = times(events[external_id], "login")
        last = logins[-1]
        if parse(customers[external_id].traits["signed_up_at"]) > last - 28 * DAY:
            continue  # too new to compare two fortnights
        before += len([at for at in logins if last - 28 * DAY < at <= last - 14 * DAY])
        after += len([at for at in logins if last - 14 * DAY < at < last])
    assert after < 0.8 * before


@pytest.mark.usefixtures("seeded")
def test_the_active_base_has_both_recently_seen_and_quiet_customers():
    paying = Customer.objects.filter(traits__status__in=["active", "past_due"])
    quiet = paying.exclude(event_stats__name="login", event_stats__last_at__gt=NOW - 14 * DAY)
    recent = paying.filter(event_stats__name="login", event_stats__last_at__gt=NOW - 7 * DAY)
    assert quiet.count() >= 5
    assert recent.count() >= 0.5 * paying.count()


def test_churned_customers_stop_using_the_product_before_they_cancel(seeded):
    customers, events, _ = seeded
    churned = expired = 0
    for external_id, customer in customers.items():
        t, ev = customer.traits, events[external_id]
        if t["status"] != "canceled":
            continue
        canceled_at = parse(t["canceled_at"])
        last_use = max(times(ev, "login") + times(ev, "feature_used"), default=None)
        if t["cancel_reason"] == "trial_expired":
            expired += 1
            assert last_use is None or last_use < canceled_at - DAY
        else:
            churned += 1
            assert last_use < canceled_at - 2 * DAY
    assert churned >= 3 and expired >= 20


def test_never_activated_customers_barely_log_in_and_never_pay(seeded):
    customers, events, personas = seeded
    never = [e for e, p in personas.items() if p == demo.NEVER_ACTIVATED]
    assert len(never) >= 10
    for external_id in never:
        ev = events[external_id]
        names = {name for name, _, _ in ev}
        assert names <= {"signed_up", "login", "trial_expired"}
        assert len(times(ev, "login")) <= 3
        assert customers[external_id].traits["status"] in ("trialing", "canceled")


def test_features_are_used_only_after_activation(seeded):
    _, events, _ = seeded
    used = 0
    for ev in events.values():
        features = times(ev, "feature_used")
        if features:
            used += 1
            assert times(ev, "activated")[0] <= min(features)
        for name, _, properties in ev:
            if name == "feature_used":
                assert properties["feature"] in demo.FEATURES
    assert used >= CUSTOMERS / 2


def test_customers_average_about_twenty_events(seeded):
    _, events, _ = seeded
    average = sum(len(ev) for ev in events.values()) / CUSTOMERS
    assert 12 <= average <= 30


def test_eventstat_is_exact_after_seeding(seeded):
    assert stats_mismatches() == []


# --- contact details ------------------------------------------------------------


def test_phones_are_fictional_e164_numbers_and_about_a_fifth_have_none(seeded):
    customers, _, _ = seeded
    fictional = tuple(p for region in demo.REGIONS for p in region.phone_prefixes)
    phones = [c.phone for c in customers.values() if c.phone]
    assert 0.1 <= 1 - len(phones) / CUSTOMERS <= 0.35
    for phone in phones:
        assert E164.match(phone), phone
        assert phone.startswith(fictional), phone
    assert len(set(phones)) == len(phones)
    for customer in customers.values():
        assert customer.traits.get("phone", "") == customer.phone


def test_timezones_are_valid_iana_zones_spread_over_the_world(seeded):
    customers, _, _ = seeded
    zones = [c.timezone for c in customers.values()]
    named = {z for z in zones if z}
    assert named <= available_timezones()
    assert len(named) >= 12
    regions = {z.split("/")[0] for z in named}
    assert {"America", "Europe", "Africa", "Asia"} <= regions
    assert regions & {"Australia", "Pacific"}
    assert 1 <= zones.count("") <= CUSTOMERS * 0.1


def test_names_emails_locales_and_companies_look_real(seeded):
    customers, _, _ = seeded
    emails = [c.email for c in customers.values()]
    assert len(set(emails)) == len(emails)
    for customer in customers.values():
        t = customer.traits
        assert t["email"] == customer.email == customer.email.lower()
        local, domain = customer.email.split("@")
        assert domain in demo.EMAIL_DOMAINS or domain.endswith(".example")
        assert re.fullmatch(r"[a-z0-9._]+", local)
        assert t["first_name"] and t["last_name"] and t["company"]
        assert customer.locale == t["locale"]
    assert len({c.locale for c in customers.values()}) >= 6
    assert len({c.traits["last_name"] for c in customers.values()}) >= 50


# --- the command ----------------------------------------------------------------


def test_if_empty_does_nothing_when_a_customer_exists():
    Customer.objects.create(external_id="someone")

    out, _ = seed_demo("--if-empty", "--customers", "5")

    assert "not seeding" in out
    assert list(Customer.objects.values_list("external_id", flat=True)) == ["someone"]
    assert not Event.objects.exists()


def test_if_empty_seeds_an_empty_database():
    out, err = seed_demo("--if-empty", "--customers", "5", "--now", NOW.isoformat())

    assert Customer.objects.count() == 5
    assert "Seeded 5 customers" in out and "events/s" in out
    assert "5/5" in err  # the progress bar


def test_now_defaults_to_the_current_minute():
    seed_demo("--customers", "3", "--no-progress")

    assert Customer.objects.count() == 3
    latest = Event.objects.order_by("-occurred_at").first().occurred_at
    assert latest <= datetime.now(UTC)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--now", "yesterday"], "--now: 'yesterday' is not an ISO-8601 time"),
        (["--customers", "-1"], "--customers"),
        (["--chunk", "0"], "--chunk"),
    ],
)
def test_bad_options_are_refused(args, message):
    with pytest.raises(CommandError, match=message):
        seed_demo(*args)
