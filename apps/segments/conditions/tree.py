"""The condition language's typed tree: one frozen dataclass per kind of node,
the operators each kind takes, and the error an invalid tree raises. Parsing
(parsing.py) builds it; the compiler (compiler.py) and the incremental
refresh (../incremental.py) walk it."""

import re
from dataclasses import dataclass
from typing import Any

TRAIT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,200}$")

COMPARE_OPS = {"eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "contains"}
PRESENCE_OPS = {"exists", "not_exists"}
DATE_OPS = {"within_next", "within_last", "before_days_ago", "after_days_ago"}
COUNT_OPS = {"count_gte", "count_lt"}
TREND_OPS = {"dropped_by"}
RECENCY_OPS = {"since", "not_since"}
NPS_CATEGORIES = {"promoter", "passive", "detractor"}
NPS_EVENT = "nps_responded"  # recorded by apps/surveys for each answer
CONTEXTS = {"segment", "journey"}
# What may be inside an `{"account": C}`: the account's traits, combined.
ACCOUNT_KINDS = ("all", "any", "not", "trait")


class ConditionError(ValueError):
    """An invalid condition; the message names the path of the bad node."""


@dataclass(frozen=True, slots=True)
class All:
    items: tuple["Condition", ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    items: tuple["Condition", ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: "Condition"


@dataclass(frozen=True, slots=True)
class TraitCompare:
    trait: str
    op: str
    value: Any = None


@dataclass(frozen=True, slots=True)
class TraitDate:
    trait: str
    op: str
    days: int


@dataclass(frozen=True, slots=True)
class EventCount:
    event: str
    op: str
    value: int
    within_days: int | None


@dataclass(frozen=True, slots=True)
class EventRecency:
    event: str
    op: str
    days: int


@dataclass(frozen=True, slots=True)
class EventDrop:
    event: str
    percent: int
    days: int


@dataclass(frozen=True, slots=True)
class EventSinceEnrolled:
    event: str


@dataclass(frozen=True, slots=True)
class SegmentRef:
    segment: str


@dataclass(frozen=True, slots=True)
class NpsCategory:
    category: str
    within_days: int | None


@dataclass(frozen=True, slots=True)
class AccountMatch:
    """Any of the customer's accounts satisfies `item`: a trait condition, or
    an all/any/not tree of them, tested on the account's traits."""

    item: "Condition"


Condition = (
    All
    | AnyOf
    | Not
    | TraitCompare
    | TraitDate
    | EventCount
    | EventRecency
    | EventDrop
    | EventSinceEnrolled
    | SegmentRef
    | NpsCategory
    | AccountMatch
)
