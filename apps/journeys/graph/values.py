"""The small typed values a journey file is made of, and `JourneyError`
(apps/journeys/graph/__init__.py describes the file)."""

import re
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

MAX_NODE_ID = 100  # Enrollment.current_node's length
NODE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
SLUG_RE = re.compile(r"^[-a-zA-Z0-9_]{1,100}$")
TRAIT_RE = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
SECRET_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
HHMM_RE = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_DURATION = timedelta(days=3660)  # ten years: longer is a typo
# How deep a journey file may nest (conditions, traits, the builder's `ui`):
# deeper is no journey anyone writes, and Python's recursion (parsing,
# checking, storing) gives out near a thousand levels.
MAX_DEPTH = 64
CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")


class JourneyError(ValueError):
    """An invalid journey file. `errors` holds every problem as (path, message)."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = list(errors)
        super().__init__("; ".join(f"{path}: {message}" for path, message in self.errors))

    def lines(self) -> list[str]:
        return [f"{path}: {message}" for path, message in self.errors]


# --- small typed values ----------------------------------------------------------


def _node_id(value: str) -> str:
    if not NODE_ID_RE.match(value):
        raise ValueError(
            f"must be 1-{MAX_NODE_ID} letters, digits, _ or - (got {value!r}); "
            "node ids name nodes in edges and in error messages"
        )
    return value


def _slug(value: str) -> str:
    if not SLUG_RE.match(value):
        raise ValueError(f"must be a slug of letters, digits, _ or - (got {value!r})")
    return value


def _name(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _hhmm(value: str) -> str:
    if not HHMM_RE.match(value):
        raise ValueError(f"must be a time of day as HH:MM, 00:00 to 23:59 (got {value!r})")
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL with a host (got {value!r})")
    return value


def _trait_name(value: str) -> str:
    if not TRAIT_RE.match(value):
        raise ValueError(f"must be a trait name of letters, digits, _ or - (got {value!r})")
    return value


NodeId = Annotated[str, AfterValidator(_node_id)]
Slug = Annotated[str, AfterValidator(_slug)]
Name = Annotated[str, Field(max_length=200), AfterValidator(_name)]
EventName = Annotated[str, Field(min_length=1, max_length=200)]
TraitName = Annotated[str, AfterValidator(_trait_name)]
Scalar = str | int | float | bool | None


class _Strict(BaseModel):
    # Strict: "2" is not a number and true is not 1; a journey file says what it means.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


_UNIT_BOUND = 1_000_000  # days; timedelta holds up to 999,999,999


class Duration(_Strict):
    """days/hours/minutes, summed; more than zero, at most ten years."""

    # Each bounded by itself too, far above MAX_DURATION (which `_positive`
    # names): `timedelta(days=10**20)` overflowed before the sum could be
    # compared with it (a 500 in the builder).
    days: int = Field(0, ge=0, le=_UNIT_BOUND)
    hours: int = Field(0, ge=0, le=_UNIT_BOUND * 24)
    minutes: int = Field(0, ge=0, le=_UNIT_BOUND * 24 * 60)

    @model_validator(mode="before")
    @classmethod
    def _units(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = [k for k in data if k not in ("days", "hours", "minutes")]
            if unknown:
                raise ValueError(f"unknown unit {unknown[0]!r}; use days, hours or minutes")
            if not data:
                raise ValueError("needs days, hours or minutes")
        return data

    @model_validator(mode="after")
    def _positive(self) -> "Duration":
        if self.timedelta <= timedelta(0):
            raise ValueError("must be more than zero")
        if self.timedelta > MAX_DURATION:
            raise ValueError(f"must be at most {MAX_DURATION.days} days")
        return self

    @property
    def timedelta(self) -> timedelta:
        return timedelta(days=self.days, hours=self.hours, minutes=self.minutes)


class Ui(BaseModel):
    """The builder's layout data; open to what the builder needs."""

    model_config = ConfigDict(extra="allow", frozen=True)

    x: float = 0
    y: float = 0
