"""Each policy with hand-computed expectations (times in UTC unless said)."""

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ImproperlyConfigured

from apps.messaging import policies
from apps.messaging.consent import suppression_add, suppression_lift
from apps.messaging.models import Category, Channel, Message, Suppression
from apps.messaging.policies import (
    DEFER,
    SEND,
    SUPPRESS,
    check_address,
    check_consent,
    check_frequency_cap,
    check_quiet_hours,
    check_suppression,
    evaluate,
    parse_cap,
)
from apps.messaging.send_windows import (
    next_in_window,
    parse_window,
    unknown_zone_intervals,
    world_zones,
)
from tests.messaging.sending import apply_send_settings, grant, make_customer, make_template, revoke

pytestmark = pytest.mark.django_db

_keys = itertools.count(1)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture(autouse=True)
def policy_settings(settings):
    apply_send_settings(settings)


def message(customer, channel=Channel.EMAIL, *, at: datetime, journey="onboarding", **fields):
    """A message row as it stands after sending (by default)."""
    fields.setdefault("status", Message.Status.SENT)
    fields.setdefault("category", Category.MARKETING)
    if fields["status"] in (Message.Status.SENT, Message.Status.DELIVERED):
        fields.setdefault("sent_at", at)
    return Message.objects.create(
        customer=customer,
        channel=channel,
        journey=journey,
        idempotency_key=f"policy-{next(_keys)}",
        to_address=customer.email if channel == Channel.EMAIL else customer.phone,
        created_at=at,
        **fields,
    )


# --- settings ------------------------------------------------------------------


def test_caps_and_windows_parse_from_their_settings_form():
    assert parse_cap("3/7d") == policies.FrequencyCap(3, timedelta(days=7), "3/7d")
    assert parse_cap(" 10 / 12h ").window == timedelta(hours=12)
    assert parse_cap("2/1w").window == timedelta(weeks=1)
    assert parse_cap("") is None
    window = parse_window("08:00-21:00")
    assert (window.start, window.end) == (8 * 3600, 21 * 3600)
    night = parse_window("22:00-06:30")
    assert night.contains(23 * 3600) and night.contains(6 * 3600) and not night.contains(12 * 3600)
    assert parse_window("18:00-24:00").contains(23.99 * 3600)
    assert parse_window("") is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("3 per week", "is not a cap like 3/7d"),
        ("0/7d", "needs a count and a window above 0"),
        ("3/7y", "is not a cap like 3/7d"),
    ],
)
def test_a_bad_cap_is_refused_naming_the_setting(value, problem):
    with pytest.raises(ImproperlyConfigured, match=f"FREQUENCY_CAP_SMS: .*{problem}"):
        parse_cap(value, setting="FREQUENCY_CAP_SMS")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("8-21", "is not a window like 08:00-21:00"),
        ("25:00-26:00", "has a time that does not exist"),
        ("08:00-08:00", "is empty or the whole day"),
    ],
)
def test_a_bad_window_is_refused_naming_the_setting(value, problem):
    with pytest.raises(ImproperlyConfigured, match=f"SEND_HOURS_SMS: .*{problem}"):
        parse_window(value, setting="SEND_HOURS_SMS")


def test_the_settings_check_reports_bad_policy_settings_at_start_up(settings):
    settings.FREQUENCY_CAP_EMAIL = "lots"
    settings.SEND_HOURS_SMS = "9am-5pm"

    errors = policies.settings_check()

    assert [e.id for e in errors] == ["messaging.E001", "messaging.E001"]
    assert "FREQUENCY_CAP_EMAIL: 'lots'" in errors[0].msg
    assert "SEND_HOURS_SMS: '9am-5pm'" in errors[1].msg


# --- address -------------------------------------------------------------------


def test_a_customer_without_an_address_for_the_channel_is_not_sent_to():
    nobody = make_customer()

    assert check_address(nobody, Channel.EMAIL) == policies.Decision(
        SUPPRESS, "no address: the customer has no email address"
    )
    assert (
        check_address(nobody, Channel.SMS).reason == "no address: the customer has no phone number"
    )


def test_an_invalid_address_is_refused_and_a_valid_one_normalised():
    ada = make_customer(email="Ada@Example.com")

    assert check_address(ada, Channel.EMAIL).address == "ada@example.com"
    assert check_address(ada, Channel.EMAIL, "not-an-address").reason == (
        "invalid address: 'not-an-address' is not an email address"
    )
    assert check_address(ada, Channel.SMS, "+1 415 555 0123").address == "+14155550123"


# --- suppression ---------------------------------------------------------------

NOW = utc("2026-06-01T15:00:00")


@pytest.mark.parametrize(
    ("reason", "words", "blocks_transactional"),
    [
        (Suppression.Reason.BOUNCE, "bounced", True),
        (Suppression.Reason.COMPLAINT, "spam complaint", True),
        (Suppression.Reason.INVALID, "invalid address", True),
        (Suppression.Reason.MANUAL, "added by hand", True),
        (Suppression.Reason.UNSUBSCRIBE, "unsubscribed", False),
    ],
)
def test_suppressed_addresses_are_refused_with_the_reason(reason, words, blocks_transactional):
    suppression_add(
        channel=Channel.EMAIL, address="Ada@Example.com", reason=reason, source="t", now=NOW
    )

    marketing = check_suppression(Channel.EMAIL, "ada@example.com", Category.MARKETING)
    transactional = check_suppression(Channel.EMAIL, "ADA@example.com", Category.TRANSACTIONAL)

    assert (marketing.outcome, marketing.reason) == (SUPPRESS, f"suppressed: {words}")
    assert transactional.allowed is not blocks_transactional


def test_an_sms_opt_out_blocks_every_sms_and_a_lifted_suppression_nothing():
    suppression_add(
        channel=Channel.SMS, address="+14155550123", reason="sms_opt_out", source="t", now=NOW
    )

    refused = check_suppression(Channel.SMS, "+14155550123", Category.TRANSACTIONAL)
    assert refused.reason == "suppressed: replied STOP"
    suppression_lift(channel=Channel.SMS, address="+14155550123", now=NOW)
    assert check_suppression(Channel.SMS, "+14155550123", Category.MARKETING).allowed
    # Another channel's list is another list.
    suppression_add(
        channel=Channel.EMAIL, address="x@example.com", reason="bounce", source="t", now=NOW
    )
    assert check_suppression(Channel.SMS, "+14155550199", Category.MARKETING).allowed


# --- consent -------------------------------------------------------------------


def test_sms_needs_an_explicit_opt_in_marketing_or_not():
    ada = make_customer()

    for category in Category.values:
        assert check_consent(ada, Channel.SMS, category).reason == "no consent: sms"
    grant(ada, Channel.SMS, at=NOW - timedelta(days=2))
    assert check_consent(ada, Channel.SMS, Category.MARKETING).allowed
    revoke(ada, Channel.SMS, at=NOW - timedelta(days=1))
    assert check_consent(ada, Channel.SMS, Category.TRANSACTIONAL).reason == (
        "no consent: sms (opted out)"
    )


def test_marketing_email_needs_no_opt_in_only_no_opt_out():
    ada = make_customer()

    assert check_consent(ada, Channel.EMAIL, Category.MARKETING).allowed
    revoke(ada, Channel.EMAIL, at=NOW)
    assert check_consent(ada, Channel.EMAIL, Category.MARKETING).reason == (
        "no consent: email (opted out)"
    )


def test_transactional_email_needs_no_consent():
    ada = make_customer()
    revoke(ada, Channel.EMAIL, at=NOW)

    assert check_consent(ada, Channel.EMAIL, Category.TRANSACTIONAL).allowed


def test_a_setting_can_require_an_opt_in_for_marketing_email(settings):
    settings.EMAIL_MARKETING_REQUIRES_OPT_IN = True
    ada = make_customer()

    assert check_consent(ada, Channel.EMAIL, Category.MARKETING).reason == (
        "no consent: email (no opt-in; opt-in is required)"
    )
    grant(ada, Channel.EMAIL, at=NOW)
    assert check_consent(ada, Channel.EMAIL, Category.MARKETING, "product-news").allowed


def test_email_consent_is_per_topic_and_a_channel_revocation_overrides_topics():
    ada = make_customer()
    revoke(ada, Channel.EMAIL, at=NOW - timedelta(days=3), topic="tips")

    assert check_consent(ada, Channel.EMAIL, Category.MARKETING, "tips").reason == (
        "no consent: email topic tips (opted out)"
    )
    assert check_consent(ada, Channel.EMAIL, Category.MARKETING, "product-news").allowed
    grant(ada, Channel.EMAIL, at=NOW - timedelta(days=2), topic="product-news")
    revoke(ada, Channel.EMAIL, at=NOW - timedelta(days=1))
    assert check_consent(ada, Channel.EMAIL, Category.MARKETING, "product-news").reason == (
        "no consent: email (opted out)"
    )


# --- frequency caps ------------------------------------------------------------


def test_the_cap_counts_marketing_messages_across_all_journeys():
    ada = make_customer(email="ada@example.com")
    message(ada, at=utc("2026-06-01T10:00:00"), journey="onboarding")
    message(ada, at=utc("2026-06-03T10:00:00"), journey="winback")
    message(ada, at=utc("2026-06-05T10:00:00"), journey="renewal", status=Message.Status.DELIVERED)
    now = utc("2026-06-06T12:00:00")

    skipped = check_frequency_cap(ada, Channel.EMAIL, Category.MARKETING, now)
    deferred = check_frequency_cap(ada, Channel.EMAIL, Category.MARKETING, now, over_cap="defer")

    assert (skipped.outcome, skipped.reason) == (SUPPRESS, "skipped: frequency cap 3/7d")
    # The window frees when the oldest of the three is 7 days old.
    assert (deferred.outcome, deferred.reason, deferred.send_after) == (
        DEFER,
        "deferred: frequency cap 3/7d",
        utc("2026-06-08T10:00:00"),
    )


def test_refused_failed_test_and_transactional_messages_do_not_count():
    ada = make_customer(email="ada@example.com")
    at = utc("2026-06-05T10:00:00")
    message(ada, at=at, status=Message.Status.SUPPRESSED)
    message(ada, at=at, status=Message.Status.FAILED)
    message(ada, at=at, is_test=True)
    message(ada, at=at, category=Category.TRANSACTIONAL)
    message(ada, Channel.SMS, at=at)
    message(ada, at=at)
    message(ada, at=at)

    assert check_frequency_cap(
        ada, Channel.EMAIL, Category.MARKETING, at + timedelta(hours=1)
    ).allowed


def test_transactional_messages_bypass_the_cap():
    ada = make_customer(phone="+14155550123")
    message(ada, Channel.SMS, at=utc("2026-06-01T10:00:00"))

    now = utc("2026-06-01T11:00:00")
    assert not check_frequency_cap(ada, Channel.SMS, Category.MARKETING, now).allowed
    assert check_frequency_cap(ada, Channel.SMS, Category.TRANSACTIONAL, now).allowed


def test_the_cap_window_is_exact_to_the_second():
    ada = make_customer(phone="+14155550123")
    message(ada, Channel.SMS, at=utc("2026-06-01T10:00:00"))

    assert not check_frequency_cap(
        ada, Channel.SMS, Category.MARKETING, utc("2026-06-02T09:59:59")
    ).allowed
    assert check_frequency_cap(
        ada, Channel.SMS, Category.MARKETING, utc("2026-06-02T10:00:00")
    ).allowed


def test_messages_already_deferred_count_at_the_time_they_will_go():
    ada = make_customer(phone="+14155550123")
    # Deferred by quiet hours to 08:00 tomorrow (New York), created tonight.
    message(
        ada,
        Channel.SMS,
        at=utc("2026-06-02T02:00:00"),
        status=Message.Status.DEFERRED,
        send_after=utc("2026-06-02T12:00:00"),
    )
    now = utc("2026-06-02T02:30:00")

    assert not check_frequency_cap(ada, Channel.SMS, Category.MARKETING, now).allowed
    later = check_frequency_cap(ada, Channel.SMS, Category.MARKETING, now, over_cap="defer")
    assert later.send_after == utc("2026-06-03T12:00:00")


def test_with_no_cap_configured_anything_goes(settings):
    settings.FREQUENCY_CAP_SMS = ""
    ada = make_customer(phone="+14155550123")
    message(ada, Channel.SMS, at=NOW)

    assert check_frequency_cap(ada, Channel.SMS, Category.MARKETING, NOW).allowed


# --- quiet hours ---------------------------------------------------------------

SMS_HOURS = parse_window("08:00-21:00")


@pytest.mark.parametrize(
    ("zone", "at", "expected"),
    [
        # New York: EST (-5) until 2026-03-08 07:00 UTC, then EDT (-4).
        ("America/New_York", "2026-03-07T02:30:00", "2026-03-07T13:00:00"),  # 21:30 EST → 08:00 EST
        ("America/New_York", "2026-03-08T06:30:00", "2026-03-08T12:00:00"),  # 01:30 EST → 08:00 EDT
        ("America/New_York", "2026-03-08T12:30:00", "2026-03-08T12:30:00"),  # 08:30 EDT: now
        ("America/New_York", "2026-03-09T00:59:00", "2026-03-09T00:59:00"),  # 20:59 EDT: now
        ("America/New_York", "2026-03-09T01:00:00", "2026-03-09T12:00:00"),  # 21:00 EDT → next day
        # ...and back to EST at 2026-11-01 06:00 UTC.
        ("America/New_York", "2026-11-01T01:30:00", "2026-11-01T13:00:00"),  # 21:30 EDT → 08:00 EST
        ("America/New_York", "2026-11-01T12:30:00", "2026-11-01T13:00:00"),  # 07:30 EST
        # London: BST (+1) from 2026-03-29 01:00 UTC to 2026-10-25 01:00 UTC.
        ("Europe/London", "2026-03-28T22:00:00", "2026-03-29T07:00:00"),  # 22:00 GMT → 08:00 BST
        ("Europe/London", "2026-10-24T21:00:00", "2026-10-25T08:00:00"),  # 22:00 BST → 08:00 GMT
        ("Europe/London", "2026-10-25T07:30:00", "2026-10-25T08:00:00"),  # 07:30 GMT
        # Sydney: AEDT (+11) until 2026-04-04 16:00 UTC, AEST (+10) until
        # 2026-10-03 16:00 UTC, then AEDT again.
        (
            "Australia/Sydney",
            "2026-04-04T11:00:00",
            "2026-04-04T22:00:00",
        ),  # 22:00 AEDT → 08:00 AEST
        (
            "Australia/Sydney",
            "2026-10-03T11:00:00",
            "2026-10-03T21:00:00",
        ),  # 21:00 AEST → 08:00 AEDT
        ("Australia/Sydney", "2026-10-03T20:59:00", "2026-10-03T21:00:00"),  # 07:59 AEDT
        ("Australia/Sydney", "2026-10-03T10:00:00", "2026-10-03T10:00:00"),  # 20:00 AEST: now
    ],
)
def test_quiet_hours_follow_daylight_saving_in_the_customers_zone(zone, at, expected):
    assert next_in_window(ZoneInfo(zone), SMS_HOURS, utc(at)) == utc(expected)


def test_a_window_opening_in_the_skipped_hour_opens_when_the_clock_jumps():
    window = parse_window("02:30-05:00")
    new_york = ZoneInfo("America/New_York")

    # 00:00 EST on the day 02:00-03:00 does not exist: open at 03:00 EDT.
    assert next_in_window(new_york, window, utc("2026-03-08T05:00:00")) == utc(
        "2026-03-08T07:00:00"
    )


def test_a_window_opening_in_the_repeated_hour_opens_the_first_time():
    window = parse_window("01:30-05:00")
    new_york = ZoneInfo("America/New_York")

    # 01:00 EDT on 2026-11-01; 01:30 comes twice: 05:30 UTC (EDT) first.
    assert next_in_window(new_york, window, utc("2026-11-01T05:00:00")) == utc(
        "2026-11-01T05:30:00"
    )


def test_a_window_may_span_midnight(settings):
    window = parse_window("22:00-06:00")
    london = ZoneInfo("Europe/London")

    assert next_in_window(london, window, utc("2026-07-01T12:00:00")) == utc("2026-07-01T21:00:00")
    assert next_in_window(london, window, utc("2026-07-01T03:00:00")) == utc("2026-07-01T03:00:00")


def test_quiet_hours_defer_marketing_sms_with_the_reason():
    ada = make_customer(timezone="America/New_York")

    decision = check_quiet_hours(ada, Channel.SMS, Category.MARKETING, utc("2026-03-08T06:30:00"))

    assert decision == policies.Decision(
        DEFER,
        "deferred: quiet hours (sms 08:00-21:00 America/New_York)",
        send_after=utc("2026-03-08T12:00:00"),
    )


def test_transactional_messages_and_email_by_default_have_no_quiet_hours():
    ada = make_customer(timezone="America/New_York")
    night = utc("2026-03-08T06:30:00")

    assert check_quiet_hours(ada, Channel.SMS, Category.TRANSACTIONAL, night).allowed
    assert check_quiet_hours(ada, Channel.EMAIL, Category.MARKETING, night).allowed


def test_email_quiet_hours_can_be_configured(settings):
    settings.SEND_HOURS_EMAIL = "07:00-22:00"
    ada = make_customer(timezone="Europe/London")

    decision = check_quiet_hours(ada, Channel.EMAIL, Category.MARKETING, utc("2026-07-01T22:00:00"))

    assert decision.send_after == utc("2026-07-02T06:00:00")


def test_an_unknown_zone_takes_the_intersection_over_the_zones_of_the_customers_country():
    # No zone, but the locale says Australia: its zones run from Perth (+8) to
    # Lord Howe (+10:30 in July). 08:00-21:00 everywhere there is 00:00-10:30 UTC.
    ada = make_customer(locale="en-AU")

    decision = check_quiet_hours(ada, Channel.SMS, Category.MARKETING, utc("2026-07-08T11:00:00"))

    assert decision.send_after == utc("2026-07-09T00:00:00")
    assert decision.reason == (
        "deferred: quiet hours (sms 08:00-21:00; time zone unknown: sent when inside the window "
        "in every one of the zones of AU)"
    )
    assert check_quiet_hours(
        ada, Channel.SMS, Category.MARKETING, utc("2026-07-09T10:29:00")
    ).allowed


def test_an_invalid_zone_counts_as_unknown_and_the_country_trait_narrows_it():
    ada = make_customer(country="GB")
    type(ada).objects.filter(pk=ada.pk).update(timezone="Mars/Olympus")
    ada.refresh_from_db()

    decision = check_quiet_hours(ada, Channel.SMS, Category.MARKETING, utc("2026-07-08T05:00:00"))

    assert decision.send_after == utc("2026-07-08T07:00:00")  # 08:00 BST


def test_with_nothing_to_go_on_the_window_is_where_the_most_zones_allow_it():
    """Over the whole world no instant is inside 08:00-21:00 everywhere
    (local times span 26 hours), so the most restrictive window is where it
    is inside for the most zones: checked here against a brute-force count."""
    zones = world_zones()
    day = utc("2026-01-15T00:00:00")
    best, intervals = unknown_zone_intervals(zones, SMS_HOURS, day.date())

    def coverage(at: datetime) -> int:
        count = 0
        for name in zones:
            local = at.astimezone(ZoneInfo(name))
            count += SMS_HOURS.contains(local.hour * 3600 + local.minute * 60)
        return count

    # Every UTC offset is a multiple of 15 minutes: sampling at that step sees every change.
    samples = {day + timedelta(minutes=15 * i): None for i in range(96)}
    counts = {at: coverage(at) for at in samples}
    assert 0 < best < len(zones)
    assert best == max(counts.values())
    assert {at for at, c in counts.items() if c == best} == {
        at for at in counts if any(start <= at < end for start, end in intervals)
    }
    ada = make_customer()
    decision = check_quiet_hours(ada, Channel.SMS, Category.MARKETING, day)
    assert decision.send_after == intervals[0][0]
    assert f"in the most ({best} of {len(zones)}) of all zones" in decision.reason


# --- all of them ---------------------------------------------------------------


def sms_template(**fields):
    return make_template(channel=Channel.SMS, **fields)


@pytest.fixture
def opted_in():
    ada = make_customer(phone="+14155550123", timezone="America/New_York", email="ada@example.com")
    grant(ada, Channel.SMS, at=utc("2026-01-01T00:00:00"))
    return ada


def test_evaluate_stops_at_the_first_refusal_in_order(opted_in):
    template = sms_template()
    suppression_add(
        channel=Channel.SMS, address=opted_in.phone, reason="manual", source="t", now=NOW
    )
    revoke(opted_in, Channel.SMS, at=NOW)

    decision = evaluate(customer=opted_in, template=template, now=NOW)

    assert (decision.outcome, decision.reason) == (SUPPRESS, "suppressed: added by hand")


def test_a_deferral_for_quiet_hours_is_checked_against_the_cap_at_the_time_it_would_go(opted_in):
    template = sms_template()
    message(opted_in, Channel.SMS, at=utc("2026-06-01T14:00:00"), journey="winback")
    night = utc("2026-06-02T03:00:00")  # 23:00 EDT: quiet until 12:00 UTC

    skipped = evaluate(customer=opted_in, template=template, now=night)
    deferred = evaluate(customer=opted_in, template=template, now=night, over_cap="defer")

    # At 12:00 UTC the last SMS (14:00 yesterday) is still within the day.
    assert (skipped.outcome, skipped.reason) == (SUPPRESS, "skipped: frequency cap 1/1d")
    assert (deferred.outcome, deferred.send_after, deferred.reason) == (
        DEFER,
        utc("2026-06-02T14:00:00"),  # 10:00 EDT
        "deferred: frequency cap 1/1d",
    )
    assert deferred.address == "+14155550123"


def test_a_deferral_for_the_cap_that_lands_in_quiet_hours_moves_to_the_morning(opted_in):
    template = sms_template()
    message(opted_in, Channel.SMS, at=utc("2026-06-01T01:30:00"))

    decision = evaluate(
        customer=opted_in, template=template, now=utc("2026-06-01T12:00:00"), over_cap="defer"
    )

    # The cap frees at 01:30 UTC (21:30 EDT, quiet): the next morning, 08:00 EDT.
    assert decision.send_after == utc("2026-06-02T12:00:00")
    assert decision.reason == "deferred: frequency cap 1/1d"


def test_evaluate_allows_a_send_that_passes_everything(opted_in):
    decision = evaluate(customer=opted_in, template=sms_template(), now=utc("2026-06-01T15:00:00"))

    assert decision == policies.Decision(SEND, address="+14155550123")


def test_a_test_send_skips_consent_caps_and_quiet_hours_but_not_suppression():
    ada = make_customer(phone="+14155550123", timezone="America/New_York")
    template = sms_template()
    night = utc("2026-06-02T03:00:00")

    assert evaluate(customer=ada, template=template, now=night, is_test=True).allowed
    suppression_add(channel=Channel.SMS, address=ada.phone, reason="invalid", source="t", now=night)
    assert evaluate(customer=ada, template=template, now=night, is_test=True).reason == (
        "suppressed: invalid address"
    )


def test_evaluate_refuses_an_unknown_over_cap_choice(opted_in):
    with pytest.raises(ValueError, match="over_cap: must be 'skip' or 'defer', got 'later'"):
        evaluate(customer=opted_in, template=sms_template(), now=NOW, over_cap="later")
