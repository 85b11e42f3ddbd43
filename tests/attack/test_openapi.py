"""Schemathesis against /api/v1/openapi.json, in process (the WSGI
application gunicorn serves), authenticated with a real API key, with every
check the installed schemathesis has (`--checks all`): no 5xx, status codes,
content types, headers and bodies as documented, invalid data refused, valid
data accepted, auth not ignored. Positive and negative examples.

A refused request (4xx) writes nothing: the row counts of every model are the
same before and after it.
"""

from datetime import UTC, datetime
from pathlib import Path

import pytest
import schemathesis
from django.apps import apps
from hypothesis import settings
from schemathesis.checks import CHECKS, load_all_checks

from config.wsgi import application

from .conftest import CI_EXAMPLES, FUZZ_EXAMPLES

ROOT = Path(__file__).resolve().parents[2]

load_all_checks()
ALL_CHECKS = CHECKS.get_all()

schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", application)
# As the hypothesis profiles of conftest.py: the same examples every time in the
# suite, new ones (failures kept in data/hypothesis) under `make fuzz`.
schema.config.generation.update(
    max_examples=FUZZ_EXAMPLES or CI_EXAMPLES,
    deterministic=not FUZZ_EXAMPLES,
    database=str(ROOT / "data" / "hypothesis") if FUZZ_EXAMPLES else "none",
)


@schema.hook
def map_body(context, body):
    """Generated bodies kept inside the rules the document states in words
    only (its description; JSON Schema cannot say them): text without NUL or
    lone surrogates, timestamps from 1970 to a day ahead (after the
    correction by sentAt), an alias to another id than its own. Without this most
    "valid" timestamps (hypothesis draws years 1 to 9999) are refused as
    documented and flagged as valid data refused. The refusals themselves
    are tested in tests/customers/test_hostile_input.py. Lengths and types
    are kept, so a body stays as valid or invalid as it was drawn."""
    return _within_the_rules(body, key=None)


def _within_the_rules(value, *, key):
    if isinstance(value, dict):
        kept = {
            _within_the_rules(k, key=None): _within_the_rules(v, key=k) for k, v in value.items()
        }
        if "sentAt" in kept:
            # sentAt shifts the call's time by the client's clock error: the
            # same moment as the call's own time is a clock that is right.
            kept["sentAt"] = kept.get("timestamp") or kept.get("originalTimestamp")
        if (
            "previousId" in kept
            and str(kept["previousId"]).strip() == str(kept.get("userId")).strip()
        ):
            kept["previousId"] = f"{kept['previousId']}-before"  # an alias to itself is refused
        return kept
    if isinstance(value, list):
        return [_within_the_rules(v, key=None) for v in value]
    if not isinstance(value, str):
        return value
    value = value.replace("\x00", "0").encode("utf-8", "replace").decode("utf-8")
    if key in ("timestamp", "originalTimestamp", "sentAt"):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
        if moment.tzinfo is None or not (IN_WINDOW[0] <= moment <= IN_WINDOW[1]):
            return IN_WINDOW_TIMESTAMP
    return value


IN_WINDOW = (datetime(1970, 1, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
IN_WINDOW_TIMESTAMP = "2026-01-01T00:00:00Z"


def checks_for(case) -> list:
    """Every check, but for an alias to itself (`previousId` equal to
    `userId`, which the document says in words is refused: JSON Schema cannot
    say two fields differ) drawn outside the hook (schemathesis's coverage
    phase): it must be refused, not accepted."""
    body = case.body if isinstance(case.body, dict) else {}
    to_itself = str(body.get("previousId")).strip() == str(body.get("userId")).strip()
    if case.path.endswith("/alias") and "previousId" in body and to_itself:
        return [c for c in ALL_CHECKS if c.__name__ != "positive_data_acceptance"]
    return ALL_CHECKS


def row_counts() -> dict[str, int]:
    return {
        model._meta.label: model._default_manager.count()
        for model in apps.get_models()
        if model._meta.app_label in {"customers", "messaging", "journeys", "tracking", "surveys"}
    }


@pytest.fixture
def bearer(api_key) -> dict[str, str]:
    _, key = api_key
    return {"Authorization": f"Bearer {key}"}


@schema.parametrize()
@settings(max_examples=FUZZ_EXAMPLES or CI_EXAMPLES)
@pytest.mark.django_db
def test_the_api_answers_as_documented_and_never_5xx(case, bearer, wsgi_keeps_the_test_connection):
    before = row_counts()

    response = case.call_and_validate(headers=bearer, checks=checks_for(case))

    if 400 <= response.status_code < 500:
        after = row_counts()
        assert after == before, (
            f"a refused request ({response.status_code}) wrote rows: "
            f"{ {k: after[k] - before[k] for k in after if after[k] != before[k]} }\n"
            f"{case.as_curl_command(headers=bearer)}"
        )
