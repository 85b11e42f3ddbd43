"""Fault injection against real Celery worker processes, the real SendGrid SDK
and the loopback fake provider (tests/fakes/provider.py, ChaosProviderServer).

Sizes come from the environment: CHAOS_MESSAGES (default 60) messages per
scenario and CHAOS_REPEAT (default 1) repetitions; `make chaos` runs 2,000
and 10. Each repetition is a row of the table printed at the end of the run
(scenario, messages, provider requests, duplicates, sent/failed/unknown,
lost, workers that died).

The broker scenario never touches the shared Redis: it starts its own
redis-server on a free loopback port and kills and restarts that one.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kombu import pools

from config.celery import QUEUES, app
from tests.fakes.provider import SENDGRID_KEY, TWILIO_SID, TWILIO_TOKEN, ChaosProviderServer
from tests.integration.conftest import test_database_url

ROOT = Path(__file__).resolve().parents[2]
MESSAGES = int(os.environ.get("CHAOS_MESSAGES") or 60)
REPEAT = int(os.environ.get("CHAOS_REPEAT") or 1)
READY_TIMEOUT_S = 60

# The delivery settings of every scenario, in this process and the workers'.
# Short timeouts, leases and backoffs so that a scenario settles in seconds.
DELIVERY_ENV = {
    "EMAIL_PROVIDER": "sendgrid",
    "SMS_PROVIDER": "twilio",
    "SENDGRID_API_KEY": SENDGRID_KEY,
    "TWILIO_ACCOUNT_SID": TWILIO_SID,
    "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
    "TWILIO_FROM_NUMBER": "+15005550006",
    "PUBLIC_BASE_URL": "https://tenure.example.com",
    "COMPANY_POSTAL_ADDRESS": "1 Demo Street, Springfield",
    "SEND_HOURS_EMAIL": "",
    "SEND_HOURS_SMS": "",
    "FREQUENCY_CAP_EMAIL": "",
    "FREQUENCY_CAP_SMS": "",
    "SENDGRID_RATE_PER_SECOND": "0",
    "TWILIO_RATE_PER_SECOND": "0",
    "DELIVERY_BACKOFF_BASE_S": "0.2",
    "DELIVERY_BACKOFF_CAP_S": "2",
    "DELIVERY_MAX_ATTEMPTS": "8",
    "DELIVERY_TIMEOUT_S": "1",
    "DELIVERY_LEASE_S": "4",  # more than twice the timeout (settings insist)
    "DELIVERY_REPUBLISH_AFTER_S": "2",
    "DELIVERY_CONCURRENCY": "3",
    # Several tasks per scenario (a lost broker loses some of them).
    "DELIVERY_BATCH_SIZE": "10",
}


@dataclass
class Row:
    scenario: str
    messages: int
    requests: int = 0
    duplicates: int = 0
    sent: int = 0
    failed: int = 0
    unknown: int = 0
    lost: int = 0  # still queued, deferred or sending at the end
    worker_deaths: int = 0
    sweep_errors: int = 0  # sweeps that raised (beat would run the next one)
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


ROWS: list[Row] = []


def pytest_terminal_summary(terminalreporter):
    if not ROWS:
        return
    tr = terminalreporter
    tr.section(f"chaos: {MESSAGES} messages x {REPEAT} repetition(s) per scenario")
    head = ("scenario", "messages", "requests", "duplicates", "sent", "failed", "unknown",
            "lost", "worker deaths", "sweep errors", "seconds")  # fmt: skip
    lines = [head] + [
        (r.scenario, r.messages, r.requests, r.duplicates, r.sent, r.failed, r.unknown, r.lost,
         r.worker_deaths, r.sweep_errors, f"{r.seconds:.1f}")
        for r in ROWS
    ]  # fmt: skip
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    for line in lines:
        tr.write_line("  ".join(str(v).rjust(w) for v, w in zip(line, widths, strict=True)))
    for r in ROWS:
        for problem in r.problems[:5]:
            tr.write_line(f"{r.scenario}: {problem}")
        if len(r.problems) > 5:
            tr.write_line(f"{r.scenario}: … and {len(r.problems) - 5} more")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnRedis:
    """A redis-server of the scenario's own on a free loopback port, without
    persistence (a restart comes back empty, as after a lost instance)."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log = log_dir / f"redis-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                 "--appendonly", "no", "--daemonize", "no"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server did not start:\n{self.log.read_text()}"
                    ) from None
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def own_redis(tmp_path):
    redis = OwnRedis(tmp_path)
    redis.start()
    yield redis
    redis.kill()


@pytest.fixture
def chaos_provider(transactional_db, monkeypatch, settings):
    """The chaos fake, and the delivery settings pointing at it, in this
    process and in the environment the workers inherit."""
    monkeypatch.delenv("TWILIO_EDGE", raising=False)
    monkeypatch.delenv("TWILIO_REGION", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with ChaosProviderServer() as server:
        values = {**DELIVERY_ENV, "SENDGRID_API_HOST": server.url,
                  "TWILIO_API_BASE_URL": server.url}  # fmt: skip
        for name, value in values.items():
            monkeypatch.setenv(name, value)
            current = getattr(settings, name)
            setattr(settings, name, type(current)(value) if current is not None else value)
        yield server


class Worker:
    """`celery -A config worker` in a session of its own (kill -9 takes the
    whole process group: the main process and its pool), on `broker_url`."""

    def __init__(self, log_dir: Path, broker_url: str | None) -> None:
        self.log_dir, self.broker_url = log_dir, broker_url
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        env = {**os.environ, "DATABASE_URL": test_database_url()}
        if self.broker_url:
            env["CELERY_BROKER_URL"] = self.broker_url
        self.log = self.log_dir / f"worker-{self.starts}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "config", "worker",
                 "--queues", ",".join(QUEUES), "--concurrency", "1", "--loglevel", "INFO",
                 "--without-gossip", "--without-mingle", "--without-heartbeat",
                 "--hostname", f"chaos-{uuid.uuid4().hex[:8]}@%h"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + READY_TIMEOUT_S
        while b"ready." not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"the worker did not start:\n{self.log.read_text()}")
            time.sleep(0.1)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """kill -9 of the worker and its pool, mid-whatever."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.alive:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=20)
        self.kill()


@pytest.fixture
def worker_factory(tmp_path):
    """worker_factory(broker_url=None) -> a started Worker (stopped at the end)."""
    workers: list[Worker] = []

    def make(broker_url: str | None = None) -> Worker:
        if broker_url is None:
            with app.connection_for_write() as conn:
                for queue in QUEUES:
                    conn.default_channel.queue_purge(queue)
        worker = Worker(tmp_path, broker_url)
        workers.append(worker)
        worker.start()
        return worker

    yield make
    for worker in workers:
        worker.stop()


@pytest.fixture
def publish_to(monkeypatch):
    """publish_to(url): this process' Celery app publishes to `url` (the
    scenario's own Redis) until the test ends. Celery reads the broker from
    the CELERY_BROKER_URL variable before its configuration, so that is what
    changes (and the connection pools are dropped, on the way in and out)."""
    saved = app.conf.broker_transport_options

    def reset_pools() -> None:
        # kombu keeps its pools in a registry by URL: closing one there leaves
        # a closed pool to the next user; reset() empties the registry.
        pools.reset()
        app._pool = None
        app.amqp._producer_pool = None

    def switch(url: str) -> None:
        reset_pools()
        monkeypatch.setenv("CELERY_BROKER_URL", url)
        app.conf.broker_transport_options = {"visibility_timeout": 3600}

    yield switch
    reset_pools()
    app.conf.broker_transport_options = saved
