"""The urllib3 tracking mirror (apps/core/mirrors/urllib3_tracking.py) still
leans on the urllib3, http.client and requests internals it was written
against, and tells a request that never left from one that may have."""

import http.client
import socket

import pytest
import requests
import requests.adapters
import urllib3.connection
import urllib3.connectionpool
import urllib3.poolmanager

from apps.core.mirrors.urllib3_tracking import (
    TrackedAdapter,
    nothing_written,
    request_phase_reset,
)
from tests.core.mirrors.upstream import changed
from tests.fakes.provider import FakeProviderServer, Reply

UPSTREAM = {
    "urllib3 HTTPConnection.connect": urllib3.connection.HTTPConnection.connect,
    "urllib3 HTTPConnection.request": urllib3.connection.HTTPConnection.request,
    "urllib3 HTTPSConnection.connect": urllib3.connection.HTTPSConnection.connect,
    "urllib3 HTTPConnectionPool._new_conn": urllib3.connectionpool.HTTPConnectionPool._new_conn,
    "urllib3 HTTPSConnectionPool._new_conn": urllib3.connectionpool.HTTPSConnectionPool._new_conn,
    "urllib3 PoolManager._new_pool": urllib3.poolmanager.PoolManager._new_pool,
    "urllib3 ProxyManager.__init__": urllib3.poolmanager.ProxyManager.__init__,
    "http.client HTTPConnection.send": http.client.HTTPConnection.send,
    "http.client HTTPConnection._tunnel": http.client.HTTPConnection._tunnel,
    "requests HTTPAdapter.init_poolmanager": requests.adapters.HTTPAdapter.init_poolmanager,
    "requests HTTPAdapter.proxy_manager_for": requests.adapters.HTTPAdapter.proxy_manager_for,
    "requests HTTPAdapter.send": requests.adapters.HTTPAdapter.send,
}
# urllib3 2.8.0, requests 2.34.2, CPython 3.11.7.
RECORDED = {
    "urllib3 HTTPConnection.connect": "b70c63e7308857b1",
    "urllib3 HTTPConnection.request": "751c8aa0eb50e741",
    "urllib3 HTTPSConnection.connect": "2a2e1795406d7f38",
    "urllib3 HTTPConnectionPool._new_conn": "243b34ca0fe6eb15",
    "urllib3 HTTPSConnectionPool._new_conn": "a41f4433fded3c79",
    "urllib3 PoolManager._new_pool": "6b5c00b2084b0ba4",
    "urllib3 ProxyManager.__init__": "6eb53d4ecbc016e9",
    "http.client HTTPConnection.send": "fdc99bf3088b7110",
    "http.client HTTPConnection._tunnel": "63462f8026c1f4c2",
    "requests HTTPAdapter.init_poolmanager": "dcc10b3b4da2db73",
    "requests HTTPAdapter.proxy_manager_for": "a463432b830fda67",
    "requests HTTPAdapter.send": "a8b4a1d8c114e29d",
}


def test_the_upstream_internals_mirrored_are_the_ones_it_was_written_against():
    assert changed(UPSTREAM, RECORDED) == [], (
        "urllib3, http.client or requests changed underneath "
        "apps/core/mirrors/urllib3_tracking.py: check the mirror against the new code, "
        "then record the new fingerprints here"
    )


@pytest.fixture
def session(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    session = requests.Session()
    session.trust_env = False
    adapter = TrackedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    yield session
    session.close()


def post(session, url: str, **kwargs) -> Exception:
    request_phase_reset()
    with pytest.raises(requests.RequestException) as caught:
        session.post(url, data=b"To=%2B15005550006", **kwargs)
    return caught.value


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_connection_wrote_nothing(session):
    error = post(session, f"http://127.0.0.1:{closed_port()}/x", timeout=1)

    assert nothing_written(error)


def test_a_failed_tls_handshake_wrote_nothing(session):
    with FakeProviderServer() as fake:  # plain HTTP: the handshake fails
        url = fake.url.replace("http://", "https://") + "/x"
        error = post(session, url, timeout=1)

    assert isinstance(error, requests.exceptions.SSLError | requests.ConnectionError)
    assert nothing_written(error)


def test_a_read_timeout_may_have_written(session):
    with FakeProviderServer() as fake:
        fake.script("twilio", Reply(201, delay=1.0))
        error = post(session, fake.url + "/2010-04-01/Accounts/AC1/Messages.json", timeout=0.2)

    assert isinstance(error, requests.ReadTimeout)
    assert not nothing_written(error)


def test_a_connection_dropped_after_the_request_may_have_written(session):
    with FakeProviderServer() as fake:
        fake.script("twilio", Reply.drop())
        error = post(session, fake.url + "/2010-04-01/Accounts/AC1/Messages.json", timeout=1)

    # A ConnectionError, as a refused connect is: only the tracking tells them apart.
    assert isinstance(error, requests.ConnectionError)
    assert not nothing_written(error)
