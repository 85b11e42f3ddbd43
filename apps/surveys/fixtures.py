"""Surveys from files: the demo's default NPS survey (`fixtures/surveys.json`)
and any team that keeps its copy in version control.

`surveys_load` is all or nothing, like the templates' and segments' loaders:
every entry is checked (its fields, and that its templates exist on the
right channel) before anything is written, so a journey is never left
pointing at a survey that half-loaded. Load the templates first.
"""

from typing import Annotated, Any

from django.db import transaction
from pydantic import BaseModel, ConfigDict, StringConstraints

from apps.core.fixtures import LoadReport, validated_items
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


def surveys_load(items: Any, *, only_new: bool = False) -> LoadReport:
    """Upsert surveys by slug from a list of survey objects (see `SurveyIn`),
    all or nothing: an invalid entry raises ValueError naming it and the
    problem (a missing field, an unknown template, a template of the wrong
    channel), and nothing is written. With `only_new`, surveys that exist
    are kept as they are, so a marketer's edits survive `make run`."""
    valid, errors = validated_items(items, SurveyIn, noun="survey")
    entries: list[tuple[SurveyIn, dict[str, Template | None]]] = []
    templates = {t.slug: t for t in Template.objects.all()}
    for label, entry in valid:
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
