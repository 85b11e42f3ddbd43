"""Loading segments from files (`load_segments`, the demo's fixtures)."""

from typing import Annotated, Any, Literal

from django.db import transaction
from pydantic import BaseModel, ConfigDict, StringConstraints

from apps.core.fixtures import LoadReport, validated_items

from ..conditions import ConditionError, validate_definition
from ..models import Segment
from .refresh import prepare_indexes


class SegmentIn(BaseModel):
    """A segment as `load_segments` reads it."""

    model_config = ConfigDict(extra="forbid")

    slug: Annotated[str, StringConstraints(pattern=r"^[-a-zA-Z0-9_]+$", max_length=100)]
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    description: str = ""
    definition: Any = None
    kind: Literal["dynamic", "static"] = "dynamic"
    # Absent: an existing segment keeps its switch (a reload never reactivates).
    is_active: bool | None = None


def segments_load(items: Any, *, only_new: bool = False) -> LoadReport:
    """Upsert segments by slug from a list of {slug, name, description,
    definition, kind}, all or nothing: any invalid entry raises ValueError
    naming it (and the path of a bad condition) and nothing is written.
    Definitions are checked after every segment of the file is written, inside
    the same transaction, so segments may refer to ones later in the file.
    With `only_new`, segments that exist are kept as they are (a marketer's
    edits survive `make run`)."""
    valid, errors = validated_items(items, SegmentIn, noun="segment")
    entries: list[SegmentIn] = []
    for label, entry in valid:
        if entry.kind == Segment.Kind.STATIC and entry.definition is not None:
            errors.append(f"{label}: a static segment has no definition (its members are a list)")
        entries.append(entry)
    if errors:
        raise ValueError("\n".join(errors))

    report = LoadReport()
    with transaction.atomic():
        existing = set(Segment.objects.values_list("slug", flat=True)) if only_new else set()
        for entry in entries:
            if entry.slug in existing:
                report.kept.append(entry.slug)
                continue
            values = entry.model_dump(exclude={"slug", "is_active"})
            if entry.is_active is not None:
                values["is_active"] = entry.is_active
            _, created = Segment.objects.update_or_create(slug=entry.slug, defaults=values)
            (report.created if created else report.updated).append(entry.slug)
        for i, entry in enumerate(entries):
            if entry.kind == Segment.Kind.DYNAMIC and entry.slug not in existing:
                try:
                    validate_definition(entry.definition, slug=entry.slug)
                except ConditionError as exc:
                    # Raising rolls back every segment written above.
                    raise ValueError(f"segments[{i}] ({entry.slug!r}): definition: {exc}") from None
    # Their date traits' indexes now, rather than in their first refresh.
    for segment in Segment.objects.filter(slug__in=report.created + report.updated):
        if segment.kind == Segment.Kind.DYNAMIC:
            prepare_indexes(segment)
    return report
