"""NPS selectors against a hand-computed history.

Invitations (all through the real invite service):
  March 2: m1..m6 (no journey)            April 6: a1..a4 (journey "win-back")
Answers (first given):
  Mar 3  m1 10, m2 9          Apr 7  a1 9, m6 6 "Meh"
  Mar 10 m3 8, m4 3 "Too pricey", m5 0      Apr 8  a2 10, a3 7
  (a4 never answers)

  March answers: P2 (m1 m2) Pa1 (m3) D2 (m4 m5) -> NPS (2-2)/5 = 0.0
  April answers: P2 (a1 a2) Pa1 (a3) D1 (m6)    -> NPS (2-1)/4 = 25.0
  Sent in March 6, answered 6 (m6 in April) -> 100.0 %; April 4, answered 3 -> 75.0 %
  All: P4 Pa2 D3 -> (4-3)/9 = 11.1; 10 sent, 9 answered -> 90.0 %
"""

from datetime import UTC, datetime

import pytest

from apps.segments.models import Segment, SegmentMembership
from apps.surveys import selectors
from apps.surveys.selectors import NpsSummary
from apps.surveys.services import survey_respond

pytestmark = pytest.mark.django_db


def at(month: int, day: int, hour: int = 12) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


@pytest.fixture
def history(settings, survey, make_customer, invite):
    settings.NPS_LINK_VALID_DAYS = 60
    people = {name: make_customer(external_id=name) for name in
              ["m1", "m2", "m3", "m4", "m5", "m6", "a1", "a2", "a3", "a4"]}  # fmt: skip
    invitations = {}
    for name, customer in people.items():
        if name.startswith("m"):
            invitations[name] = invite(customer, at=at(3, 2))
        else:
            invitations[name] = invite(customer, at=at(4, 6), journey="win-back", node_id="nps")
    answers = [
        ("m1", 10, "", at(3, 3)),
        ("m2", 9, "", at(3, 3)),
        ("m3", 8, "", at(3, 10)),
        ("m4", 3, "Too pricey", at(3, 10)),
        ("m5", 0, "", at(3, 10)),
        ("a1", 9, "", at(4, 7)),
        ("m6", 6, "Meh", at(4, 7, 13)),
        ("a2", 10, "", at(4, 8)),
        ("a3", 7, "", at(4, 8)),
    ]
    for name, score, comment, when in answers:
        survey_respond(invitation=invitations[name], score=score, comment=comment, now=when)
    return people


def test_the_score_is_promoters_minus_detractors_over_responses():
    assert NpsSummary(promoters=4, passives=2, detractors=3).score == 11.1
    assert NpsSummary(promoters=0, passives=0, detractors=2).score == -100.0
    assert NpsSummary(promoters=3).score == 100.0
    assert NpsSummary().score is None
    assert NpsSummary(sent=3, answered=1).response_rate == 33.3
    assert NpsSummary().response_rate is None


def test_the_summary_over_everything(history):
    summary = selectors.nps_summary(survey="nps")

    assert (summary.promoters, summary.passives, summary.detractors) == (4, 2, 3)
    assert (summary.responses, summary.score) == (9, 11.1)
    assert (summary.sent, summary.answered, summary.response_rate) == (10, 9, 90.0)


def test_by_month(history):
    rows = selectors.nps_by_period(period="month", start=at(3, 1, 0), end=at(5, 1, 0))

    assert [row.key for row in rows] == ["2026-03-01", "2026-04-01"]
    march, april = (row.summary for row in rows)
    assert (march.promoters, march.passives, march.detractors, march.score) == (2, 1, 2, 0.0)
    assert (march.sent, march.answered, march.response_rate) == (6, 6, 100.0)
    assert (april.promoters, april.passives, april.detractors, april.score) == (2, 1, 1, 25.0)
    assert (april.sent, april.answered, april.response_rate) == (4, 3, 75.0)


def test_by_week_with_the_empty_weeks_in_between(history):
    rows = selectors.nps_by_period(period="week", start=at(3, 1, 0), end=at(4, 12, 0))

    by_week = {row.key: row.summary for row in rows}
    assert list(by_week) == [
        "2026-02-23", "2026-03-02", "2026-03-09", "2026-03-16", "2026-03-23", "2026-03-30",
        "2026-04-06",
    ]  # fmt: skip
    assert by_week["2026-02-23"] == NpsSummary()
    assert (by_week["2026-03-02"].score, by_week["2026-03-02"].sent) == (100.0, 6)
    week_9 = by_week["2026-03-09"]
    assert (week_9.passives, week_9.detractors, week_9.score, week_9.response_rate) == (
        1,
        2,
        -66.7,
        None,
    )
    week_apr = by_week["2026-04-06"]
    assert (week_apr.responses, week_apr.score, week_apr.response_rate) == (4, 25.0, 75.0)


def test_an_unknown_period_is_refused():
    with pytest.raises(ValueError, match="period: must be 'week' or 'month', got 'day'"):
        selectors.nps_by_period(period="day", start=at(3, 1), end=at(4, 1))


def test_by_journey_best_first(history):
    rows = selectors.nps_by_journey()

    assert [row.key for row in rows] == ["win-back", ""]
    win_back, direct = rows[0].summary, rows[1].summary
    # win-back: a1 9, a2 10, a3 7 -> (2-0)/3
    assert (win_back.score, win_back.sent, win_back.answered) == (66.7, 4, 3)
    # no journey: m1..m6 -> P2 Pa1 D3 -> (2-3)/6
    assert (direct.score, direct.sent, direct.answered, direct.response_rate) == (
        -16.7,
        6,
        6,
        100.0,
    )
    only_march = selectors.nps_summary(journey="", start=at(3, 1), end=at(4, 1))
    assert (only_march.responses, only_march.score) == (5, 0.0)


def test_by_segment_counts_its_current_members(history):
    vip = Segment.objects.create(slug="vip", name="VIP", kind=Segment.Kind.STATIC)
    for name in ("m1", "a3", "m4"):
        SegmentMembership.objects.create(segment=vip, customer=history[name], entered_at=at(1, 1))
    SegmentMembership.objects.create(
        segment=vip, customer=history["m5"], entered_at=at(1, 1), exited_at=at(2, 1)
    )
    Segment.objects.create(slug="empty", name="Empty", kind=Segment.Kind.STATIC)

    rows = selectors.nps_by_segment(["vip", "empty"])

    assert [row.key for row in rows] == ["vip", "empty"]
    vip_summary = rows[0].summary
    # m1 10 (P), a3 7 (Pa), m4 3 (D) -> (1-1)/3
    assert (vip_summary.responses, vip_summary.score, vip_summary.sent) == (3, 0.0, 3)
    assert rows[1].summary == NpsSummary()


def test_the_detractor_comments_latest_first(history):
    comments = selectors.detractor_comments()

    assert [(r.customer.external_id, r.score, r.comment) for r in comments] == [
        ("m6", 6, "Meh"),
        ("m4", 3, "Too pricey"),
    ]
    assert selectors.detractor_comments(journey="win-back") == []
    assert [r.comment for r in selectors.detractor_comments(start=at(4, 1))] == ["Meh"]
