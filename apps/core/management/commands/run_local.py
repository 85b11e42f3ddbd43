import contextlib
import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand

from config.celery import QUEUES

STOP_GRACE_S = 15


class Command(BaseCommand):
    help = (
        "Run web, a Celery worker and Celery beat together for local use; Ctrl-C (or "
        "any one of them exiting) stops them all. `make run` uses it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, port: int, **options):
        python = sys.executable
        commands = {
            "web": [python, "manage.py", "runserver", f"127.0.0.1:{port}"],
            "worker": [python, "-m", "celery", "-A", "config", "worker", "--queues",
                       ",".join(QUEUES), "--concurrency", "2", "--loglevel", "INFO"],
            "beat": [python, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO"],
        }  # fmt: skip
        # Handlers first, for SIGINT too: a process started in the background of
        # a script inherits SIGINT as ignored, and so would its children (an
        # ignored signal stays ignored across exec; a handler does not).
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _raise_interrupt)
        # Each child gets its own session: the terminal's Ctrl-C reaches only this
        # process, which then stops every child (and the children's children).
        children = {
            name: subprocess.Popen(cmd, cwd=settings.BASE_DIR, start_new_session=True)
            for name, cmd in commands.items()
        }
        exited = None
        try:
            while exited is None:
                exited = next((n for n, p in children.items() if p.poll() is not None), None)
                time.sleep(0.5)
            self.stderr.write(f"{exited} exited with status {children[exited].returncode}")
        except KeyboardInterrupt:
            self.stdout.write("Stopping web, worker and beat…")
        finally:
            _stop(children.values())
        if exited:
            sys.exit(1)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


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
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, sig)
