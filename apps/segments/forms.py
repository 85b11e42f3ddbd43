"""The marketer's forms: a segment with its condition editor, and a static
segment's list upload."""

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.forms.fields import InvalidJSONInput
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe

from . import services
from .conditions import EXAMPLES, ConditionError, validate_definition
from .models import Segment


class ConditionJSONField(forms.JSONField):
    """JSON shown pretty-printed, an empty editor for "no condition", and a
    syntax error that says where it is."""

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        try:
            return super().to_python(value)
        except ValidationError:
            try:
                json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValidationError(
                    "Not valid JSON: %(error)s (line %(line)s, column %(column)s).",
                    code="invalid",
                    params={"error": exc.msg, "line": exc.lineno, "column": exc.colno},
                ) from None
            raise

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, InvalidJSONInput):
            return value
        if value is None:
            return ""
        return json.dumps(_readable(value), ensure_ascii=False, indent=2)


# PostgreSQL's jsonb stores keys shortest first ({"op", "trait", "value"}); the
# editor shows them in the order the condition reads.
KEY_ORDER = ("all", "any", "not", "trait", "event", "segment", "nps", "op", "value", "percent")


def _readable(node: Any) -> Any:
    if isinstance(node, list):
        return [_readable(item) for item in node]
    if isinstance(node, dict):
        rank = {key: i for i, key in enumerate(KEY_ORDER)}
        keys = sorted(node, key=lambda k: (rank.get(k, len(rank)), k))
        return {key: _readable(node[key]) for key in keys}
    return node


class ConditionEditor(forms.Textarea):
    """A monospace JSON textarea with a syntax check as you type, a Preview
    button, and the example library and operator reference beside it.

    Rendered with the project's template engine (the form renderer only sees
    Django's own widget templates)."""

    def __init__(self, attrs: dict | None = None):
        base = {"rows": 20, "cols": 60, "spellcheck": "false", "class": "condition-editor"}
        super().__init__(attrs={**base, **(attrs or {})})
        self.preview_url = ""
        self.slug = ""

    def render(self, name, value, attrs=None, renderer=None) -> SafeString:
        textarea = super().render(name, value, attrs, renderer)
        html = render_to_string(
            "admin/segments/condition_editor.html",
            {
                "textarea": textarea,
                "editor_id": (attrs or {}).get("id", f"id_{name}"),
                "preview_url": self.preview_url,
                "slug": self.slug,
                "examples": EXAMPLES,
            },
        )
        return mark_safe(html)  # noqa: S308 (an autoescaped template's output)


class SegmentForm(forms.ModelForm):
    definition = ConditionJSONField(
        required=False,
        label="Condition",
        widget=ConditionEditor,
        help_text="The condition tree, as JSON. Dynamic segments need one; static segments "
        "have none (their members are uploaded).",
    )

    class Meta:
        model = Segment
        fields = ("name", "slug", "description", "kind", "is_active", "definition")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # self.fields are this form's own copies: safe to set per request.
        editor = self.fields["definition"].widget
        editor.preview_url = reverse("admin:segments_segment_preview")
        editor.slug = self.instance.slug if self.instance.pk else ""

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        kind = cleaned.get("kind", self.instance.kind)
        definition = cleaned.get("definition")
        if "definition" in self.errors:
            return cleaned
        if kind == Segment.Kind.STATIC:
            if definition is not None:
                self.add_error(
                    "definition",
                    "A static segment has no condition: its members are uploaded. "
                    "Empty the editor, or make the segment dynamic.",
                )
            return cleaned
        if definition is None:
            self.add_error("definition", "A dynamic segment needs a condition.")
            return cleaned
        # The slug being saved: a reference back to it is a cycle.
        slug = self.instance.slug if self.instance.pk else cleaned.get("slug")
        try:
            validate_definition(definition, context="segment", slug=slug or None)
        except ConditionError as exc:
            self.add_error("definition", str(exc))
        return cleaned


class StaticUploadForm(forms.Form):
    """A CSV of external ids, and what to do with the current list: there is
    no default, replacing a list by accident is not undoable."""

    MODES = (
        ("replace", "Replace: the file becomes the whole list (members not in it leave)"),
        ("append", "Append: add the file's customers, keep everyone already in"),
    )

    file = forms.FileField(
        label="CSV file",
        help_text="UTF-8 CSV: a column headed external_id (other columns are ignored), "
        "or one external id per line with no header.",
    )
    mode = forms.ChoiceField(choices=MODES, widget=forms.RadioSelect, label="Mode")

    def clean_file(self):
        upload = self.cleaned_data["file"]
        try:
            self.external_ids = services.parse_external_ids_csv(upload)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        return upload


class PreviewForm(forms.Form):
    """What the editor's Preview button posts: the unsaved definition, and the
    slug being edited (to refuse a reference back to it)."""

    definition = ConditionJSONField(required=False)
    slug = forms.CharField(required=False)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if "definition" in self.errors:
            return cleaned
        if cleaned.get("definition") is None:
            self.add_error("definition", "Write a condition to preview.")
            return cleaned
        try:
            validate_definition(
                cleaned["definition"], context="segment", slug=cleaned.get("slug") or None
            )
        except ConditionError as exc:
            self.add_error("definition", str(exc))
        return cleaned
