"""What the all-or-nothing `load_*` loaders (templates, surveys, segments)
share: reading a file's list of items by slug, each validated by the app's
model and named in every error by its place and slug, and the report of what
was created, updated and kept."""

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError


@dataclass
class LoadReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def describe_errors(exc: ValidationError) -> str:
    """One line naming each offending field: `userId: Field required`."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def validated_items(
    items: Any, model: type[BaseModel], *, noun: str
) -> tuple[list[tuple[str, Any]], list[str]]:
    """Each item validated by `model` (which has a `slug`), with its label for
    messages (`templates[3] ('welcome')`), and the errors found: an invalid
    item, a slug given twice (each named by its label). Raises ValueError
    unless `items` is a list."""
    if not isinstance(items, list):
        raise ValueError(f"the file must hold a list of {noun}s")
    valid: list[tuple[str, Any]] = []
    errors: list[str] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        label = f"{noun}s[{i}]" + (
            f" ({item['slug']!r})" if isinstance(item, dict) and "slug" in item else ""
        )
        try:
            entry = model.model_validate(item)
        except ValidationError as exc:
            errors.append(f"{label}: {describe_errors(exc)}")
            continue
        if entry.slug in seen:
            errors.append(f"{label}: the slug {entry.slug!r} appears twice")
            continue
        seen.add(entry.slug)
        valid.append((label, entry))
    return valid, errors
