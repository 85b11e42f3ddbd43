from datetime import date, timedelta

import pytest

from apps.analytics import selectors
from apps.messaging.models import Suppression

from .conftest import NOW

DAY = timedelta(days=1)
START, END = NOW - 10 * DAY, NOW


def test_the_journey_report_counts_the_funnel_conversion_lift_and_messages(
    customer, journey, enroll, message
):
    j = journey()
    at = NOW - 5 * DAY
    # Treated: 3 enrolled, 2 converted; held out: 2 enrolled, 0 converted.
    for nodes, state in (
        (["welcome", "wait1", "done"], "converted"),
        (["welcome", "wait1"], "converted"),
        (["welcome"], "active"),
    ):
        c = customer()
        enroll(j, c, at=at, nodes=nodes, state=state, finished_at=at + DAY)
        message(c, at=at, journey=j.slug, status="delivered")
    for _ in range(2):
        enroll(j, customer(), at=at, nodes=["welcome"], holdout=True)
    # Entered before the window: not counted.
    enroll(j, customer(), at=NOW - 20 * DAY, nodes=["welcome"], state="converted")
    message(customer(), at=at, journey=j.slug, status="suppressed")

    report = selectors.journey_report(journey=j, start=START, end=END)

    assert [(r.node_id, r.reached) for r in report.funnel] == [
        ("welcome", 5),
        ("wait1", 2),
        ("done", 1),
    ]
    assert report.funnel[1].share == 40.0
    assert (report.treated.enrolled, report.treated.converted) == (3, 2)
    assert (report.holdout.enrolled, report.holdout.converted) == (2, 0)
    assert report.treated.rate == 66.7
    assert report.lift == 66.7
    assert report.conversion_rate == 40.0
    assert dict(report.messages_by_status) == {"delivered": 3, "suppressed": 1}
    by_day = {d.day: d for d in report.daily}
    assert len(report.daily) == 11  # noon to noon touches 11 days
    assert (by_day[at.date()].enrolled, by_day[at.date()].messages) == (5, 3)
    assert by_day[(at + DAY).date()].converted == 2


def test_the_lift_needs_both_groups(customer, journey, enroll):
    j = journey()
    enroll(j, customer(), at=NOW - DAY, state="converted")
    assert selectors.journey_report(journey=j, start=START, end=END).lift is None


def test_a_window_that_ends_before_it_starts_is_refused(journey):
    with pytest.raises(ValueError, match="must be after start"):
        selectors.journey_report(journey=journey(), start=END, end=START)


def test_deliverability_counts_people_and_machines_apart_by_channel_and_template(
    customer, template, message, engage
):
    news, promo = template("news"), template("promo")
    at = NOW - 2 * DAY
    a, b, c, d = (message(customer(), at=at, template=news) for _ in range(4))
    for m in (a, b, c):
        m.status, m.delivered_at = "delivered", at
        m.save()
    engage(a, "open", at=at)
    engage(a, "click", at=at)
    engage(b, "open", at=at, machine=True)
    engage(b, "click", at=at, machine=True)
    d.status = "bounced"
    d.save()
    e = message(customer(), at=at, template=promo, status="complained")
    # Unsubscribed by the link two days after the message: counted against it.
    Suppression.objects.create(
        channel="email", address=e.to_address, reason="unsubscribe", created_at=at + 2 * DAY
    )
    message(customer(), at=at, template=promo, is_test=True)  # test sends are left out
    message(customer(), at=NOW - 30 * DAY, template=promo)  # outside the window

    by_channel, by_template = selectors.deliverability(start=START, end=END)

    (email,) = by_channel
    assert (email.sent, email.delivered, email.bounced, email.complained) == (5, 4, 1, 1)
    assert (email.opened, email.clicked, email.machine_opened, email.machine_clicked) == (
        1,
        1,
        1,
        1,
    )
    assert email.unsubscribed == 1
    assert (email.bounce_rate, email.complaint_rate, email.open_rate) == (20.0, 20.0, 25.0)
    assert [(r.template, r.sent, r.delivered) for r in by_template] == [
        ("news", 4, 3),
        ("promo", 1, 1),
    ]


def test_retention_counts_subscribers_mrr_churn_and_renewals_by_month(customer, event):
    # NOW is 2026-03-15. Three subscriptions start in January.
    jan, feb, mar = NOW.replace(month=1, day=5), NOW.replace(month=2, day=5), NOW.replace(day=5)
    a, b, c = customer(), customer(), customer()
    for who, mrr in ((a, 29), (b, 79), (c, 199)):
        event(who, "subscription_started", at=jan, mrr=mrr, plan="x")
    event(a, "subscription_renewed", at=feb, mrr=29)
    event(b, "subscription_renewed", at=feb, mrr=79)
    event(c, "subscription_canceled", at=feb + DAY, mrr=199)
    event(a, "subscription_renewed", at=mar, mrr=29)
    event(b, "payment_failed", at=mar, mrr=79)

    rows = selectors.retention_by_month(now=NOW, months=3)

    assert [r.month for r in rows] == [date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1)]
    jan_row, feb_row, mar_row = rows
    assert (jan_row.active_at_start, jan_row.started, jan_row.active_at_end) == (0, 3, 3)
    assert jan_row.mrr_at_end == 307.0
    assert (feb_row.renewed, feb_row.canceled, feb_row.churn_rate) == (2, 1, 33.3)
    assert feb_row.renewal_rate == 66.7
    assert (mar_row.active_at_end, mar_row.mrr_at_end) == (2, 108.0)
    assert mar_row.renewal_rate == 50.0
    assert selectors.subscribers_at(NOW) == (2, 108.0)


def test_a_resubscribed_customer_is_active_again(customer, event):
    a = customer()
    event(a, "subscription_started", at=NOW - 60 * DAY, mrr=29)
    event(a, "subscription_canceled", at=NOW - 40 * DAY, mrr=29)
    assert selectors.subscribers_at(NOW) == (0, 0.0)
    event(a, "subscription_started", at=NOW - 10 * DAY, mrr=79)
    assert selectors.subscribers_at(NOW) == (1, 79.0)


def test_cohort_retention_is_the_share_of_a_signup_month_active_later(customer, event):
    jan = NOW.replace(month=1, day=10)
    a, b, c, d = (customer() for _ in range(4))
    for who in (a, b, c):
        event(who, "signed_up", at=jan)
    event(d, "signed_up", at=NOW.replace(month=2, day=3))
    event(a, "logged_in", at=NOW.replace(month=2, day=1))
    event(b, "logged_in", at=NOW.replace(month=2, day=2))
    event(b, "logged_in", at=NOW.replace(month=3, day=2))
    # Opening our email is not using the product.
    event(c, "email_opened", at=NOW.replace(month=2, day=2))

    cohorts = selectors.cohort_retention(now=NOW, months=3)

    jan_d, feb_d = date(2026, 1, 1), date(2026, 2, 1)
    assert cohorts.sizes == {jan_d: 3, feb_d: 1}
    assert cohorts.rate(jan_d, 0) == 100.0  # the signup itself
    assert cohorts.rate(jan_d, 1) == 66.7
    assert cohorts.rate(jan_d, 2) == 33.3
    assert cohorts.rate(feb_d, 1) == 0.0


def test_months_out_of_range_are_refused():
    with pytest.raises(ValueError, match="months"):
        selectors.retention_by_month(now=NOW, months=0)


def test_the_home_page_alerts_on_failures_high_bounce_rates_and_unknown_messages(
    customer, journey, enroll, message, settings
):
    settings.ANALYTICS_ALERT_MIN_SENT = 2
    settings.ANALYTICS_BOUNCE_RATE_ALERT = 10.0
    j = journey()
    enroll(j, customer(), at=NOW - DAY, state="failed", finished_at=NOW - 3600 * DAY / 86400)
    enroll(j, customer(), at=NOW - DAY)
    message(customer(), at=NOW - DAY, status="bounced")
    message(customer(), at=NOW - 60 * DAY / 86400, status="delivered")
    message(customer(), at=NOW - DAY, status="unknown")

    home = selectors.home(now=NOW)

    assert home.live_journeys == [{"slug": "welcome", "name": "Welcome", "active": 1}]
    assert home.sent_today == {"email": 1}
    texts = " | ".join(a.text for a in home.alerts)
    assert "Welcome: 1 enrollment failed" in texts
    assert "email bounce rate 33.3%" in texts
    assert "1 message in state unknown" in texts


def test_the_home_page_is_quiet_when_all_is_well(customer, message):
    message(customer(), at=NOW - DAY, status="delivered")
    assert selectors.home(now=NOW).alerts == []
