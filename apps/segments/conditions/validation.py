"""Validation with the database: the segments a condition names exist and
form no cycle."""

from collections.abc import Callable, Iterable
from typing import Any

from .parsing import fail, parse
from .tree import All, AnyOf, Condition, ConditionError, Not, SegmentRef


def validate_definition(
    definition: Any, *, context: str = "segment", slug: str | None = None
) -> Condition:
    """Parse and check the segments it names exist and form no cycle (a
    reference back to `slug`, the segment being defined, is one)."""
    condition = parse(definition, context=context)
    check_segments(condition, chain=(slug,) if slug else (), lookup=segment_lookup())
    return condition


def segment_lookup() -> Callable[[str], Any]:
    from ..models import Segment

    cache: dict[str, Any] = {}

    def lookup(slug: str):
        if slug not in cache:
            cache[slug] = Segment.objects.filter(slug=slug).first()
        return cache[slug]

    return lookup


def check_segments(
    condition: Condition, *, chain: tuple[str, ...], lookup, at: str | None = None
) -> None:
    """Every referenced segment exists and none leads back into `chain`. Problems
    found inside a referenced segment are reported at the reference (`at`): the
    path a marketer can see in the tree being edited."""
    for ref, path in segment_refs(condition, ""):
        where = path if at is None else at
        if ref.segment in chain:
            cycle = " → ".join((*chain[chain.index(ref.segment) :], ref.segment))
            raise fail(where, f"segment {ref.segment!r} refers back to itself ({cycle})")
        segment = lookup(ref.segment)
        if segment is None:
            raise fail(where, f"unknown segment {ref.segment!r}")
        if segment.definition:
            try:
                nested = parse(segment.definition)
            except ConditionError as exc:
                raise fail(where, f"segment {ref.segment!r} is invalid: {exc}") from None
            check_segments(nested, chain=(*chain, ref.segment), lookup=lookup, at=where)


def segment_refs(condition: Condition, path: str) -> Iterable[tuple[SegmentRef, str]]:
    if isinstance(condition, SegmentRef):
        yield condition, path
    elif isinstance(condition, All | AnyOf):
        kind = "all" if isinstance(condition, All) else "any"
        prefix = f"{path}." if path else ""
        for i, item in enumerate(condition.items):
            yield from segment_refs(item, f"{prefix}{kind}[{i}]")
    elif isinstance(condition, Not):
        yield from segment_refs(condition.item, f"{path}.not" if path else "not")
