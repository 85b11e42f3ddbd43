"""The attack suite: property-based tests (hypothesis) and schemathesis against
the OpenAPI document, asserting no 5xx and nothing half-written.

Its size comes from the environment, so the same tests run small in `make
test` (CI) and large in `make fuzz`:

- `FUZZ_EXAMPLES` (default 20): examples per property (and per API operation).
  `make fuzz` sets 1000.
- Without FUZZ_EXAMPLES the "ci" profile is derandomized (the same examples on
  every run: CI never fails by chance on an input nobody can find again); with
  it, the "fuzz" profile draws new examples each run and keeps the failing ones
  in data/hypothesis to try first next time.

A failure prints hypothesis' "Falsifying example" (the smallest input found)
and each assertion below names the request or the input, so the failing test
is its own reproduction.
"""

import os
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES") or 0)
CI_EXAMPLES = 20

# Each example uses the test's database transaction (function-scoped
# fixtures) and some call the whole WSGI stack: neither is a mistake here.
_common = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "ci", max_examples=CI_EXAMPLES, derandomize=True, database=None, **_common
)
settings.register_profile(
    "fuzz",
    max_examples=FUZZ_EXAMPLES or 1000,
    database=DirectoryBasedExampleDatabase(
        Path(__file__).resolve().parents[2] / "data" / "hypothesis"
    ),
    **_common,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("fuzz" if FUZZ_EXAMPLES else "ci"))


@contextmanager
def shows(**inputs):
    """Whatever fails inside says the input: schemathesis' pytest plugin (loaded
    with it) leaves hypothesis' "Failing test case" without its values."""
    try:
        yield
    except BaseException as exc:
        exc.add_note("reproduce with: " + ", ".join(f"{k}={v!r}" for k, v in inputs.items()))
        raise


@contextmanager
def rolled_back():
    """One example's writes, undone after it (the next example starts from the
    same rows); the assertions inside see them."""
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


@pytest.fixture
def wsgi_keeps_the_test_connection():
    """Calling config.wsgi's application (schemathesis' WSGI transport) sends
    the request signals, whose close_old_connections would close the test's
    connection and with it its transaction: disconnected, as Django's test
    client does."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)
