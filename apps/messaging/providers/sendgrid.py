"""SendGrid, through the real SDK (`sendgrid.SendGridAPIClient`).

The SDK sets its host when it is built (changing it later does nothing), so
the host comes from SENDGRID_API_HOST at construction; it sets no timeout, so
`client.client.timeout` is set here. Success is 202 with an empty body and
the message's id in the `X-Message-Id` header; our own message id also rides
along in `custom_args`, which SendGrid echoes on every webhook event, so
tracking can find the message even before it knows SendGrid's id.

The SDK's HTTP client (python_http_client) builds a urllib opener and opens
a new connection for every call, which cost the call's two ends more CPU
than the rest of it; ours is the same client (the SDK's URL, headers, JSON,
response and errors) sending over one kept-alive connection per thread
(`KeptAlive`), each request in one write.
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
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from urllib.parse import urlsplit

import python_http_client
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from python_http_client.client import Response
from python_http_client.exceptions import HTTPError, handle_error
from sendgrid import SendGridAPIClient

from apps.messaging.models import Message

from .base import (
    OutcomeUnknownError,
    PermanentError,
    Provider,
    TransientError,
    list_unsubscribe_headers,
    require_body,
)

# The key our message id travels under in custom_args (and comes back under
# in the event webhook's JSON).
CUSTOM_ARG_MESSAGE_ID = "tenure_message_id"
# 408 (the request timed out at SendGrid) and 429 may go through later; so
# may any 5xx. Every other 4xx is about the request itself.
RETRYABLE_4XX = {408, 429}


class SendGridProvider(Provider):
    name = "sendgrid"

    def __init__(self, channel: str) -> None:
        super().__init__(channel)
        if not settings.SENDGRID_API_KEY:
            raise ImproperlyConfigured("EMAIL_PROVIDER=sendgrid needs SENDGRID_API_KEY")
        host = settings.SENDGRID_API_HOST.rstrip("/")
        self.client = SendGridAPIClient(api_key=settings.SENDGRID_API_KEY, host=host)
        sdk = self.client.client
        self.client.client = PooledClient(
            connections=KeptAlive(host),
            host=sdk.host,
            request_headers=sdk.request_headers,
            version=sdk._version,
            timeout=settings.DELIVERY_TIMEOUT_S,
        )
        self.rate_per_second = settings.SENDGRID_RATE_PER_SECOND

    def send(self, message: Message) -> str:
        (answer,) = self.send_many([message])
        if isinstance(answer, Exception):
            raise answer
        return answer

    def send_many(self, messages: Sequence[Message]) -> list[str | Exception]:
        """Every request written first, each on a kept-alive connection of
        its own, then the answers read in turn: the calls wait on SendGrid
        together without a thread each (whose wake-ups and hand-offs of the
        interpreter cost more CPU than the calls); `send` is a group of one.
        The SDK's client for /mail/send builds the requests and reads the
        answers (SendGridAPIClient.send would only call its `post`).

        A call that fails while its request is being written (the connect,
        the TLS handshake, the one write) never reached SendGrid whole, so
        it may be retried (`failure`); once it is written, no answer means
        it may have been sent (`unanswered`). SendGrid's mail/send takes no
        idempotency key that would make sending it again safe."""
        endpoint = self.client.client.mail.send
        calls: list[Call | Exception] = []
        for slot, message in enumerate(messages):
            try:
                require_body(self.name, message)
                body = self.payload(message)
                calls.append(endpoint.start("POST", request_body=body, slot=slot))
            except Exception as exc:
                calls.append(self.failure(exc))
        answers: list[str | Exception] = []
        for call in calls:
            if isinstance(call, Exception):
                answers.append(call)
                continue
            try:
                answers.append(_message_id(endpoint.finish(call)))
            except Exception as exc:
                answers.append(self.unanswered(exc, call))
        return answers

    def failure(self, exc: Exception) -> Exception:
        """What a call that failed before its request was written whole
        raises: a network error (refused, unreachable, no DNS answer, a TLS
        handshake or a connect that failed or timed out, a connection the
        peer closed before the write went through) is transient: SendGrid
        cannot act on a request it never had whole. Anything else as it is."""
        if isinstance(exc, HTTPError):
            return self.error(exc)
        if isinstance(exc, OSError | http.client.HTTPException):
            return TransientError(f"sendgrid: {type(exc).__name__}: {exc} (nothing sent)")
        return exc

    def unanswered(self, exc: Exception, call: "Call") -> Exception:
        """What a call whose request was written raises: an HTTP error by its
        status; a read timeout, a reset or closed connection, an answer that
        cannot be read: SendGrid may have the message, so its outcome is
        unknown (never retried by itself). Anything else as it is."""
        if isinstance(exc, HTTPError):
            return self.error(exc)
        if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError
            what = f"read timeout after {call.timeout:.1f} s"
        elif isinstance(exc, OSError | http.client.HTTPException):
            what = f"{type(exc).__name__} after the request was written: {exc}"
        else:
            return exc
        return OutcomeUnknownError(f"sendgrid: {what}: may have reached SendGrid")

    def payload(self, message: Message) -> dict:
        """The v3 /mail/send body for one message (built as a dict: the
        SDK's Mail helper would only build the same dict)."""
        from_name, from_email = _parsed(message.from_address or settings.DEFAULT_FROM_EMAIL)
        content = []
        # Order matters to SendGrid: text/plain before text/html.
        if message.text:
            content.append({"type": "text/plain", "value": message.text})
        if message.html:
            content.append({"type": "text/html", "value": message.html})
        body = {
            "personalizations": [{"to": [{"email": message.to_address}]}],
            "from": {"email": from_email, **({"name": from_name} if from_name else {})},
            "subject": message.subject,
            "content": content,
            "custom_args": {CUSTOM_ARG_MESSAGE_ID: str(message.pk)},
            "categories": [message.category],
            # Opens and clicks are tracked by our own signed links (apps.tracking);
            # SendGrid's rewriting would wrap them a second time.
            "tracking_settings": {
                "click_tracking": {"enable": False, "enable_text": False},
                "open_tracking": {"enable": False},
            },
        }
        if message.reply_to:
            reply_name, reply_email = _parsed(message.reply_to)
            body["reply_to"] = {
                "email": reply_email,
                **({"name": reply_name} if reply_name else {}),
            }
        if headers := list_unsubscribe_headers(message):
            body["headers"] = headers
        return body

    @staticmethod
    def error(exc: HTTPError) -> Exception:
        status = getattr(exc, "status_code", None)
        detail = _body_text(exc)
        text = f"sendgrid: HTTP {status}: {detail}" if detail else f"sendgrid: HTTP {status}"
        if status is not None and (status >= 500 or status in RETRYABLE_4XX):
            return TransientError(text, retry_after=_reset_wait(exc) if status == 429 else None)
        return PermanentError(text, code=status)


def _message_id(response: Response) -> str:
    return response.headers.get("X-Message-Id", "") or ""


@functools.lru_cache(maxsize=256)
def _parsed(address: str) -> tuple[str, str]:
    """`parseaddr`, once per address: a send's sender (and reply-to) is
    nearly always one of a few, and parsing it cost more than the JSON."""
    return parseaddr(address)


def _body_text(exc: HTTPError) -> str:
    """SendGrid's error list, flattened to one line ("field: message; ...")."""
    try:
        errors = exc.to_dict.get("errors") or []
        parts = [
            f"{e['field']}: {e['message']}" if e.get("field") else e["message"] for e in errors
        ]
        return "; ".join(parts)
    except Exception:
        raw = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else str(exc.body)
        return " ".join(raw.split())[:300]


def _reset_wait(exc: HTTPError) -> float | None:
    """Seconds until `X-RateLimit-Reset` (epoch seconds, SendGrid's clock)."""
    try:
        reset = float(exc.headers.get("X-RateLimit-Reset"))
    except (AttributeError, TypeError, ValueError):
        return None
    return max(0.0, reset - time.time())


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
