"""A mirror of urllib3's connection internals, for at-most-once SMS sends:
requests' adapter whose urllib3 connections note, per thread, whether a
request's first byte may have been written. After a failure, that says
whether the provider can have received the request (then its outcome is
unknown and it is never sent again by itself) or provably not (then it may
be retried). Twilio's Messages API takes no idempotency key, so a second
create could send a second SMS.

Kept for correctness, not speed: no exception urllib3 or requests raises
says on which side of the first write a failure fell (a `ConnectionError`
is raised for a refused connect and for a reset after the write alike).
What it costs (tests/core/mirrors/measure_urllib3_tracking.py, 2026-12-07,
the shared 2-core machine): a request written costs 3.4 us more tracked
(24.5 -> 27.9 us), 0.3% of an SMS's CPU through the SDK (about 0.9-1.3 ms);
end to end against the loopback fake the difference is below this machine's
noise (-10% to +8% across runs, either way).

Mirrors (the versions in Tenure's environment): urllib3 2.8.0's
`connection.HTTPConnection.connect` / `request` / `send` (http.client's
`send` connecting on the first write when nothing connected before; urllib3
connecting first for HTTPS and for a proxy tunnel), the connection pools'
`ConnectionCls` and `PoolManager.pool_classes_by_scheme`; requests 2.34.2's
`HTTPAdapter.init_poolmanager` / `proxy_manager_for`. tests/core/mirrors/
test_urllib3_tracking.py fails when any of these change.
"""

import threading

import requests
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions
from requests.adapters import HTTPAdapter


class _Phase(threading.local):
    """Where this thread's current request is: None before any tracked
    connection took it (a SOCKS proxy's connections are not tracked), "open"
    once one did and nothing is written yet, "written" once its first byte
    may have gone out."""

    state: str | None = None


_phase = _Phase()


class _Tracked:
    """A urllib3 connection that tells `_phase` when a request's bytes start
    to go out. http.client connects on the first write (plain HTTP) unless
    urllib3 already did (HTTPS: before the request, for the handshake); a
    proxy tunnel's CONNECT is part of connecting."""

    _connecting = False

    def connect(self) -> None:
        _phase.state = _phase.state or "open"
        self._connecting = True
        try:
            super().connect()
        finally:
            self._connecting = False

    def request(self, *args, **kwargs) -> None:
        _phase.state = _phase.state or "open"
        super().request(*args, **kwargs)

    def send(self, data) -> None:
        if self.sock is None:
            self.connect()
        if not self._connecting:
            _phase.state = "written"
        super().send(data)


class _TrackedHTTPConnection(_Tracked, urllib3.connection.HTTPConnection):
    pass


class _TrackedHTTPSConnection(_Tracked, urllib3.connection.HTTPSConnection):
    pass


class _TrackedHTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _TrackedHTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


_TRACKED_POOLS = {"http": _TrackedHTTPPool, "https": _TrackedHTTPSPool}


class TrackedAdapter(HTTPAdapter):
    """requests' adapter, its pools (direct or through an HTTP proxy) made of
    tracked connections."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _TRACKED_POOLS

    def proxy_manager_for(self, proxy, **kwargs):
        manager = super().proxy_manager_for(proxy, **kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = _TRACKED_POOLS
        return manager


def nothing_written(exc: Exception) -> bool:
    """Whether the request whose call raised `exc` (in this thread) provably
    never left: its tracked connection wrote nothing, or the error is one
    urllib3 raises only while connecting (a connect timeout, a connection
    that could not be made: refused, DNS)."""
    if _phase.state == "open":
        return True
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(
        reason, urllib3.exceptions.NewConnectionError
    )


def request_phase_reset() -> None:
    """Forget this thread's last request: call before each new one."""
    _phase.state = None
