"""Time windows and percentages shared by the dashboards: windows are
half-open [start, end) in UTC, and a rate is None rather than a division by
zero."""

from datetime import UTC, date, datetime, timedelta

MAX_DAYS = 366


def percent(part: int | float, whole: int | float) -> float | None:
    """part / whole as a percentage with one decimal; None when whole is 0."""
    if not whole:
        return None
    return round(100 * part / whole, 1)


def check_window(start: datetime, end: datetime) -> None:
    """Refuse a window the dashboards cannot draw, naming the problem."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be aware datetimes (UTC)")
    if end <= start:
        raise ValueError(f"end ({end:%Y-%m-%d}) must be after start ({start:%Y-%m-%d})")
    if end - start > timedelta(days=MAX_DAYS):
        raise ValueError(f"the window is longer than {MAX_DAYS} days")


def as_date(value: date | datetime) -> date:
    """A truncated time as its UTC day: TruncDate gives a date, TruncMonth an
    aware datetime."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).date()
    return value


def days_between(start: datetime, end: datetime) -> list[date]:
    first, last = start.astimezone(UTC).date(), (end - timedelta(microseconds=1)).astimezone(UTC)
    return [first + timedelta(days=n) for n in range((last.date() - first).days + 1)]


def month_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def add_months(moment: datetime, months: int) -> datetime:
    index = moment.year * 12 + moment.month - 1 + months
    return moment.replace(year=index // 12, month=index % 12 + 1)
