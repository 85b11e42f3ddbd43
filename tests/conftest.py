import itertools
import json
import os
import socket

import pytest
from django.core.cache import cache
from django.db import connection

from apps.customers.models import Customer, Event, EventStat
from apps.customers.services import api_key_create

LOOPBACK_NAMES = {"localhost", "::1"}
_customers = itertools.count(1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI no test may be skipped: a skip is reported as a failure."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which is not allowed: {report.longrepr}"


def _is_loopback(host: str) -> bool:
    return host in LOOPBACK_NAMES or host.startswith("127.")


@pytest.fixture(autouse=True, scope="session")
def socket_guard():
    """Tests talk to loopback only: any other address fails the test loudly."""
    original_connect, original_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise RuntimeError(f"a test tried to reach {address!r}; tests talk to loopback only")

    def connect(sock, address):
        check(sock, address)
        return original_connect(sock, address)

    def connect_ex(sock, address):
        check(sock, address)
        return original_connect_ex(sock, address)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
    yield
    socket.socket.connect, socket.socket.connect_ex = original_connect, original_connect_ex


@pytest.fixture(autouse=True)
def fresh_cache():
    """The cache is shared (Redis or files): each test starts from an empty one."""
    cache.clear()


@pytest.fixture
def own_redis():
    """A redis-server of the test's own on a free loopback port, to kill and
    restart (the shared one on 6379 is never touched)."""
    from tests.brokers import RedisServer

    server = RedisServer().start()
    yield server
    server.kill()


@pytest.fixture
def api_key(db):
    return api_key_create(name="tests")


@pytest.fixture
def api(client, api_key):
    """POST JSON to the ingestion API with a valid key: api("track", {...})."""
    _, key = api_key

    def post(endpoint: str, body, *, raw: bytes | None = None, key: str | None = key):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
        data = raw if raw is not None else json.dumps(body)
        return client.post(
            f"/api/v1/{endpoint}", data=data, content_type="application/json", **headers
        )

    return post


def stats_mismatches() -> list[tuple]:
    """EventStat rows that disagree with the Event aggregate (either side missing,
    count, first_at or last_at different). Empty when exact."""
    event, stat = Event._meta.db_table, EventStat._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT a.customer_id, a.name, a.n, s.count FROM
              (SELECT customer_id, name, COUNT(*) AS n, MIN(occurred_at) AS f,
                      MAX(occurred_at) AS l FROM {event} GROUP BY customer_id, name) a
              LEFT JOIN {stat} s ON s.customer_id = a.customer_id AND s.name = a.name
            WHERE s.id IS NULL OR s.count <> a.n OR s.first_at <> a.f OR s.last_at <> a.l
            UNION ALL
            SELECT s.customer_id, s.name, NULL, s.count FROM {stat} s
            WHERE NOT EXISTS (SELECT 1 FROM {event} e
                              WHERE e.customer_id = s.customer_id AND e.name = s.name)
            """  # noqa: S608
        )
        return cursor.fetchall()


@pytest.fixture
def make_customer(db):
    """make_customer(**fields) -> a Customer row with an email, a phone and a
    zone (each numbered: cust-1, person1@example.com, ...)."""

    def make(**fields) -> Customer:
        n = next(_customers)
        fields.setdefault("external_id", f"cust-{n}")
        fields.setdefault("email", f"person{n}@example.com")
        fields.setdefault("phone", f"+1415555{n:04d}")
        fields.setdefault("timezone", "America/New_York")
        return Customer.objects.create(**fields)

    return make
