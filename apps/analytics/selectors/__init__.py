"""The dashboards' numbers: journeys, deliverability, retention, NPS and the
marketer's home page, one module each. Reads only, from every app; nothing
here writes.

Every number is an aggregate computed by the database (COUNT/SUM with
filters, grouped by a truncated date or a column); Python only arranges the
rows. Time is a parameter: windows are half-open [start, end) in UTC and
"now" is passed in, so a dashboard and its tests see the same clock.
docs/analytics.md says how each number is computed.
"""

from .deliverability import DeliverabilityRow, deliverability, sent_messages
from .home import Alert, Home, home
from .journeys import DayRow, FunnelRow, GroupConversion, JourneyReport, journey_report
from .nps import nps_comments, nps_distribution
from .retention import (
    Cohorts,
    MonthRow,
    active_subscriptions,
    cohort_retention,
    retention_by_month,
    subscribers_at,
)
from .windows import MAX_DAYS, add_months, check_window, days_between, month_start, percent

__all__ = [
    "MAX_DAYS",
    "Alert",
    "Cohorts",
    "DayRow",
    "DeliverabilityRow",
    "FunnelRow",
    "GroupConversion",
    "Home",
    "JourneyReport",
    "MonthRow",
    "active_subscriptions",
    "add_months",
    "check_window",
    "cohort_retention",
    "days_between",
    "deliverability",
    "home",
    "journey_report",
    "month_start",
    "nps_comments",
    "nps_distribution",
    "percent",
    "retention_by_month",
    "sent_messages",
    "subscribers_at",
]
