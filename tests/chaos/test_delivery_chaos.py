"""Delivery under fault injection: each scenario sends CHAOS_MESSAGES emails
through real workers and the real SendGrid SDK to the chaos fake, breaks
something mid-run, lets the sweeper (what beat runs) settle it, then checks
every message:

- the provider took it at most once (no duplicate);
- it ends sent, failed or unknown, never left queued, deferred or sending;
- sent means the provider took it exactly once, failed means never;
- unknown only where a request may have reached the provider: a worker
  killed mid-call (at most the calls in flight), or a request the provider
  took and answered after the timeout; never after answers that prove
  nothing was sent (429/5xx).
"""

import itertools
import time
import uuid

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.customers.models import Customer
from apps.customers.schemas import IdentifyIn
from apps.customers.services import ingest
from apps.messaging.delivery import messages_sweep
from apps.messaging.models import Message
from apps.messaging.services import SendRequest, message_send_many
from tests.fakes.provider import ChaosProviderServer, Weather
from tests.messaging.sending import make_template

from .conftest import MESSAGES, REPEAT, ROWS, Row

S = Message.Status
SETTLED = {S.SENT, S.FAILED, S.UNKNOWN}
_runs = itertools.count(1)


def enqueue(n: int, scenario: str) -> list[int]:
    """n customers and one committed marketing email to each (their delivery
    tasks are published on commit)."""
    tag = f"{scenario}-{next(_runs)}-{uuid.uuid4().hex[:6]}"
    now = timezone.now()
    ingest(
        [IdentifyIn(userId=f"{tag}-{i}", traits={"email": f"{tag}-{i}@example.com"})
         for i in range(n)],
        received_at=now,
    )  # fmt: skip
    template = make_template(slug=tag)
    customers = Customer.objects.filter(external_id__startswith=f"{tag}-").values_list(
        "pk", flat=True
    )
    with transaction.atomic():
        sent = message_send_many(
            [SendRequest(customer=pk, template=template, idempotency_key=f"{tag}:{pk}")
             for pk in customers],
            now=now,
        )  # fmt: skip
    ids = [m.pk for m in sent]
    assert len(ids) == n and all(m.status == S.QUEUED for m in sent), "the sends were not queued"
    return ids


def wait_until(predicate, *, timeout: float, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s")
        time.sleep(interval)


def settle(ids: list[int], *, timeout: float, tick=lambda: None) -> list[str]:
    """Run the sweeper as beat would until no message waits (or `timeout`).
    As under beat, a sweep that raises is followed by the next one; what it
    raised is returned (a sweeper failing under load is a defect too)."""
    deadline, errors = time.monotonic() + timeout, []
    pending = Message.objects.filter(pk__in=ids, status__in=[S.QUEUED, S.DEFERRED, S.SENDING])
    while pending.exists() and time.monotonic() < deadline:
        tick()
        try:
            messages_sweep(now=timezone.now())
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
        time.sleep(0.3)
    return errors


def tally(
    scenario: str, ids: list[int], provider: ChaosProviderServer, started: float, *,
    unknown_allowed: str, in_flight_lost: int = 0, deaths: int = 0, sweep_errors=(),
) -> Row:  # fmt: skip
    """The row of this repetition, with every broken rule in `problems`."""
    final = dict(Message.objects.filter(pk__in=ids).values_list("pk", "status"))
    waiting = {
        m["pk"]: m
        for m in Message.objects.filter(pk__in=ids)
        .exclude(status__in=SETTLED)
        .values("pk", "attempts", "send_after", "published_at", "lease_until", "error")
    }
    row = Row(scenario, len(ids), worker_deaths=deaths, seconds=time.monotonic() - started)
    row.sweep_errors = len(sweep_errors)
    row.problems += [f"the sweeper raised: {error}" for error in sweep_errors]
    for pk in ids:
        status = final.get(pk)
        asked, took = provider.requests_for[str(pk)], provider.accepted_for[str(pk)]
        row.requests += asked
        if took > 1:
            row.duplicates += 1
            row.problems.append(f"message {pk}: the provider took it {took} times")
        if status not in SETTLED:
            row.lost += 1
            row.problems.append(
                f"message {pk}: left {status} ({asked} requests; {waiting.get(pk)}; "
                f"now {timezone.now():%H:%M:%S.%f})"
            )
        elif status == S.SENT:
            row.sent += 1
            if took != 1:
                row.problems.append(f"message {pk}: sent, but the provider took it {took} times")
        elif status == S.FAILED:
            row.failed += 1
            if took:
                row.problems.append(f"message {pk}: failed, but the provider took it")
        else:
            row.unknown += 1
            if unknown_allowed == "none":
                row.problems.append(
                    f"message {pk}: unknown, though every answer was definite ({asked} requests)"
                )
            elif unknown_allowed == "reached" and not asked:
                row.problems.append(f"message {pk}: unknown, but no request reached the provider")
    if unknown_allowed == "in_flight" and row.unknown > in_flight_lost:
        row.problems.append(
            f"{row.unknown} unknown, more than the {in_flight_lost} calls that were in flight"
        )
    ROWS.append(row)
    return row


def check(rows: list[Row], setup: str) -> None:
    problems = [f"repetition {i + 1}: {p}" for i, r in enumerate(rows) for p in r.problems]
    assert not problems, f"{setup}\n{len(problems)} problem(s), the first ones:\n" + "\n".join(
        problems[:20]
    )


def in_flight() -> int:
    return settings.DELIVERY_CONCURRENCY  # a killed worker was calling at most this many


def test_a_worker_killed_mid_batch_sends_nothing_twice_and_leaves_nothing_waiting(
    chaos_provider, worker_factory
):
    chaos_provider.delay = 0.02  # each call takes a little while: the kill lands mid-batch
    worker, rows = worker_factory(), []
    for _ in range(REPEAT):
        started = time.monotonic()
        ids = enqueue(MESSAGES, "worker-kill")
        wait_until(lambda: chaos_provider.total >= rows_total(rows) + MESSAGES // 4, timeout=60)
        worker.kill()  # kill -9 of the worker and its pool, mid-call
        worker.start()  # what the supervisor (or the platform) does
        errors = settle(ids, timeout=60 + MESSAGES * 0.05)
        rows.append(
            tally("worker kill -9", ids, chaos_provider, started, sweep_errors=errors,
                  unknown_allowed="in_flight", in_flight_lost=in_flight())
        )  # fmt: skip
    check(rows, f"{MESSAGES} emails, the worker killed (-9) after a quarter went out")


def rows_total(rows: list[Row]) -> int:
    return sum(r.requests for r in rows)


def test_the_broker_killed_and_restarted_loses_nothing_and_sends_nothing_twice(
    chaos_provider, own_redis, publish_to, worker_factory
):
    chaos_provider.delay = 0.02
    publish_to(own_redis.url)
    worker, rows = worker_factory(own_redis.url), []
    for _ in range(REPEAT):
        started, deaths = time.monotonic(), 0
        ids = enqueue(MESSAGES, "broker-restart")
        wait_until(lambda: chaos_provider.total >= rows_total(rows) + MESSAGES // 4, timeout=60)
        own_redis.kill()  # kill -9: the queued tasks and unacked ones are gone
        time.sleep(1)
        own_redis.start()  # the same port, empty

        def supervise():
            nonlocal deaths
            if not worker.alive:  # as `make run`'s supervisor would
                deaths += 1
                worker.start()

        errors = settle(ids, timeout=60 + MESSAGES * 0.05, tick=supervise)
        rows.append(
            tally("broker kill -9 + restart", ids, chaos_provider, started, sweep_errors=errors,
                  unknown_allowed="in_flight", in_flight_lost=deaths * in_flight(), deaths=deaths)
        )  # fmt: skip
    check(rows, f"{MESSAGES} emails, the broker (own redis-server) killed after a quarter")


def test_a_provider_error_storm_is_retried_and_nothing_goes_twice(chaos_provider, worker_factory):
    storm = Weather(storm=0.5, storm_statuses=(429, 500, 503))
    worker_factory()
    rows = []
    for _ in range(REPEAT):
        started, base = time.monotonic(), chaos_provider.total
        chaos_provider.set_weather(storm)

        def blow_over(base=base):
            # The storm lasts one and a half requests' worth per message: long
            # enough that retries meet it, short enough to end in bounded time.
            if chaos_provider.total - base >= MESSAGES * 1.5:
                chaos_provider.set_weather(Weather())

        ids = enqueue(MESSAGES, "storm")
        errors = settle(ids, timeout=60 + MESSAGES * 0.1, tick=blow_over)
        rows.append(tally("429/5xx storm (50%)", ids, chaos_provider, started,
                          unknown_allowed="none", sweep_errors=errors))  # fmt: skip
    check(rows, f"{MESSAGES} emails, half the provider's answers 429, 500 or 503 for a while")


def test_a_provider_slower_than_the_timeout_sends_nothing_twice(chaos_provider, worker_factory):
    timeout = settings.DELIVERY_TIMEOUT_S
    # 5% of the requests are taken, and answered half a second past the client's timeout.
    chaos_provider.set_weather(Weather(slow=0.05, slow_delay=timeout + 0.5))
    worker_factory()
    rows = []
    for _ in range(REPEAT):
        started = time.monotonic()
        ids = enqueue(MESSAGES, "slow")
        errors = settle(ids, timeout=60 + MESSAGES * 0.1)
        rows.append(tally("provider slower than timeout (5%)", ids, chaos_provider, started,
                          unknown_allowed="reached", sweep_errors=errors))  # fmt: skip
    check(rows, f"{MESSAGES} emails, 5% answered {timeout + 0.5}s late (timeout {timeout}s)")
