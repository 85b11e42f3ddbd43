"""Validation of the contact columns, shared by the API, imports and the admin."""

import re
from functools import cache
from zoneinfo import available_timezones

from django.core.exceptions import ValidationError
from django.core.validators import validate_email as _django_validate_email

E164 = re.compile(r"^\+[1-9]\d{1,14}$")


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def validate_phone(value: str) -> None:
    if value and not E164.match(value):
        raise ValidationError(
            f"{value!r} is not an E.164 phone number (like +14155550123)", code="phone"
        )


def validate_timezone(value: str) -> None:
    if value and value not in _zones():
        raise ValidationError(
            f"{value!r} is not an IANA time zone (like Europe/Paris)", code="timezone"
        )


def validate_traits(value: object) -> None:
    if not isinstance(value, dict):
        raise ValidationError('Traits must be a JSON object, like {"plan": "pro"}.', code="traits")


def validate_email(value: str) -> None:
    if value:
        try:
            _django_validate_email(value)
        except ValidationError:
            raise ValidationError(f"{value!r} is not an email address", code="email") from None


def is_timezone(value: str) -> bool:
    """Whether `value` is an IANA zone (what an SDK's context may fill in)."""
    return value in _zones()
