"""Message templates from files: the demo's templates (`fixtures/templates.json`)
and any team that keeps its copy in version control.

`templates_load` is all or nothing, like `segments_load`: every entry is
checked (fields, then `rendering.template_check`, the same check the admin
form runs) before anything is written, and one bad template writes nothing,
so a half-loaded set never leaves a journey pointing at a missing template.
"""

from typing import Annotated, Any, Literal

from django.db import transaction
from pydantic import BaseModel, ConfigDict, StringConstraints, model_validator

from apps.core.fixtures import LoadReport, validated_items

from .models import Category, Channel, Template

Slug = Annotated[str, StringConstraints(pattern=r"^[-a-zA-Z0-9_]+$", max_length=100)]


class TemplateIn(BaseModel):
    """A template as `load_templates` reads it: the model's editable fields."""

    model_config = ConfigDict(extra="forbid", strict=True)

    slug: Slug
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    channel: Literal["email", "sms"]
    category: Literal["marketing", "transactional"] = Category.MARKETING.value
    topic: Annotated[str, StringConstraints(pattern=r"^[-a-zA-Z0-9_]*$", max_length=50)] = ""
    subject: Annotated[str, StringConstraints(max_length=500)] = ""
    preheader: Annotated[str, StringConstraints(max_length=300)] = ""
    html: str = ""
    text: str = ""
    from_email: Annotated[str, StringConstraints(max_length=254)] = ""
    reply_to: Annotated[str, StringConstraints(max_length=254)] = ""
    body: str = ""

    @model_validator(mode="after")
    def _fields_of_its_channel(self) -> "TemplateIn":
        if self.channel == Channel.EMAIL:
            if not self.subject.strip():
                raise ValueError("an email template needs a subject")
            if not (self.html.strip() or self.text.strip()):
                raise ValueError("an email template needs html or text")
            if self.body:
                raise ValueError("body is for SMS templates; an email has html and text")
        else:
            if not self.body.strip():
                raise ValueError("an SMS template needs a body")
            used = [
                name
                for name in ("subject", "preheader", "html", "text", "from_email", "reply_to")
                if getattr(self, name)
            ]
            if used:
                raise ValueError(f"an SMS template has only a body, not {', '.join(used)}")
        return self


def templates_load(items: Any, *, only_new: bool = False) -> LoadReport:
    """Upsert templates by slug from a list of template objects (see
    `TemplateIn`), all or nothing: any invalid entry raises ValueError naming
    it and the problem (a missing field, a template that does not render, a
    marketing email without its unsubscribe link), and nothing is written.
    With `only_new`, templates that exist are kept as they are, so a
    marketer's edits in the admin survive `make run`."""
    valid, errors = validated_items(items, TemplateIn, noun="template")
    entries: list[TemplateIn] = []
    for label, entry in valid:
        problems = _check(Template(**entry.model_dump()))
        if problems:
            errors.append(f"{label}: " + "; ".join(problems))
        entries.append(entry)
    if errors:
        raise ValueError("\n".join(errors))

    report = LoadReport()
    with transaction.atomic():
        existing = set(Template.objects.values_list("slug", flat=True)) if only_new else set()
        for entry in entries:
            if entry.slug in existing:
                report.kept.append(entry.slug)
                continue
            _, created = Template.objects.update_or_create(
                slug=entry.slug, defaults=entry.model_dump(exclude={"slug"})
            )
            (report.created if created else report.updated).append(entry.slug)
    return report


def _check(template: Template) -> list[str]:
    # Imported here: rendering imports the models and the links, and a loader
    # that is only ever called from a command need not load them at start-up.
    from .rendering import template_check

    return template_check(template)
