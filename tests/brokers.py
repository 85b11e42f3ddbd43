"""Real brokers that are down, or lose their data, for the tests of what
survives that: the Celery app pointed at another broker URL (a closed
loopback port, or a redis-server of the test's own, started and killed;
never the shared one)."""

import contextlib
import os
import shutil
import socket
import subprocess
import time

import redis
from kombu import pools

from config.celery import app

# A loopback port nothing listens on (port 1 needs root to bind).
CLOSED_BROKER_URL = "redis://127.0.0.1:1/0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reset_pools() -> None:
    """What Celery does after a fork: the next publication connects anew."""
    pools.reset()  # kombu's registry of pools, which Celery's come from
    app._pool = None
    app.amqp._producer_pool = None


@contextlib.contextmanager
def broker_at(url: str):
    """Publish to (and check) the broker at `url` inside the block."""
    original = app.conf.broker_url
    original_options = app.conf.broker_transport_options
    original_env = os.environ.get("CELERY_BROKER_URL")
    # Celery reads the variable before its own configuration.
    os.environ["CELERY_BROKER_URL"] = url
    app.conf.broker_url = url
    app.conf.broker_transport_options = {"socket_connect_timeout": 1, "socket_timeout": 1}
    _reset_pools()
    try:
        yield
    finally:
        if original_env is None:
            os.environ.pop("CELERY_BROKER_URL", None)
        else:
            os.environ["CELERY_BROKER_URL"] = original_env
        app.conf.broker_url = original
        app.conf.broker_transport_options = original_options
        _reset_pools()


class RedisServer:
    """A redis-server of the test's own on a free port, without persistence:
    `kill()` loses every message it held, as a Redis restart does."""

    def __init__(self):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> "RedisServer":
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        return self

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
        _reset_pools()  # the connections to the dead server are gone too

    def queued(self, queue: str = "default") -> int:
        return redis.Redis(port=self.port).llen(queue)
