"""The survey page's form: a score from 0 to 10 and an optional comment."""

from django import forms

from .services import MAX_COMMENT

SCORE_CHOICES = [(score, str(score)) for score in range(11)]


class AnswerForm(forms.Form):
    score = forms.TypedChoiceField(
        choices=SCORE_CHOICES,
        coerce=int,
        widget=forms.RadioSelect,
        error_messages={
            "required": "Choose a score from 0 to 10.",
            "invalid_choice": "Choose a score from 0 to 10.",
        },
    )
    comment = forms.CharField(
        required=False,
        max_length=MAX_COMMENT,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 4, "maxlength": MAX_COMMENT}),
    )

    def clean_comment(self) -> str:
        return self.cleaned_data["comment"].replace("\x00", "")


def score_param(value: str | None) -> int | None:
    """A `?score=` from a link, when it is one of 0..10 (anything else shows
    the page with nothing chosen)."""
    value = (value or "").strip()
    # isdigit() takes other scripts' digits and any length (int() refuses
    # more than 4,300 digits with a ValueError).
    if not (value.isascii() and value.isdigit() and len(value) <= 2):
        return None
    score = int(value)
    return score if 0 <= score <= 10 else None
