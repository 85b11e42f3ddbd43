"""Schemathesis against /api/v1/openapi.json, in process (the WSGI
application gunicorn serves), authenticated with a real API key, with every
check the installed schemathesis has (`--checks all`): no 5xx, status codes,
content types, headers and bodies as documented, invalid data refused, valid
data accepted, auth not ignored. Positive and negative examples.

A refused request (4xx) writes nothing: the row counts of every model are the
same before and after it.
"""

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

    response = case.call_and_validate(headers=bearer, checks=ALL_CHECKS)

    if 400 <= response.status_code < 500:
        after = row_counts()
        assert after == before, (
            f"a refused request ({response.status_code}) wrote rows: "
            f"{ {k: after[k] - before[k] for k in after if after[k] != before[k]} }\n"
            f"{case.as_curl_command(headers=bearer)}"
        )
