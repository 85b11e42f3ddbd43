"""The webhook node's call: a signed POST, made outside any transaction.

The engine records the step ("calling") and commits before calling, so a
database transaction never waits on someone else's server, then records the
outcome here in a second transaction:

- a 2xx answer: the step is "called" and the enrollment goes on;
- a connection error, timeout, 408, 429 or 5xx: retried up to
  JOURNEY_WEBHOOK_MAX_ATTEMPTS calls in all, each retry a row due later
  (`next_run_at`, JOURNEY_WEBHOOK_BACKOFF_S * 2^(n-1) seconds), never a sleeping worker;
- any other answer (4xx, a redirect), no signing secret, a host that is or
  resolves to a loopback, private, link-local or reserved address
  (webhook_hosts.py: resolved once, every address checked, the connection
  made to a checked one), or the last retry failing: the step is "failed",
  and the node's `on_failure` says whether the enrollment goes on
  (`continue`, the default) or fails.

What the receiver gets: a JSON body (journey, node, enrollment, customer and
the triggering event) and three headers. `X-Tenure-Timestamp` is the Unix
time of the call; `X-Tenure-Signature` is `v1=` and the hex HMAC-SHA256, keyed
by the secret, of `"<timestamp>." + body`; `X-Tenure-Delivery` is the step's
key, the same on every retry. A receiver recomputes the signature, compares
in constant time, refuses old timestamps (replays) — `signature_verify` does
all three — and ignores a delivery id it has seen: a call whose answer was
lost (a worker killed mid-call) is made again.
"""

import functools
import hashlib
import hmac
import http.client
import json
import logging
import socket
import ssl
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from django.conf import settings
from django.db import transaction

from . import webhook_hosts
from .models import Enrollment, EnrollmentStep

if TYPE_CHECKING:
    from .engine.visit import Run

logger = logging.getLogger(__name__)

USER_AGENT = "Tenure-Webhook/1"
SIGNATURE_VERSION = "v1"
REPLAY_TOLERANCE = timedelta(minutes=5)
MAX_PARALLEL_CALLS = 8
TRANSIENT_STATUSES = {408, 425, 429}


@dataclass(frozen=True)
class PendingCall:
    enrollment_id: int
    node_id: str
    visit: int
    step_id: int
    url: str
    secret_name: str | None
    attempt: int  # this call's number, the first is 1
    delivery: str  # the step's key, sent as X-Tenure-Delivery
    body: bytes


class CallsMaker(Protocol):
    """What makes a chunk's pending calls once its transaction committed
    (`engine.enrollments_advance`'s `make_calls`): records each outcome and
    returns the enrollments that can go on now. `calls_make` uses the
    network; the backtest answers every call without one."""

    def __call__(self, pending: list[PendingCall], *, now: datetime) -> list[int]: ...


@dataclass(frozen=True)
class Outcome:
    ok: bool
    permanent: bool  # not worth retrying
    status: int | None
    error: str
    ms: int


def attempt_key(node_id: str, visit: int) -> str:
    return f"{node_id}:{visit}"


def pending_call(run: "Run") -> PendingCall:
    """The call a webhook node is about to make (its step is open)."""
    enrollment, node = run.enrollment, run.node
    context = enrollment.context if isinstance(enrollment.context, dict) else {}
    made = context.get("webhook_attempts", {}).get(attempt_key(node.id, run.visit), 0)
    return PendingCall(
        enrollment_id=enrollment.pk,
        node_id=node.id,
        visit=run.visit,
        step_id=run.step.pk,
        url=node.url,
        secret_name=node.secret,
        attempt=made + 1,
        delivery=run.key,
        body=json.dumps(payload(run), separators=(",", ":"), default=str).encode(),
    )


def payload(run: "Run") -> dict[str, Any]:
    enrollment, customer = run.enrollment, run.enrollment.customer
    context = enrollment.context if isinstance(enrollment.context, dict) else {}
    return {
        "delivery": run.key,
        "journey": {
            "slug": enrollment.journey.slug,
            "name": enrollment.journey.name,
            "version": enrollment.journey_version.number,
        },
        "node": run.node.id,
        "enrollment": {"id": enrollment.pk, "entered_at": enrollment.entered_at.isoformat()},
        "customer": {
            "id": customer.pk,
            "external_id": customer.external_id,
            "email": customer.email,
            "phone": customer.phone,
            "timezone": customer.timezone,
            "traits": customer.traits,
        },
        "event": context.get("event"),
        "sent_at": run.now.isoformat(),
    }


# --- signing ---------------------------------------------------------------------------


def secret_for(name: str | None) -> str:
    """The signing secret of a node: the named one, or the default; "" if none."""
    if name:
        return str(settings.JOURNEY_WEBHOOK_SECRETS.get(name, ""))
    return settings.JOURNEY_WEBHOOK_SECRET


def signature(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def signature_verify(
    *,
    secret: str,
    body: bytes,
    timestamp: str,
    signature_header: str,
    now: datetime,
    tolerance: timedelta = REPLAY_TOLERANCE,
) -> bool:
    """What a receiver does: the signature matches (constant-time) and the
    timestamp is within `tolerance` of `now`."""
    try:
        sent = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs(now.timestamp() - sent) > tolerance.total_seconds():
        return False
    return hmac.compare_digest(signature(secret, body, sent), signature_header or "")


# --- calling ---------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not an instruction: POSTing the customer's data
    somewhere else than the node says is not ours to decide."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _connect(addresses: list[str], port: int, timeout: Any, source: Any) -> socket.socket:
    """A connection to the first of the checked `addresses` that answers
    (socket.create_connection's way, without resolving again)."""
    error: OSError | None = None
    for address in addresses:
        try:
            sock = socket.create_connection((address, port), timeout, source)
        except OSError as exc:
            error = exc
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise error or OSError("no address to connect to")


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to addresses resolved and checked beforehand
    (webhook_hosts.resolve); the Host header stays the URL's."""

    def __init__(self, *args: Any, addresses: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.addresses = addresses

    def connect(self) -> None:
        self.sock = _connect(self.addresses, self.port, self.timeout, self.source_address)


_TLS = ssl.create_default_context()


class _PinnedHTTPS(http.client.HTTPSConnection):
    """The same over TLS, the certificate checked for the URL's host (SNI)."""

    def __init__(self, *args: Any, addresses: list[str], **kwargs: Any) -> None:
        super().__init__(*args, context=_TLS, **kwargs)
        self.addresses = addresses

    def connect(self) -> None:
        sock = _connect(self.addresses, self.port, self.timeout, self.source_address)
        self.sock = _TLS.wrap_socket(sock, server_hostname=self.host)


class _PinnedHandler(urllib.request.HTTPHandler, urllib.request.HTTPSHandler):
    def __init__(self, addresses: list[str]) -> None:
        urllib.request.HTTPHandler.__init__(self)
        self.addresses = addresses

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(functools.partial(_PinnedHTTP, addresses=self.addresses), req)

    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(functools.partial(_PinnedHTTPS, addresses=self.addresses), req)


def _opener(addresses: list[str]) -> urllib.request.OpenerDirector:
    """An opener that reaches only `addresses`: no redirects, no proxy from
    the environment (it would connect elsewhere than the checked address)."""
    return urllib.request.build_opener(
        _NoRedirect, urllib.request.ProxyHandler({}), _PinnedHandler(addresses)
    )


def call(pending: PendingCall, *, now: datetime) -> Outcome:
    """Make one call. Never raises: every way it can go wrong is an Outcome."""
    secret = secret_for(pending.secret_name)
    if not secret:
        setting = (
            f"JOURNEY_WEBHOOK_SECRETS[{pending.secret_name!r}]"
            if pending.secret_name
            else "JOURNEY_WEBHOOK_SECRET"
        )
        return Outcome(False, True, None, f"no signing secret: set {setting}", 0)
    started = time.monotonic()
    try:
        # Resolved once and checked here, against DNS rebinding (SSRF).
        addresses = webhook_hosts.resolve(pending.url)
    except webhook_hosts.AddressRefused as exc:
        return Outcome(False, True, None, f"refused: the URL {exc}", 0)
    except OSError as exc:  # DNS failed: maybe for now
        ms = round((time.monotonic() - started) * 1000)
        return Outcome(False, False, None, f"{type(exc).__name__}: {exc}", ms)
    timestamp = int(now.timestamp())
    request = urllib.request.Request(  # noqa: S310 - http(s) only (webhook_hosts.resolve)
        pending.url,
        data=pending.body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Tenure-Delivery": pending.delivery,
            "X-Tenure-Timestamp": str(timestamp),
            "X-Tenure-Signature": signature(secret, pending.body, timestamp),
        },
    )
    try:
        opener = _opener(addresses)
        with opener.open(request, timeout=settings.JOURNEY_WEBHOOK_TIMEOUT_S) as response:
            status = response.status
            response.read(65_536)
    except urllib.error.HTTPError as exc:
        ms = round((time.monotonic() - started) * 1000)
        transient = exc.code in TRANSIENT_STATUSES or exc.code >= 500
        return Outcome(False, not transient, exc.code, f"HTTP {exc.code} {exc.reason}", ms)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        ms = round((time.monotonic() - started) * 1000)
        reason = getattr(exc, "reason", exc)
        return Outcome(False, False, None, f"{type(exc).__name__}: {reason}", ms)
    ms = round((time.monotonic() - started) * 1000)
    if 200 <= status < 300:
        return Outcome(True, False, status, "", ms)
    return Outcome(False, True, status, f"HTTP {status} (not followed)", ms)


def calls_make(pending: list[PendingCall], *, now: datetime) -> list[int]:
    """Make the calls (a few at a time), record each outcome as its call
    returns, and return the enrollments that can go on now (called, or failed
    for good). A task stopped midway (its time limit: a chunk of calls to a
    server that never answers) keeps the outcomes recorded so far; only the
    calls without one are made again, when their claims expire."""
    ready = []
    pool = ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_CALLS, len(pending)))
    try:
        calls = {pool.submit(call, item, now=now): item for item in pending}
        for done in as_completed(calls):
            item = calls[done]
            try:
                if outcome_record(item, done.result(), now=now):
                    ready.append(item.enrollment_id)
            except Exception:
                # The step stays "calling": the lease expires and the call is
                # made again (at least once, same delivery id).
                logger.exception("webhook %s: could not record the outcome", item.delivery)
    finally:
        # Stopped midway: the calls not started are not made now.
        pool.shutdown(wait=False, cancel_futures=True)
    return sorted(ready)


def backoff(attempt: int) -> timedelta:
    """How long after failed call number `attempt` the next one is made."""
    return timedelta(seconds=settings.JOURNEY_WEBHOOK_BACKOFF_S * 2 ** (attempt - 1))


def outcome_record(item: PendingCall, outcome: Outcome, *, now: datetime) -> bool:
    """Record a call's outcome on its step and move the enrollment's clock;
    True when the enrollment can go on at once."""
    limit = settings.JOURNEY_WEBHOOK_MAX_ATTEMPTS
    with transaction.atomic():
        step = EnrollmentStep.objects.select_for_update().get(pk=item.step_id)
        enrollment = Enrollment.objects.select_for_update().filter(pk=item.enrollment_id).first()
        if step.finished_at is not None or enrollment is None:
            return False  # recorded by another run of the same call
        context = enrollment.context if isinstance(enrollment.context, dict) else {}
        here = (
            enrollment.state == Enrollment.State.ACTIVE
            and enrollment.current_node == item.node_id
            and context.get("visits", {}).get(item.node_id) == item.visit
        )
        context.setdefault("webhook_attempts", {})[attempt_key(item.node_id, item.visit)] = (
            item.attempt
        )
        tries = f" (attempt {item.attempt})" if item.attempt > 1 else ""
        go_on = True
        if outcome.ok:
            step.outcome = "called"
            step.detail = f"POST {item.url} → {outcome.status} in {outcome.ms} ms{tries}"
            step.finished_at = now
        elif not outcome.permanent and item.attempt < limit:
            retry_at = now + backoff(item.attempt)
            step.outcome = "retrying"
            step.detail = (
                f"POST {item.url}: attempt {item.attempt} of {limit} failed: {outcome.error}; "
                f"next attempt at {retry_at:%Y-%m-%d %H:%M:%S} UTC"
            )
            go_on = False
        else:
            after = f" after {item.attempt} attempts" if item.attempt > 1 else ""
            step.outcome = "failed"
            step.detail = f"POST {item.url} failed{after}: {outcome.error}"
            step.finished_at = now
        step.save(update_fields=["outcome", "detail", "finished_at"])
        if not here:
            return False
        fields: dict[str, Any] = {"context": context, "lease_until": None, "lease_token": ""}
        if not go_on:
            fields["next_run_at"] = retry_at
        Enrollment.objects.filter(pk=enrollment.pk).update(**fields)
    return go_on
