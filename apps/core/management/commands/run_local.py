"""`make run`'s process runner: web, a Celery worker and Celery beat, with
the restarts a platform gives the Procfile's processes.

A worker or beat that dies (a crash, kill -9, the out-of-memory killer, a
Celery worker's "Unrecoverable error" after a Redis restart: kombu 5.7.0,
the newest, still has it) is started again after a backoff (1 s, doubling to
30 s; back to 1 s once it has run for a minute), with a log line each time;
whatever it left of its process group (a worker's pool processes) is killed
first. The web server is not restarted: it exits on errors a person must
see (the port is taken, the code does not load), so its exit stops them all,
as Ctrl-C does. A second Ctrl-C while they stop kills them at once (SIGKILL)
instead of interrupting the stop, which left the worker and beat running,
orphaned.

One runner per data folder: it holds an flock on `run_local.lock` there for
its lifetime, and a second one is refused (two beats would send every
scheduled message twice). The kernel releases the lock when the holder dies,
so a runner that crashed or was killed never blocks the next one.

With DATABASE_URL unset, the database is the embedded PostgreSQL of the data
folder (config/embedded_postgres.py): the runner makes sure it runs, hands its
socket URL to web, worker and beat, and stops it after them on Ctrl-C (a
second Ctrl-C too). With DATABASE_URL set, that database is used as it is.
"""

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from config import embedded_postgres
from config.celery import QUEUES

STOP_GRACE_S = 15
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0
# A process that ran this long before dying starts again after BACKOFF_START_S.
STABLE_AFTER_S = 60.0
POLL_S = 0.5


@dataclass
class Child:
    name: str
    command: list[str]
    restart: bool
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    delay: float = BACKOFF_START_S
    restart_at: float | None = None

    def start(self, env: dict[str, str]) -> None:
        # Its own session: the terminal's Ctrl-C reaches only the runner, which
        # then stops every child (and the children's children).
        self.process = subprocess.Popen(
            self.command, cwd=settings.BASE_DIR, env=env, start_new_session=True
        )
        self.started_at = time.monotonic()
        self.restart_at = None


class Command(BaseCommand):
    help = (
        "Run web, a Celery worker and Celery beat together for local use; a worker or "
        "beat that dies is restarted (with backoff); Ctrl-C, or web exiting, stops them "
        "all. `make run` uses it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, port: int, **options):
        lock = _hold_lock(settings.DATA_DIR / "run_local.lock")  # noqa: F841 (held till exit)
        env = dict(os.environ)
        own_database = not settings.DATABASE_URL
        if own_database:
            env["DATABASE_URL"] = embedded_postgres.ensure_running(settings.DATA_DIR)
        python = sys.executable
        children = [
            Child("web", [python, "manage.py", "runserver", f"127.0.0.1:{port}"], restart=False),
            Child("worker", [python, "-m", "celery", "-A", "config", "worker", "--queues",
                             ",".join(QUEUES), "--concurrency", "2", "--loglevel", "INFO"],
                  restart=True),
            Child("beat", [python, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO"],
                  restart=True),
        ]  # fmt: skip
        stopping = False

        def on_signal(signum, frame):
            nonlocal stopping
            if not stopping:
                stopping = True
                raise KeyboardInterrupt
            # Again while stopping (an impatient Ctrl-C): kill them now. Raising
            # here would abandon the stop and leave the worker and beat running.
            for child in children:
                if child.process is not None:
                    _signal_group(child.process, signal.SIGKILL)

        # Handlers first, for SIGINT too: a process started in the background of
        # a script inherits SIGINT as ignored, and so would its children (an
        # ignored signal stays ignored across exec; a handler does not).
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
        stopped = None
        try:
            for child in children:
                child.start(env)
            while stopped is None:
                stopped = self._supervise(children, env)
                time.sleep(POLL_S)
            stopping = True
            self.stderr.write(f"{stopped.name} exited with status {stopped.process.returncode}")
        except KeyboardInterrupt:
            database = " and the embedded PostgreSQL" if own_database else ""
            self.stdout.write(
                f"Stopping web, worker and beat{database}… (Ctrl-C again kills them now)"
            )
        finally:
            stopping = True
            _stop([child.process for child in children if child.process is not None])
            if own_database:
                # Last, once nothing uses it; a signal to the server, which a
                # second Ctrl-C cannot interrupt.
                embedded_postgres.stop(settings.DATA_DIR)
        if stopped:
            sys.exit(1)

    def _supervise(self, children: list[Child], env: dict[str, str]) -> Child | None:
        """Restart what is due, schedule a restart for what died; returns a
        child whose exit stops everything (web), if any."""
        now = time.monotonic()
        for child in children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.start(env)
                    self.stderr.write(f"{child.name} restarted (pid {child.process.pid})")
                continue
            code = child.process.poll()
            if code is None:
                continue
            if not child.restart:
                return child
            _signal_group(child.process, signal.SIGKILL)  # what it left behind
            ran = now - child.started_at
            if ran >= STABLE_AFTER_S:
                child.delay = BACKOFF_START_S
            child.restart_at = now + child.delay
            self.stderr.write(
                f"{child.name} exited with status {code} after {ran:.0f}s; "
                f"restarting it in {child.delay:.0f}s"
            )
            child.delay = min(child.delay * 2, BACKOFF_MAX_S)
        return None


def _hold_lock(path):
    """The open lock file, locked (closing it or dying releases the lock); a
    CommandError naming the holder when another runner has it."""
    lock = path.open("a+")  # not "w": that would empty the holder's pid
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        lock.close()
        raise CommandError(
            f"Tenure is already running on the data folder {path.parent} (run_local, pid "
            f"{holder}): two runners would start two Celery beats and send every scheduled "
            "message twice. Stop that one first (Ctrl-C in its terminal), or set "
            "TENURE_DATA_DIR to another folder."
        ) from None
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def _stop(children) -> None:
    """What Ctrl-C in a terminal does to a process group: SIGINT, which each
    program handles as a clean stop (Celery's pool ignores it and is shut down
    by its main process); SIGKILL for whatever is left after the grace period."""
    for child in children:
        _signal_group(child, signal.SIGINT)
    deadline = time.monotonic() + STOP_GRACE_S
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(child, signal.SIGKILL)
            child.wait()


def _signal_group(child: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, sig)
