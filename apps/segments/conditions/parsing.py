"""Parsing a definition (JSON a marketer wrote) into the typed tree, refusing
anything invalid with a message naming the path of the bad node. Nothing here
reads the database: segment references are checked by validation.py."""

import math
import re
from collections.abc import Iterable
from typing import Any

from apps.core import jsonsafe

from .tree import (
    ACCOUNT_KINDS,
    COMPARE_OPS,
    CONTEXTS,
    COUNT_OPS,
    DATE_OPS,
    NPS_CATEGORIES,
    PRESENCE_OPS,
    RECENCY_OPS,
    TRAIT_NAME,
    TREND_OPS,
    AccountMatch,
    All,
    AnyOf,
    Condition,
    ConditionError,
    EventCount,
    EventDrop,
    EventRecency,
    EventSinceEnrolled,
    Not,
    NpsCategory,
    SegmentRef,
    TraitCompare,
    TraitDate,
)


def parse(definition: Any, *, context: str = "segment") -> Condition:
    """The typed tree of a definition, or ConditionError naming the bad node.
    Segment references are not looked up here (see `validate_definition`)."""
    if context not in CONTEXTS:
        raise ValueError(f"unknown context {context!r}")
    return _parse(definition, "", context)


def _at(path: str) -> str:
    return path or "condition"


def fail(path: str, message: str) -> ConditionError:
    return ConditionError(f"{_at(path)}: {message}")


KINDS = ("all", "any", "not", "trait", "event", "segment", "nps", "account")
# Parsing inside an `{"account": C}`: only what tests an account's traits.
_IN_ACCOUNT = "account"
SLUG_RE = re.compile(r"[-a-zA-Z0-9_]{1,200}")
KEYS = {
    "all": {"all"},
    "any": {"any"},
    "not": {"not"},
    "trait": {"trait", "op", "value", "days"},
    "event": {"event", "op", "value", "within_days", "days", "percent"},
    "segment": {"segment"},
    "nps": {"nps", "within_days"},
    "account": {"account"},
}


def _parse(node: Any, path: str, context: str) -> Condition:
    if not isinstance(node, dict):
        raise fail(path, f'must be an object like {{"trait": …}}, got {_kind(node)}')
    kinds = [k for k in KINDS if k in node]
    if len(kinds) != 1:
        found = ", ".join(repr(k) for k in node) or "nothing"
        raise fail(path, f"needs exactly one of {', '.join(KINDS)}; found {found}")
    kind = kinds[0]
    unknown = sorted(set(node) - KEYS[kind])
    if unknown:
        raise fail(path, f"unknown key {unknown[0]!r} in a {kind!r} condition")
    if context == _IN_ACCOUNT and kind not in ACCOUNT_KINDS:
        raise fail(
            path,
            f"an account condition tests the account's traits: {kind!r} conditions cannot "
            "be used inside it (use trait conditions, combined with all, any and not)",
        )
    if kind in ("all", "any"):
        items = node[kind]
        if not isinstance(items, list) or not items:
            raise fail(path, f"{kind} must be a non-empty list of conditions")
        prefix = f"{path}." if path else ""
        parsed = tuple(_parse(c, f"{prefix}{kind}[{i}]", context) for i, c in enumerate(items))
        return All(parsed) if kind == "all" else AnyOf(parsed)
    if kind == "not":
        return Not(_parse(node["not"], f"{path}.not" if path else "not", context))
    if kind == "trait":
        return _parse_trait(node, path)
    if kind == "event":
        return _parse_event(node, path, context)
    if kind == "account":
        inner = f"{path}.account" if path else "account"
        return AccountMatch(_parse(node["account"], inner, _IN_ACCOUNT))
    if kind == "segment":
        slug = node["segment"]
        if not isinstance(slug, str) or not SLUG_RE.fullmatch(slug):
            got = repr(slug[:60]) if isinstance(slug, str) else _kind(slug)
            raise fail(path, f"segment must be a segment's slug, got {got}")
        return SegmentRef(slug)
    category = node["nps"]
    if not isinstance(category, str) or category not in NPS_CATEGORIES:
        raise fail(
            path,
            f"nps must be one of {', '.join(sorted(NPS_CATEGORIES))}, got {category!r}",
        )
    within = _whole(node, "within_days", path, minimum=1) if "within_days" in node else None
    return NpsCategory(category, within)


def _parse_trait(node: dict, path: str) -> Condition:
    trait, op = node["trait"], node.get("op")
    if not isinstance(trait, str) or not TRAIT_NAME.match(trait):
        raise fail(path, f"trait must be a name of letters, digits, _ or -, got {trait!r}")
    if op in DATE_OPS:
        _no_keys(node, path, ("value",), op)
        return TraitDate(trait, op, _whole(node, "days", path, minimum=0))
    _no_keys(node, path, ("days",), op)
    if op in PRESENCE_OPS:
        _no_keys(node, path, ("value",), op)
        return TraitCompare(trait, op)
    if op not in COMPARE_OPS:
        raise _unknown_op(path, op, COMPARE_OPS | PRESENCE_OPS | DATE_OPS)
    if "value" not in node:
        raise fail(path, f"{op!r} needs a value")
    value = node["value"]
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            raise fail(path, f"{op!r} needs a non-empty list as its value, got {_kind(value)}")
        for i, item in enumerate(value):
            _scalar(item, f"{_at(path)}.value[{i}]", allow_bool=True)
        return TraitCompare(trait, op, tuple(value))
    _scalar(value, f"{_at(path)}.value", allow_bool=op in ("eq", "ne", "contains"))
    return TraitCompare(trait, op, value)


def _parse_event(node: dict, path: str, context: str) -> Condition:
    event, op = node["event"], node.get("op")
    if not isinstance(event, str) or not event or len(event) > 200:
        raise fail(path, f"event must be an event name, got {_kind(event)}")
    if problem := jsonsafe.problem(event, f"{_at(path)}.event"):
        raise ConditionError(problem)
    if op in COUNT_OPS:
        _no_keys(node, path, ("days", "percent"), op)
        within = _whole(node, "within_days", path, minimum=1) if "within_days" in node else None
        return EventCount(event, op, _whole(node, "value", path, minimum=0), within)
    if op in RECENCY_OPS:
        _no_keys(node, path, ("value", "within_days", "percent"), op)
        return EventRecency(event, op, _whole(node, "days", path, minimum=1))
    if op in TREND_OPS:
        _no_keys(node, path, ("value", "within_days"), op)
        percent = _whole(node, "percent", path, minimum=1)
        if percent > 100:
            raise fail(path, f"percent must be at most 100, got {percent}")
        return EventDrop(event, percent, _whole(node, "days", path, minimum=1))
    if op == "since_enrolled":
        _no_keys(node, path, ("value", "within_days", "days", "percent"), op)
        if context != "journey":
            raise fail(path, "'since_enrolled' only works in a journey's branches and goals")
        return EventSinceEnrolled(event)
    raise _unknown_op(path, op, COUNT_OPS | RECENCY_OPS | TREND_OPS | {"since_enrolled"})


def _unknown_op(path: str, op: Any, known: Iterable[str]) -> ConditionError:
    if op is None:
        return fail(path, f"needs an op, one of {', '.join(sorted(known))}")
    return fail(path, f"unknown op {op!r}; use one of {', '.join(sorted(known))}")


def _no_keys(node: dict, path: str, keys: Iterable[str], op: str) -> None:
    for key in keys:
        if key in node:
            raise fail(path, f"{op!r} takes no {key!r}")


# Day counts and counts a condition may name. Beyond them, `now - days`
# overflowed Python's dates (an OverflowError in the engine at each check of
# a journey's branch or goal) and counts overflowed the database's integers.
MAX_DAYS = 36_600  # a hundred years
MAX_COUNT = 2**31 - 1
MAX_INTEGER = 2**63 - 1  # a value a condition compares with


def _whole(node: dict, key: str, path: str, *, minimum: int) -> int:
    value = node.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise fail(path, f"{key} must be a whole number ≥ {minimum}, got {value!r}")
    maximum = MAX_COUNT if key == "value" else MAX_DAYS
    if value > maximum:
        raise fail(path, f"{key} must be at most {maximum:,}, got {value}")
    return value


def _scalar(value: Any, where: str, *, allow_bool: bool) -> None:
    if isinstance(value, bool) and not allow_bool:
        raise ConditionError(f"{where}: a true/false value cannot be ordered")
    if value is None:
        raise ConditionError(f"{where}: null is not a value; use 'exists' or 'not_exists'")
    if not isinstance(value, str | int | float):
        raise ConditionError(f"{where}: must be a string, number or true/false, got {_kind(value)}")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INTEGER:
        # A bound the language has always kept (a 64-bit integer): definitions
        # saved under it stay valid, and no trait is compared beyond it.
        raise ConditionError(f"{where}: a whole number must be within ±{MAX_INTEGER:,}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConditionError(f"{where}: must be a finite number, got {value}")
    if isinstance(value, str) and (problem := jsonsafe.problem(value, where)):
        raise ConditionError(problem)  # NUL, a lone surrogate: PostgreSQL cannot compare them


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false"}.get(
        type(value), "null" if value is None else "a number"
    )
