"""A mirror of python_http_client's Client and of http.client's request
writing, for SendGrid's sends: the SDK's client sending over kept-alive
connections instead of a new urllib opener and connection per call.

Mirrors (the versions in Tenure's environment):
- python-http-client 3.3.7 (sendgrid 6.12.5's HTTP client): `Client`'s
  `__init__`, `__getattr__` (its `http_request` closure: headers, the JSON
  body, the Response), `_build_client`, `_build_url`, `_update_headers`,
  `_make_request` (a non-2xx answer raised through `handle_error`), and
  `Response.__init__` (what it reads of an answer: getcode, read, info).
- CPython 3.11.7's http.client `HTTPConnection._send_output` and its
  `_buffer` (`_OneWrite` sends the head and a bytes body in one write) and
  urllib.request's `getproxies` / `proxy_bypass` (read once, here, as
  `build_opener`'s ProxyHandler reads them at every call).
tests/core/mirrors/test_sendgrid_transport.py fails when any of these
change, and checks that a call through this client and through the SDK's
own give the same request and the same Response or error.

What it saves (tests/core/mirrors/measure_sendgrid_transport.py: the real
SDK sending 2,000 emails to the loopback fake of tests/fakes/provider.py in
its own process; measured 2026-12-07 on the shared 2-core machine, load ~3,
two runs): one at a time, the call's CPU 912-1186 us -> 305-383 us an email
(67-68% saved), wall 2.1-2.5 ms -> 0.5-0.7 ms; in groups of 8 (delivery's
DELIVERY_CONCURRENCY; without the mirror, from a thread pool) CPU 848-1202
-> 145-229 us (81-83% saved), wall 1.2-1.5 ms -> 0.18-0.37 ms. Kept.

`PooledClient.start` / `finish` split a call in two so that a group of
sends is written on a connection each and then answered in turn from one
thread (SendGridProvider.send_many).
"""

import functools
import http.client
import io
import json
import select
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

import python_http_client
from python_http_client.client import Response
from python_http_client.exceptions import handle_error


class KeptAlive:
    """Kept-alive HTTP connections to the API at `url`, numbered from 0 in
    each thread (a call on each at once: `start`, then `finish`), through
    the proxy the environment names for it (read once, here, as urllib's
    opener would at every call). A connection the server has closed since
    its last answer is replaced before use (the one case where a kept-alive
    connection's loss is known before anything is written); a failed request
    closes its connection and is never sent again here (only delivery
    decides about a retry)."""

    def __init__(self, url: str) -> None:
        target = urlsplit(url)
        self.https = target.scheme == "https"
        self.host, self.port = target.hostname or "", target.port
        proxy = urllib.request.getproxies().get(target.scheme)
        self.proxy = (
            urlsplit(proxy) if proxy and not urllib.request.proxy_bypass(self.host) else None
        )
        self._local = threading.local()

    def start(
        self, method: str, url: str, *, body: bytes | None, headers: dict, timeout: float, slot: int
    ) -> http.client.HTTPConnection:
        """Write the request on connection number `slot`, which it returns:
        `finish` reads the answer. What fails here (the connect, a proxy's
        tunnel, the TLS handshake, the one `sendall` of the whole request)
        fails before the request has left whole: the server cannot act on it."""
        connection = self._connection(timeout, slot)
        parts = urlsplit(url)
        # Through a plain-HTTP proxy the request line carries the whole URL.
        target = (
            url
            if self.proxy and not self.https
            else parts.path + (f"?{parts.query}" if parts.query else "")
        )
        try:
            connection.request(method, target, body=body, headers=headers)
        except BaseException:
            connection.close()
            raise
        return connection

    @staticmethod
    def finish(
        connection: http.client.HTTPConnection, *, deadline: float
    ) -> http.client.HTTPResponse:
        """The answer to the request `start` wrote, read whole by `deadline`
        (a time.monotonic() time)."""
        try:
            if connection.sock is not None:
                connection.sock.settimeout(max(0.001, deadline - time.monotonic()))
            answer = connection.getresponse()
            answer.body = answer.read()
        except BaseException:
            connection.close()
            raise
        return answer

    def _connection(self, timeout: float, slot: int) -> http.client.HTTPConnection:
        connections = self._local.__dict__.setdefault("connections", {})
        connection = connections.get(slot)
        if connection is None:
            connection = connections[slot] = self._connect()
        elif connection.sock is not None and _closed_by_peer(connection.sock):
            connection.close()  # `start` opens it again
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        return connection

    def _connect(self) -> http.client.HTTPConnection:
        kind = _HTTPSConnection if self.https else _HTTPConnection
        if self.proxy is None:
            return kind(self.host, self.port)
        if not self.https:
            return _HTTPConnection(self.proxy.hostname, self.proxy.port)
        connection = kind(self.proxy.hostname, self.proxy.port)
        connection.set_tunnel(self.host, self.port)
        return connection


class _OneWrite:
    """http.client writes a request's head and its body separately: two
    packets, each waking the server (on loopback, each also costs the
    sender the receiver's side of TCP). A body of bytes goes with the head
    in one write here; anything else as http.client sends it."""

    def _send_output(self, message_body=None, encode_chunked=False):
        if not isinstance(message_body, bytes) or encode_chunked:
            return super()._send_output(message_body, encode_chunked)
        # http.client's own buffer of the request line and headers, which
        # its _send_output joins the same way.
        self._buffer.extend((b"", message_body))
        request = b"\r\n".join(self._buffer)
        del self._buffer[:]
        self.send(request)
        return None


class _HTTPConnection(_OneWrite, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_OneWrite, http.client.HTTPSConnection):
    pass


def _closed_by_peer(sock: socket.socket) -> bool:
    """An idle kept-alive socket is readable only when the server has
    closed it (or sent what it should not have): either way, not reusable."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


class PooledClient(python_http_client.Client):
    """The SDK's HTTP client, sending over `connections` instead of a new
    urllib opener's new connection per call. Everything but the sending is
    the SDK's: the URL, the headers, the JSON body, the response and, for an
    answer that is not 2xx, the same exception classes (via its own
    handle_error)."""

    def __init__(self, *, connections: KeptAlive, **kwargs) -> None:
        super().__init__(**kwargs)
        self.connections = connections
        self._segments: dict[tuple, PooledClient] = {}

    def _build_client(self, name=None):
        # The SDK builds a client for each segment of the path
        # (client.mail.send.post) at every call: each must send the same
        # way, and each is built once for what it copies from this one.
        key = (name, self._version, self.append_slash, self.timeout, id(self.request_headers))
        segment = self._segments.get(key)
        if segment is None:
            segment = self._segments[key] = PooledClient(
                connections=self.connections,
                host=self.host,
                version=self._version,
                request_headers=self.request_headers,
                url_path=[*self._url_path, name] if name else self._url_path,
                append_slash=self.append_slash,
                timeout=self.timeout,
            )
        return segment

    def __getattr__(self, name):
        if name not in self.methods:
            return super().__getattr__(name)  # a segment of the path, or .version
        return functools.partial(self._http_request, name.upper())

    def _http_request(
        self, method, request_body=None, query_params=None, request_headers=None, timeout=None, **_
    ):
        """The SDK's own http_request, but for the urllib opener and Request
        it builds for every call only to send it: building the opener (a
        dozen handlers, the environment's proxies read again) cost 0.35 ms
        of CPU, more than the rest of the call."""
        call = self.start(
            method,
            request_body=request_body,
            query_params=query_params,
            request_headers=request_headers,
            timeout=timeout,
        )
        return self.finish(call)

    def start(
        self,
        method,
        *,
        request_body=None,
        query_params=None,
        request_headers=None,
        timeout=None,
        slot: int = 0,
    ) -> "Call":
        """The first half of a call: its request written on connection
        number `slot`. `finish` reads the answer."""
        if request_headers:
            self._update_headers(request_headers)
        data = None
        if request_body is not None:
            # As the SDK: JSON unless the headers name another content type.
            if self.request_headers.get("Content-Type", "application/json") != "application/json":
                data = request_body.encode("utf-8")
            else:
                self.request_headers.setdefault("Content-Type", "application/json")
                data = json.dumps(request_body).encode("utf-8")
        url = self._build_url(query_params)
        timeout = timeout or self.timeout
        connection = self.connections.start(
            method, url, body=data, headers=self.request_headers, timeout=timeout, slot=slot
        )
        return Call(url, connection, time.monotonic() + timeout, timeout)

    def finish(self, call: "Call") -> Response:
        """The SDK's Response to a call `start` made; an answer that is not
        2xx raises the SDK's error for it."""
        answer = self.connections.finish(call.connection, deadline=call.deadline)
        if not 200 <= answer.status < 300:  # what urllib's opener raises for
            raise handle_error(
                urllib.error.HTTPError(
                    call.url, answer.status, answer.reason, answer.headers, io.BytesIO(answer.body)
                )
            )
        return Response(_Answer(answer))


@dataclass(frozen=True)
class Call:
    """A request written, its answer not read yet (see PooledClient.start)."""

    url: str
    connection: http.client.HTTPConnection
    deadline: float  # time.monotonic() by which the answer must have come
    timeout: float  # the seconds it was given


class _Answer:
    """An answer as python_http_client's Response reads one."""

    def __init__(self, answer: http.client.HTTPResponse) -> None:
        self.answer = answer

    def getcode(self) -> int:
        return self.answer.status

    def read(self) -> bytes:
        return self.answer.body

    def info(self):
        return self.answer.headers
