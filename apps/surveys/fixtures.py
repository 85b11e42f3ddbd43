"""Surveys from files: the demo's default NPS survey (`fixtures/surveys.json`)
and any team that keeps its copy in version control.

`surveys_load` is all or nothing, like the templates' and segments' loaders:
every entry is checked (its fields, and that its templates exist on the
right channel) before anything is written, so a journey is never left
pointing at a survey that half-loaded. Load the templates first.
"""

from dataclasses import dataclass, field
from typing import Annotated, Any

from django.db import transaction
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from apps.customers.schemas import describe_errors
from apps.messaging.models import Channel, Template

from .models import Survey

Slug = Annotated[str, StringConstraints(pattern=r"^[-a-zA-Z0-9_]+$", max_length=100)]
Line = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]


class SurveyIn(BaseModel):
    """A survey as `load_surveys` reads it: the model's editable fields, the
    templates by slug."""

    model_config = ConfigDict(extra="forbid", strict=True)

    slug: Slug
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    question: Line
    follow_up_question: Line
    thank_you_text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    email_template: Slug | None = None
    sms_template: Slug | None = None


@dataclass
class LoadReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def surveys_load(items: Any, *, only_new: bool = False) -> LoadReport:
    """Upsert surveys by slug from a list of survey objects (see `SurveyIn`),
    all or nothing: an invalid entry raises ValueError naming it and the
    problem (a missing field, an unknown template, a template of the wrong
    channel), and nothing is written. With `only_new`, surveys that exist
    are kept as they are, so a marketer's edits survive `make run`."""
    if not isinstance(items, list):
        raise ValueError("the file must hold a list of surveys")
    errors: list[str] = []
    entries: list[tuple[SurveyIn, dict[str, Template | None]]] = []
    seen: set[str] = set()
    templates = {t.slug: t for t in Template.objects.all()}
    for i, item in enumerate(items):
        label = f"surveys[{i}]" + (
            f" ({item['slug']!r})" if isinstance(item, dict) and "slug" in item else ""
        )
        try:
            entry = SurveyIn.model_validate(item)
        except ValidationError as exc:
            errors.append(f"{label}: {describe_errors(exc)}")
            continue
        if entry.slug in seen:
            errors.append(f"{label}: the slug {entry.slug!r} appears twice")
            continue
        seen.add(entry.slug)
        chosen: dict[str, Template | None] = {}
        for name, channel in (("email_template", Channel.EMAIL), ("sms_template", Channel.SMS)):
            slug = getattr(entry, name)
            template = templates.get(slug) if slug else None
            if slug and template is None:
                errors.append(f"{label}: {name}: unknown template {slug!r}")
            elif template is not None and template.channel != channel:
                errors.append(
                    f"{label}: {name}: {slug!r} is an {template.channel} template, "
                    f"not an {channel} one"
                )
            chosen[name] = template
        if not entry.email_template and not entry.sms_template:
            errors.append(f"{label}: needs an email_template or an sms_template (or both)")
        entries.append((entry, chosen))
    if errors:
        raise ValueError("\n".join(errors))

    report = LoadReport()
    with transaction.atomic():
        existing = set(Survey.objects.values_list("slug", flat=True)) if only_new else set()
        for entry, chosen in entries:
            if entry.slug in existing:
                report.kept.append(entry.slug)
                continue
            _, created = Survey.objects.update_or_create(
                slug=entry.slug,
                defaults={
                    **entry.model_dump(exclude={"slug", "email_template", "sms_template"}),
                    **chosen,
                },
            )
            (report.created if created else report.updated).append(entry.slug)
    return report
