"""A fake SendGrid + Twilio API on loopback, for the real SDKs to talk to.

It answers what the real services answer: SendGrid `POST /v3/mail/send` with
202, an empty body and the id in `X-Message-Id`; Twilio `POST
/2010-04-01/Accounts/{sid}/Messages.json` with 201 and the message's JSON
(`sid` "SM…"). It checks authentication the way they do (Bearer key; Basic
account sid + token) and the shape of the request (a SendGrid body without
personalizations, a Twilio form without To or Body gets their 400), and
records every request.

Tests script answers per service: `server.script("twilio", Reply.twilio_error(
400, 21211, "Invalid 'To' Phone Number"))` makes the next Twilio call fail that
way; scripted replies are used in order, then the default success resumes.
`Reply(status, delay=…)` answers late: the request is recorded when it
arrives, so a client that gave up still counts as one that reached the
provider (`server.delay` does it for every unscripted answer);
`Reply.drop()` closes the connection without answering (after reading the
request); `Reply(status, close_after=True)` answers, then closes the kept-alive
connection (a server ending an idle connection).

As a program (`python -m tests.fakes.provider --port 0`) it serves until
killed, prints its URL, and reports counts at `GET /_fake/stats` (the
messaging benchmark uses that).
"""

import argparse
import base64
import collections
import contextlib
import itertools
import json
import random
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SENDGRID_KEY = "SG.fake-key.for-tests"
TWILIO_SID = "AC" + "0" * 31 + "1"
TWILIO_TOKEN = "fake-twilio-auth-token"
SENDGRID_PATH = "/v3/mail/send"
TWILIO_PREFIX = "/2010-04-01/Accounts/"


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering
    drop_connection: bool = False  # close without answering
    close_after: bool = False  # answer, then close the connection

    @classmethod
    def json(cls, status: int, data, **kwargs) -> "Reply":
        headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
        return cls(status, json.dumps(data).encode(), headers=headers, **kwargs)

    @classmethod
    def sendgrid_error(cls, status: int, message: str, **kwargs) -> "Reply":
        return cls.json(status, {"errors": [{"message": message, "field": None}]}, **kwargs)

    @classmethod
    def sendgrid_rate_limited(cls, *, reset_in: float = 1.0) -> "Reply":
        reset = str(int(time.time() + reset_in))
        return cls.sendgrid_error(
            429,
            "too many requests",
            headers={"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0",
                     "X-RateLimit-Reset": reset},
        )  # fmt: skip

    @classmethod
    def twilio_error(cls, status: int, code: int, message: str, **kwargs) -> "Reply":
        data = {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
        return cls.json(status, data, **kwargs)

    @classmethod
    def drop(cls) -> "Reply":
        return cls(0, drop_connection=True)


@dataclass(frozen=True)
class Recorded:
    service: str  # "sendgrid", "twilio" or "other"
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the fake answered (0: dropped)
    at: float  # time.time() when it arrived

    @property
    def json(self):
        return json.loads(self.body)

    @property
    def form(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(self.body.decode(), keep_blank_values=True))


class FakeProviderServer:
    def __init__(
        self,
        *,
        port: int = 0,
        sendgrid_key: str = SENDGRID_KEY,
        twilio_sid: str = TWILIO_SID,
        twilio_token: str = TWILIO_TOKEN,
        keep_requests: bool = True,
    ) -> None:
        self.sendgrid_key = sendgrid_key
        self.twilio_sid = twilio_sid
        self.twilio_token = twilio_token
        self.keep_requests = keep_requests
        # Seconds every unscripted answer waits (a slow provider).
        self.delay = 0.0
        self.requests: list[Recorded] = []
        self.connections = 0  # TCP connections accepted (kept-alive ones serve many requests)
        self.counts = {"sendgrid": 0, "twilio": 0, "other": 0}
        # Our message ids seen in SendGrid custom_args: a repeat is a duplicate send.
        self.message_ids: set[str] = set()
        self.duplicates = 0
        self._scripts: dict[str, list[Reply]] = {"sendgrid": [], "twilio": []}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.httpd = _Server(("127.0.0.1", port), _handler_for(self))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeProviderServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "FakeProviderServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def script(self, service: str, *replies: Reply) -> None:
        """The next requests to `service` get these replies, in order."""
        with self._lock:
            self._scripts[service].extend(replies)

    def of(self, service: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.service == service]

    @property
    def sendgrid(self) -> list[Recorded]:
        return self.of("sendgrid")

    @property
    def twilio(self) -> list[Recorded]:
        return self.of("twilio")

    def stats(self) -> dict:
        with self._lock:
            return {
                **self.counts,
                "unique_message_ids": len(self.message_ids),
                "duplicates": self.duplicates,
            }

    # --- answering -------------------------------------------------------------------

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        service = (
            "sendgrid"
            if path == SENDGRID_PATH
            else "twilio"
            if path.startswith(TWILIO_PREFIX)
            else "other"
        )
        if service == "other":
            reply = self._other(method, path)
        else:
            with self._lock:
                scripted = self._scripts[service].pop(0) if self._scripts[service] else None
            reply = scripted
            if reply is None:
                reply = (
                    self._sendgrid(headers, body)
                    if service == "sendgrid"
                    else self._twilio(path, headers, body)
                )
                if self.delay:
                    reply = replace(reply, delay=self.delay)
        with self._lock:
            self.counts[service] += 1
            if self.keep_requests:
                status = 0 if reply.drop_connection else reply.status
                self.requests.append(
                    Recorded(service, method, path, headers, body, status, time.time())
                )
        return reply

    def _other(self, method: str, path: str) -> Reply:
        if method == "GET" and path == "/_fake/stats":
            return Reply.json(200, self.stats())
        return Reply.json(404, {"error": f"the fake serves no {method} {path}"})

    def _sendgrid(self, headers: dict[str, str], body: bytes) -> Reply:
        if headers.get("authorization") != f"Bearer {self.sendgrid_key}":
            return Reply.sendgrid_error(
                401, "The provided authorization grant is invalid, expired, or revoked"
            )
        try:
            data = json.loads(body)
        except ValueError:
            return Reply.sendgrid_error(400, "Bad Request: the body is not JSON")
        problems = [
            message
            for ok, message in (
                (data.get("personalizations"), "The personalizations field is required."),
                ((data.get("from") or {}).get("email"), "The from object must be provided."),
                (
                    data.get("content"),
                    "Unless a valid template_id is provided, content is required.",
                ),
            )
            if not ok
        ]
        if problems:
            return Reply.sendgrid_error(400, " ".join(problems))
        our_id = str((data.get("custom_args") or {}).get("tenure_message_id", ""))
        if our_id:
            with self._lock:
                if our_id in self.message_ids:
                    self.duplicates += 1
                self.message_ids.add(our_id)
        return Reply(
            202, headers={"X-Message-Id": f"fake-sg-{next(self._ids)}-{secrets.token_hex(6)}"}
        )

    def _twilio(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        expected = f"{self.twilio_sid}:{self.twilio_token}".encode()
        if headers.get("authorization") != "Basic " + base64.b64encode(expected).decode():
            return Reply.twilio_error(401, 20003, "Authenticate")
        if path != f"{TWILIO_PREFIX}{self.twilio_sid}/Messages.json":
            return Reply.twilio_error(404, 20404, f"The requested resource {path} was not found")
        form = dict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))
        if not form.get("To"):
            return Reply.twilio_error(400, 21604, "A 'To' phone number is required.")
        if not form.get("Body"):
            return Reply.twilio_error(400, 21602, "Message body is required.")
        if not (form.get("From") or form.get("MessagingServiceSid")):
            return Reply.twilio_error(400, 21603, "A 'From' phone number is required.")
        sid = f"SM{secrets.token_hex(16)}"
        return Reply.json(
            201,
            {
                "sid": sid,
                "account_sid": self.twilio_sid,
                "to": form["To"],
                "from": form.get("From"),
                "messaging_service_sid": form.get("MessagingServiceSid"),
                "body": form["Body"],
                "status": "queued",
                "num_segments": "1",
                "direction": "outbound-api",
                "api_version": "2010-04-01",
                "uri": f"{TWILIO_PREFIX}{self.twilio_sid}/Messages/{sid}.json",
            },
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # A provider's API takes every connection; the default backlog of 5 would
    # reset some when workers call it many at a time.
    request_queue_size = 1024

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.closed = threading.Semaphore(0)  # released once per connection closed

    def shutdown_request(self, request) -> None:
        super().shutdown_request(request)
        self.closed.release()


def _handler_for(server: FakeProviderServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like the real APIs
        # An answer goes out in one write; with Nagle's algorithm a second
        # one (http.server writes the headers and the body apart) would wait
        # for the client's delayed ACK (40 ms on Linux).
        disable_nagle_algorithm = True
        _date = (0, "")  # (second, its Date header), made once a second

        def setup(self) -> None:
            super().setup()
            with server._lock:
                server.connections += 1

        def parse_request(self) -> bool:
            """http.server's, but the headers are read into a dict of
            lower-cased names here instead of by the email package's
            parser, which cost the fake more than the rest of a request."""
            self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
            words = self.requestline.split()
            if len(words) != 3 or not words[2].startswith("HTTP/1."):
                self.command, self.request_version = "", "HTTP/1.0"
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request line {self.requestline!r}")
                return False
            self.command, self.path, self.request_version = words
            headers: dict[str, str] = {}
            for _ in range(100):
                line = self.rfile.readline(65537)
                if line in (b"\r\n", b"\n", b""):
                    break
                name, colon, value = str(line, "iso-8859-1").partition(":")
                if not colon:
                    self.send_error(HTTPStatus.BAD_REQUEST, f"Bad header line {line!r}")
                    return False
                # As the email package leaves it: leading blanks dropped.
                headers[name.strip().lower()] = value.lstrip(" \t").rstrip("\r\n")
            else:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers")
                return False
            self.headers = headers
            connection = headers.get("connection", "").lower()
            self.close_connection = connection == "close" or (
                self.request_version == "HTTP/1.0" and connection != "keep-alive"
            )
            return True

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            path = urllib.parse.urlsplit(self.path).path
            reply = server.answer(self.command, path, self.headers, body)
            if reply.delay:
                time.sleep(reply.delay)
            if reply.drop_connection:
                self.close_connection = True
                return
            head = [
                f"HTTP/1.1 {reply.status} {self.responses.get(reply.status, ('',))[0]}",
                f"Server: {self.version_string()}",
                f"Date: {self._http_date()}",
                *(f"{name}: {value}" for name, value in reply.headers.items()),
                f"Content-Length: {len(reply.body)}",
                "\r\n",
            ]
            try:
                self.wfile.write("\r\n".join(head).encode("iso-8859-1") + reply.body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up (its timeout)
            if reply.close_after:
                self.close_connection = True

        do_GET = do_POST = _serve

        @classmethod
        def _http_date(cls) -> str:
            second = int(time.time())
            if cls._date[0] != second:
                cls._date = (second, formatdate(second, usegmt=True))
            return cls._date[1]

        def log_message(self, format, *args) -> None:
            pass

    return Handler


# --- under attack: storms, slow answers, per-message counts (tests/chaos) -------------


@dataclass
class Weather:
    """How a ChaosProviderServer answers, per provider request:

    - `storm`: the share (0-1) of requests answered with an error from
      `storm_statuses` (429 carries the SendGrid/Twilio rate-limit answer),
      before the request is taken: proof that nothing was sent.
    - `slow`: the share of requests taken (the provider accepts them: 202 or
      201) but answered after `slow_delay` seconds, past the client's timeout.
    Decided by a seeded random generator, so a run can be repeated."""

    storm: float = 0.0
    storm_statuses: tuple[int, ...] = (429, 500, 503)
    slow: float = 0.0
    slow_delay: float = 0.0
    seed: int = 15


def message_key(service: str, body: bytes) -> str:
    """Which of our messages a provider request carries: SendGrid's
    custom_args tenure_message_id (one per personalization: a group's
    request names several, joined by commas), or Twilio's To number (the
    chaos scenarios give each customer its own)."""
    try:
        if service == "sendgrid":
            data = json.loads(body)
            ids = [
                str((p.get("custom_args") or {}).get("tenure_message_id", ""))
                for p in data.get("personalizations") or []
            ]
            top = str((data.get("custom_args") or {}).get("tenure_message_id", ""))
            return ",".join(i for i in ids if i) or top
        form = dict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))
        return form.get("To", "")
    except (ValueError, AttributeError):
        return ""


class ChaosProviderServer(FakeProviderServer):
    """The fake, with weather (see Weather) and counts kept per message:
    `requests_for[key]` every request naming the message, `accepted_for[key]`
    those the provider took (a 2xx answer, sent late or not): a message
    accepted twice reached its recipient twice."""

    def __init__(self, *, weather: Weather | None = None, **kwargs) -> None:
        kwargs.setdefault("keep_requests", False)
        super().__init__(**kwargs)
        self.weather = weather or Weather()
        self._random = random.Random(self.weather.seed)
        self.requests_for: collections.Counter[str] = collections.Counter()
        self.accepted_for: collections.Counter[str] = collections.Counter()
        self.total = 0

    def set_weather(self, weather: Weather) -> None:
        with self._lock:
            self.weather = weather
            self._random = random.Random(weather.seed)

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        reply = super().answer(method, path, headers, body)
        if path != SENDGRID_PATH and not path.startswith(TWILIO_PREFIX):
            return reply
        service = "sendgrid" if path == SENDGRID_PATH else "twilio"
        with self._lock:
            weather, roll = self.weather, self._random.random()
        if roll < weather.storm:
            status = weather.storm_statuses[int(roll * 1e6) % len(weather.storm_statuses)]
            reply = _storm_reply(service, status)
        elif roll < weather.storm + weather.slow and 200 <= reply.status < 300:
            reply = replace(reply, delay=weather.slow_delay)
        taken = 200 <= reply.status < 300 and not reply.drop_connection
        with self._lock:
            self.total += 1
            for key in message_key(service, body).split(","):
                self.requests_for[key] += 1
                if taken:
                    self.accepted_for[key] += 1
        return reply

    def duplicates(self) -> list[str]:
        """The messages the provider took more than once."""
        with self._lock:
            return sorted(k for k, n in self.accepted_for.items() if n > 1)


def _storm_reply(service: str, status: int) -> Reply:
    if service == "sendgrid":
        if status == 429:
            return Reply.sendgrid_rate_limited(reset_in=0.0)
        return Reply.sendgrid_error(status, "service unavailable (storm)")
    if status == 429:
        return Reply.twilio_error(429, 20429, "Too Many Requests")
    return Reply.twilio_error(status, 20500, "Internal Server Error (storm)")


def main() -> None:
    parser = argparse.ArgumentParser(description="serve the fake SendGrid + Twilio API")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = FakeProviderServer(port=args.port, keep_requests=False)
    print(server.url, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.httpd.serve_forever()


if __name__ == "__main__":
    main()
