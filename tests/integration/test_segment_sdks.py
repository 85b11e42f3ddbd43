"""The real clients, unchanged (issue 17): segment-analytics-python,
rudder-sdk-python (gzip on, its default) and @segment/analytics-node (run by
Node, tests/sdks/node/send.mjs) send to a live Tenure through their own
queues, retries and HTTP transports, nothing patched.

The server is pytest-django's `live_server` (a thread of this process, on
the test database: the tests are transactional). What reaches it is recorded
from Django's `request_started` signal, so a test counts the requests an SDK
made, retries included. Each SDK is pointed where its documentation says:
the Python clients' `host` (RudderStack's `dataPlaneUrl`) is Tenure's `/api`,
since they post to host + "/v1/batch"; analytics-node resolves `path`
against `host` (`new URL(path, host)`), so it gets the origin and
`path="/api/v1/batch"`.

Each SDK tells the same story: a visitor reads the pricing page and views a
plan, signs up (identify with the visitor's anonymousId), subscribes, opens
a screen, is grouped into an account; a user id from an older system is
aliased to the new one, and a visitor on a second device is identified.
"""

import base64
import json
import os
import shutil
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue

import pytest
from django.core.signals import request_started

from apps.customers.models import Account, Customer, Event
from apps.customers.services import api_key_create
from tests.conftest import stats_mismatches

NODE_DIR = Path(__file__).resolve().parents[1] / "sdks" / "node"
LOCALE, ZONE = "en-GB", "Europe/London"
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"
# Not the size check of one SDK or another: Tenure's limit per call is
# SEGMENT_MAX_CALL_BYTES (32 KiB), and this is over it whatever the JSON around.
OVERSIZE = "x" * 40_000
# A shorter retry budget than the SDKs' 10, only so that a regression (a
# retried refusal) fails within seconds instead of after minutes of backoff.
FEW_RETRIES = 2


def browser() -> dict:
    """The context a web app's backend forwards (a new dict each time: the
    Python SDKs write into the one they are given)."""
    return {"locale": LOCALE, "timezone": ZONE, "userAgent": USER_AGENT, "ip": "203.0.113.9"}


@dataclass
class Tenure:
    """The live server, a key of its own, and the requests sent with that key."""

    url: str
    key: str
    requests: list[dict] = field(default_factory=list)

    @property
    def batches(self) -> list[dict]:
        return [r for r in self.requests if r["path"] == "/api/v1/batch"]


@pytest.fixture
def tenure(live_server, transactional_db):
    _, key = api_key_create(name="sdk tests")
    server = Tenure(url=live_server.url, key=key)

    def record(sender, environ, **kwargs):
        # Only the test's key (which a test may change to a wrong one): a
        # client another test left behind cannot count here.
        basic = "Basic " + base64.b64encode(f"{server.key}:".encode()).decode()
        if environ.get("HTTP_AUTHORIZATION") == basic:
            server.requests.append(
                {
                    "path": environ.get("PATH_INFO"),
                    "encoding": environ.get("HTTP_CONTENT_ENCODING", ""),
                    "retry": environ.get("HTTP_X_RETRY_COUNT"),
                }
            )

    request_started.connect(record, weak=False, dispatch_uid="sdk-requests")
    yield server
    request_started.disconnect(dispatch_uid="sdk-requests")


# -- The clients --------------------------------------------------------------


def segment_client(tenure: Tenure, errors: list, **options):
    from segment.analytics import Client

    options.setdefault("upload_interval", 0.1)
    return Client(
        write_key=tenure.key,
        host=f"{tenure.url}/api",
        on_error=lambda error, batch: errors.append((error, batch)),
        **options,
    )


def rudder_client(tenure: Tenure, errors: list, **options):
    from rudderstack.analytics import Client

    options.setdefault("upload_interval", 0.1)
    return Client(
        write_key=tenure.key,
        host=f"{tenure.url}/api",  # what `rudder_analytics.dataPlaneUrl` sets
        on_error=lambda error, batch: errors.append((error, batch)),
        **options,
    )


def flush_within(client, seconds: float = 30) -> None:
    """client.flush() (the queue drained: every batch sent, or given up), failing
    the test rather than hanging when the SDK is still retrying."""
    done = threading.Thread(target=client.flush, daemon=True)
    done.start()
    done.join(seconds)
    assert not done.is_alive(), f"the SDK was still sending after {seconds}s"


def run_node(tenure: Tenure, scenario: str, prefix: str) -> tuple[int, dict]:
    """send.mjs's exit code and what analytics-node saw (statuses, errors)."""
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "@segment" / "analytics-node").is_dir():
        pytest.fail(
            "@segment/analytics-node is not installed: `make sdks` (npm ci in tests/sdks/node)"
        )
    env = {**os.environ, "TENURE_URL": tenure.url, "TENURE_WRITE_KEY": tenure.key}
    done = subprocess.run(
        [node, "send.mjs", scenario, prefix],
        cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])


# -- The story every SDK tells ------------------------------------------------


def python_journey(client, flush, p: str) -> None:
    """What send.mjs's `journey` sends, through a Python SDK; `flush` between
    the steps a person would take minutes apart."""
    user, anon = f"{p}-user", f"{p}-anon"
    client.page(
        anonymous_id=anon,
        category="Marketing",
        name="Pricing",
        properties={"url": "https://shop.example.com/pricing?ref=ad", "title": "Pricing"},
        context=browser(),
    )
    client.track(
        anonymous_id=anon, event="Plan Viewed", properties={"plan": "pro"}, context=browser()
    )
    flush()
    client.identify(
        user_id=user,
        anonymous_id=anon,
        traits={"email": f"{p}@example.com", "name": "Ada Lovelace", "plan": "pro"},
        context=browser(),
    )
    client.track(user_id=user, event="Subscribed", properties={"plan": "pro", "mrr": 49})
    client.screen(user_id=user, name="Settings", properties={"section": "billing"})
    client.group(
        user_id=user,
        group_id=f"{p}-acme",
        traits={"name": "Acme Ltd", "plan": "enterprise", "seats": 40},
    )
    flush()
    client.track(user_id=f"{p}-legacy", event="Legacy Login")
    flush()
    client.alias(previous_id=f"{p}-legacy", user_id=user)
    client.track(anonymous_id=f"{p}-anon2", event="App Opened", context=browser())
    flush()
    client.identify(user_id=user, anonymous_id=f"{p}-anon2")
    flush()


def assert_journey_stored(p: str) -> None:
    user = Customer.objects.get(external_id=f"{p}-user")
    # One known customer: the visitors and the old user id are all that customer now.
    assert list(Customer.objects.known()) == [user]
    # The first visitor had no customer to join: its profile was promoted in place.
    assert user.anonymous_id == f"{p}-anon"
    assert user.merged_into_id is None
    assert user.email == f"{p}@example.com"
    assert user.traits["name"] == "Ada Lovelace"
    assert user.traits["plan"] == "pro"
    # The visitor's browser context filled the empty contact columns.
    assert (user.locale, user.timezone) == (LOCALE, ZONE)
    # The second device's visitor and the aliased user id were merged into it.
    second = Customer.objects.get(anonymous_id=f"{p}-anon2")
    assert (second.external_id, second.merged_into_id) == (None, user.pk)
    legacy = Customer.objects.get(external_id=f"{p}-legacy")
    assert legacy.merged_into_id == user.pk
    assert Customer.objects.count() == 3

    # Every event is the customer's, the visitor's included.
    assert not Event.objects.exclude(customer=user).exists()
    assert Counter(Event.objects.values_list("name", flat=True)) == {
        "page_viewed": 1,
        "Plan Viewed": 1,
        "Subscribed": 1,
        "screen_viewed": 1,
        "Legacy Login": 1,
        "App Opened": 1,
    }
    page = Event.objects.get(name="page_viewed")
    assert page.properties["name"] == "Pricing"
    assert page.properties["category"] == "Marketing"
    assert page.properties["path"] == "/pricing"
    assert page.properties["title"] == "Pricing"
    screen = Event.objects.get(name="screen_viewed")
    assert (screen.properties["name"], screen.properties["section"]) == ("Settings", "billing")
    assert Event.objects.get(name="Subscribed").properties == {"plan": "pro", "mrr": 49}
    # What marketing uses of the context is kept; the IP address never is.
    for name in ("page_viewed", "Plan Viewed", "App Opened"):
        context = Event.objects.get(name=name).context
        assert (context["locale"], context["userAgent"]) == (LOCALE, USER_AGENT), name
        assert "library" in context
    for context in Event.objects.values_list("context", flat=True):
        assert "ip" not in (context or {})
    assert stats_mismatches() == []

    account = Account.objects.get()
    assert (account.external_id, account.name) == (f"{p}-acme", "Acme Ltd")
    assert (account.traits["plan"], account.traits["seats"]) == ("enterprise", 40)
    assert list(account.members.all()) == [user]


# -- Each SDK -----------------------------------------------------------------


def test_segment_python_sends_a_visitor_who_signs_up_and_everything_after(tenure):
    errors = []
    client = segment_client(tenure, errors)
    python_journey(client, lambda: flush_within(client), "seg")
    client.shutdown()

    assert errors == []
    assert_journey_stored("seg")
    # Its queue batched the calls (how many requests depends on its timer) to
    # /v1/batch, and none was a retry.
    assert tenure.requests == tenure.batches
    assert [r["retry"] for r in tenure.requests] == [None] * len(tenure.requests)


def test_rudder_python_sends_the_same_gzipped(tenure):
    errors = []
    client = rudder_client(tenure, errors)
    python_journey(client, lambda: flush_within(client), "rud")
    client.shutdown()

    assert errors == []
    assert_journey_stored("rud")
    assert tenure.requests == tenure.batches
    assert {r["encoding"] for r in tenure.requests} == {"gzip"}


def test_rudder_python_in_sync_mode_sends_each_call_as_it_is_made(tenure):
    errors = []
    client = rudder_client(tenure, errors, sync_mode=True)
    python_journey(client, lambda: None, "rus")

    assert_journey_stored("rus")
    assert len(tenure.batches) == 10  # a request per call, each a batch of one


def test_analytics_node_sends_the_same(tenure):
    code, seen = run_node(tenure, "journey", "node")

    assert (code, seen["errors"]) == (0, [])
    assert seen["responses"] == [200] * 5
    assert_journey_stored("node")
    assert len(tenure.batches) == len(tenure.requests) == 5


# -- Limits and retries, as the SDKs see them ----------------------------------


def test_an_oversize_call_from_rudder_python_is_refused_with_413_and_not_retried(tenure):
    """RudderStack's client allows 4 MB a call, so it sends one that Segment's
    limit (32 KiB) refuses: a 413 is a client error, which it does not retry."""
    errors = []
    client = rudder_client(tenure, errors, max_retries=FEW_RETRIES)
    client.track(user_id="big-user", event="Huge", properties={"blob": OVERSIZE})
    flush_within(client)
    client.shutdown()

    assert len(tenure.batches) == 1
    ((error, batch),) = errors
    assert getattr(error, "status", None) == 413, repr(error)
    assert [item["event"] for item in batch] == ["Huge"]
    assert not Event.objects.exists()


def test_segment_python_never_sends_an_oversize_call(tenure):
    """Segment's client checks its own limit: the call is refused before it is
    queued, and nothing reaches the server."""
    errors = []
    client = segment_client(tenure, errors)
    with pytest.raises(RuntimeError, match="Message exceeds"):
        client.track(user_id="big-user", event="Huge", properties={"blob": OVERSIZE})
    flush_within(client)
    client.shutdown()

    assert tenure.requests == []
    assert errors == []


def test_segment_python_s_retry_loop_takes_a_413_as_final(tenure):
    """Segment's consumer (the loop that retries its uploads), handed a batch
    over the limit: one request, a 413, raised as final."""
    from segment.analytics.consumer import Consumer
    from segment.analytics.request import APIError

    consumer = Consumer(Queue(), tenure.key, host=f"{tenure.url}/api", retries=FEW_RETRIES)
    call = {"type": "track", "userId": "big-user", "event": "Huge"}
    with pytest.raises(APIError) as refused:
        consumer.request([{**call, "properties": {"blob": OVERSIZE}}])

    assert refused.value.status == 413
    assert len(tenure.batches) == 1
    assert not Event.objects.exists()


def test_an_oversize_call_from_analytics_node_is_refused_with_413_and_not_retried(tenure):
    """analytics-node 3.1's own size check lets this call through (it counts
    escapes and the letter i, not bytes): Tenure's 413 is final for it too."""
    code, seen = run_node(tenure, "oversize", "big")

    assert code == 1
    assert seen["responses"] == [413]
    assert len(tenure.batches) == 1
    assert not Event.objects.exists()


@pytest.mark.parametrize("sdk", ["segment", "rudder"])
def test_a_wrong_key_is_refused_with_401_and_not_retried_by_a_python_sdk(tenure, sdk):
    """A refusal is final for the SDK only if it can read it: RudderStack's
    client raises its API error from the body's `code` and `message`, and
    retries anything else it meets as if the network had failed."""
    errors = []
    tenure.key = "tk_not-a-key"
    client = (segment_client if sdk == "segment" else rudder_client)(
        tenure, errors, max_retries=FEW_RETRIES
    )
    client.track(user_id="u-1", event="Signed Up")
    flush_within(client)
    client.shutdown()

    assert len(tenure.batches) == 1
    ((error, _),) = errors
    assert getattr(error, "status", None) == 401, repr(error)
    assert not Customer.objects.exists()


def test_a_wrong_key_is_refused_with_401_and_not_retried_by_analytics_node(tenure):
    tenure.key = "tk_not-a-key"
    code, seen = run_node(tenure, "malformed", "nokey")

    assert code == 1
    assert seen["responses"] == [401]
    assert len(tenure.batches) == 1
    assert not Customer.objects.exists()


@pytest.mark.parametrize("sdk", ["segment", "rudder"])
def test_a_malformed_item_in_a_python_sdk_s_batch_is_not_resent(tenure, sdk):
    """A track with an empty event name (both SDKs let it through) is refused
    alone, in a 200: the SDK takes the batch as delivered, sends it once, and
    the good items are stored."""
    errors = []
    # One batch of the three: sent when it holds 3 (the timer is far longer).
    client = (segment_client if sdk == "segment" else rudder_client)(
        tenure, errors, max_retries=FEW_RETRIES, upload_size=3, upload_interval=2
    )
    client.identify(user_id="u-1", traits={"plan": "pro"})
    client.track(user_id="u-1", event="")
    client.track(user_id="u-1", event="Good Event")
    flush_within(client)
    client.shutdown()

    assert errors == []
    assert len(tenure.batches) == 1
    customer = Customer.objects.get()
    assert customer.traits == {"plan": "pro"}
    assert list(Event.objects.values_list("name", flat=True)) == ["Good Event"]


def test_a_malformed_item_in_analytics_node_s_batch_is_not_resent(tenure):
    code, seen = run_node(tenure, "malformed", "bad")

    assert (code, seen) == (0, {"responses": [200], "errors": []})
    assert len(tenure.batches) == 1
    assert Customer.objects.get().traits == {"plan": "pro"}
    assert list(Event.objects.values_list("name", flat=True)) == ["Good Event"]
