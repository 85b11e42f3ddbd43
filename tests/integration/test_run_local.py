"""`make run`'s process runner, for real: web, worker and beat start on the
embedded defaults (the embedded PostgreSQL, the filesystem broker), the system
schedule reaches the worker, a dead worker is restarted, Ctrl-C (once or twice)
stops every process and the embedded PostgreSQL, and one data folder has one
runner. And `make run`'s set-up steps print the checks' warnings once."""

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from config import embedded_postgres
from tests.integration.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return json.loads(response.read())
    except OSError:
        return None


def descendants(pid: int) -> set[int]:
    found, frontier = set(), [pid]
    while frontier:
        parent = frontier.pop()
        children = Path(f"/proc/{parent}/task/{parent}/children")
        if children.exists():
            kids = {int(p) for p in children.read_text().split()}
            found |= kids
            frontier += kids
    return found


def postmaster(data_dir: Path) -> int | None:
    """The embedded PostgreSQL's pid while it runs, else None."""
    pid_file = embedded_postgres.data_dir(data_dir) / "postmaster.pid"
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text().split()[0])
    return pid if alive({pid}) else None


@pytest.fixture
def local_env(tmp_path):
    """The embedded defaults in a data folder of the test's own; manage.py
    migrate starts its PostgreSQL (initdb), stopped at the end whatever
    happened."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CACHE_URL")}
    env.update(TENURE_DATA_DIR=str(tmp_path), CELERY_BROKER_URL="filesystem://",
               HEARTBEAT_INTERVAL_S="2", DEBUG="1")  # fmt: skip
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env,
                       check=True)  # fmt: skip
        yield env
    finally:
        embedded_postgres.stop(tmp_path)


def test_run_local_starts_everything_and_ctrl_c_stops_every_process_and_the_database(
    local_env, tmp_path
):
    port = free_port()
    runner = subprocess.Popen(
        [sys.executable, "manage.py", "run_local", "--port", str(port)],
        cwd=ROOT, env=local_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # beat schedules the heartbeat every 2 s; the worker runs it; web reports it.
        report = wait_for(lambda: (h := health(port)) and h["worker"]["last_heartbeat"] and h,
                          timeout=90)  # fmt: skip
        assert report["status"] == "ok"
        assert report["database"] == {"status": "ok", "server": "embedded"}
        processes = descendants(runner.pid)
        assert len(processes) >= 3
        server = postmaster(tmp_path)
        assert server is not None

        runner.send_signal(signal.SIGINT)
        assert runner.wait(timeout=30) == 0
        still_running = {pid for pid in processes if Path(f"/proc/{pid}").exists()
                         and "zombie" not in Path(f"/proc/{pid}/status").read_text()}  # fmt: skip
        assert still_running == set()
        assert health(port) is None
        # The embedded PostgreSQL stopped too, after the processes using it.
        assert alive({server}) == set()
        assert not embedded_postgres.is_running(tmp_path)
    finally:
        if runner.poll() is None:
            runner.kill()


def children_named(pid: int, word: str) -> set[int]:
    """The runner's direct children whose command line has `word`."""
    found = set()
    path = Path(f"/proc/{pid}/task/{pid}/children")
    for kid in (int(p) for p in path.read_text().split()):
        with contextlib.suppress(OSError):
            if word in Path(f"/proc/{kid}/cmdline").read_bytes().decode().split("\0"):
                found.add(kid)
    return found


def test_a_worker_killed_with_sigkill_is_restarted_and_heartbeats_again(local_env, tmp_path):
    port = free_port()
    log = tmp_path / "run_local.log"
    with log.open("wb") as out:
        runner = subprocess.Popen(
            [sys.executable, "manage.py", "run_local", "--port", str(port)],
            cwd=ROOT, env=local_env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        # Up: a heartbeat came (whether "ok" or "late" depends on the machine's load).
        wait_for(lambda: (h := health(port)) and h["worker"]["last_heartbeat"], timeout=90)
        (worker,) = children_named(runner.pid, "worker")

        os.kill(worker, signal.SIGKILL)
        killed_at = datetime.now(UTC)

        new = wait_for(lambda: children_named(runner.pid, "worker") - {worker}, timeout=30)
        assert len(new) == 1
        # The new worker consumes: a heartbeat beat scheduled after the kill is run.
        wait_for(
            lambda: (
                (h := health(port))
                and h["worker"]["last_heartbeat"]
                and datetime.fromisoformat(h["worker"]["last_heartbeat"]) > killed_at
            ),
            timeout=90,
        )
        assert runner.poll() is None  # web and beat went on
        text = log.read_text()
        assert "worker exited with status -9" in text
        assert "worker restarted" in text

        runner.send_signal(signal.SIGINT)
        assert runner.wait(timeout=30) == 0
    finally:
        if runner.poll() is None:
            runner.kill()


def alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists()
            and "zombie" not in Path(f"/proc/{pid}/status").read_text()}  # fmt: skip


def test_ctrl_c_twice_while_stopping_leaves_no_process_behind(local_env, tmp_path):
    port = free_port()
    log = tmp_path / "run_local.log"
    with log.open("wb") as out:
        runner = subprocess.Popen(
            [sys.executable, "manage.py", "run_local", "--port", str(port)],
            cwd=ROOT, env={**local_env, "PYTHONUNBUFFERED": "1"}, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: (h := health(port)) and h["worker"]["last_heartbeat"], timeout=90)
        processes = descendants(runner.pid) | {postmaster(tmp_path)}
        assert len(processes) >= 4

        runner.send_signal(signal.SIGINT)
        wait_for(lambda: "Stopping" in log.read_text(), timeout=10, interval=0.02)
        runner.send_signal(signal.SIGINT)  # the impatient second Ctrl-C, mid-stop

        assert runner.wait(timeout=30) == 0
        assert alive(processes) == set()
        assert "Traceback" not in log.read_text()
    finally:
        if runner.poll() is None:
            runner.kill()


def test_a_second_runner_on_the_same_data_folder_is_refused(local_env, tmp_path):
    port = free_port()
    runner = subprocess.Popen(
        [sys.executable, "manage.py", "run_local", "--port", str(port)],
        cwd=ROOT, env=local_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: health(port), timeout=90)

        second = subprocess.run(
            [sys.executable, "manage.py", "run_local", "--port", str(free_port())],
            cwd=ROOT, env=local_env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 1
        assert "already running on the data folder" in second.stderr
        assert f"pid {runner.pid}" in second.stderr
        assert runner.poll() is None
        assert health(port)  # the first runner goes on
        assert len(children_named(runner.pid, "beat")) == 1

        runner.send_signal(signal.SIGINT)
        assert runner.wait(timeout=30) == 0
    finally:
        if runner.poll() is None:
            runner.kill()


def test_make_runs_set_up_steps_print_the_checks_warnings_once(local_env):
    # The steps as the Makefile has them (make -n prints without running), run
    # for real; no DEBUG, so the production-only warnings (tenure.W001) show.
    env = {k: v for k, v in local_env.items() if k not in ("DEBUG", "PUBLIC_BASE_URL")}
    plan = subprocess.run(["make", "-n", "run", f"PY={sys.executable}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    steps = [line for line in plan.splitlines() if "manage.py" in line and "run_local" not in line]
    assert len(steps) >= 5
    output = ""
    for step in steps:
        done = subprocess.run(shlex.split(step), cwd=ROOT, env=env, capture_output=True,
                              text=True, check=True)  # fmt: skip
        output += done.stdout + done.stderr
    assert output.count("tenure.W001") == 1
