"""Shared plumbing for the workloads: the registry, result rows and verdicts,
the bench database and environment, a gunicorn server and a lean HTTP load
client, and the report (a table on stdout, a section per workload in
docs/benchmarks.md).

Everything runs against its own PostgreSQL database (`tenure_bench`, dropped
and recreated for each workload) and Redis db 13; the developer's `data/`
folder and databases are never touched.
"""

import http.client
import inspect
import os
import platform
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg import sql
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
# BENCH_WORK_DIR (with BENCH_DB_NAME and BENCH_REDIS_URL): so that two benches can run side by side.
WORK_DIR = Path(os.environ.get("BENCH_WORK_DIR") or ROOT / "bench" / ".work")
DOC_PATH = ROOT / "docs" / "benchmarks.md"
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
DB_NAME = os.environ.get("BENCH_DB_NAME", "tenure_bench")
# Inherited from the caller's environment; everything else is set explicitly.
PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")


class BenchError(RuntimeError):
    """A step could not run (a command failed, a server did not start)."""


# --- Results ----------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    metric: str
    measured: str
    target: str = "—"
    verdict: str = "info"
    missed: bool = False  # a performance target was not reached
    failed: bool = False  # a correctness check failed, or the workload crashed


def number(value: float) -> str:
    """Thousands separators for big numbers, a few significant digits for small."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def times(factor: float) -> str:
    """How many times a reference a figure is, like `0.16x` with a times sign."""
    return f"{factor:.2f}\N{MULTIPLICATION SIGN}"


def at_least(metric: str, value: float, unit: str, target: float) -> Row:
    """A rate with a floor: a miss says by how much."""
    share = value / target
    verdict = "pass" if value >= target else "MISS"
    return Row(
        metric,
        f"{number(value)} {unit}",
        f"≥ {number(target)} {unit}",
        f"{verdict} ({times(share)} target)",
        missed=value < target,
    )


def at_most(metric: str, value: float, unit: str, target: float, *, detail: str = "") -> Row:
    """A cost with a ceiling (seconds, a ratio): a miss says by how much."""
    verdict = "pass" if value <= target else "MISS"
    return Row(
        metric,
        " ".join(part for part in (number(value), unit, detail) if part),
        f"≤ {number(target)} {unit}".rstrip(),
        f"{verdict} ({times(value / target)} target)",
        missed=value > target,
    )


def measured(metric: str, text: str) -> Row:
    """A figure reported for context, with no target."""
    return Row(metric, text)


def ratio(metric: str, ours: float, reference: float, of: str) -> Row:
    """A figure as a multiple of a reference measured in the same run."""
    return Row(metric, f"{times(ours / reference)} of {of}")


def check(metric: str, ok: bool, *, found: str, expected: str) -> Row:
    """A correctness check: pass or FAIL, never a matter of degree."""
    return Row(metric, found, expected, "pass" if ok else "FAIL", failed=not ok)


@dataclass
class Result:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def crashed(exc: BaseException) -> Result:
    return Result(
        rows=[check("workload ran to the end", False, found=_one_line(exc), expected="no error")]
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


# --- Registry ---------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    run: Callable[["Bench"], Result]

    @property
    def description(self) -> str:
        return inspect.cleandoc(self.run.__doc__ or "")


WORKLOADS: dict[str, Workload] = {}


def workload(name: str, title: str) -> Callable:
    """Register `run(bench) -> Result` as a workload; its docstring is the
    description written above its table."""

    def register(run: Callable[["Bench"], Result]) -> Callable[["Bench"], Result]:
        WORKLOADS[name] = Workload(name, title, run)
        return run

    return register


# --- Progress ---------------------------------------------------------------


@dataclass
class Stopwatch:
    seconds: float = 0.0


@contextmanager
def step(label: str) -> Iterator[Stopwatch]:
    """Announce a long step on stderr and time the body of the `with`."""
    print(f"» {label}…", file=sys.stderr, flush=True)
    watch = Stopwatch()
    started = time.perf_counter()
    try:
        yield watch
    finally:
        watch.seconds = time.perf_counter() - started
    print(f"  {label}: {watch.seconds:.1f}s", file=sys.stderr, flush=True)


def progress(total: int, label: str, unit: str) -> tqdm:
    """A progress bar on stderr, when stderr is a terminal (`disable=None`)."""
    return tqdm(
        total=total, desc=label, unit=unit, file=sys.stderr, leave=False, delay=0.5, disable=None
    )


# --- Environment and database -----------------------------------------------


def bench_environment(work_dir: Path) -> dict[str, str]:
    """The whole environment of every subprocess: the bench database and Redis
    db, a data folder under bench/.work, production-like DEBUG off."""
    inherited = {name: os.environ[name] for name in PASSED_THROUGH if name in os.environ}
    return inherited | {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"{POSTGRES_URL}/{DB_NAME}",
        "CELERY_BROKER_URL": REDIS_URL,
        "CACHE_URL": REDIS_URL,
        "TENURE_DATA_DIR": str(work_dir / "data"),
        "SECRET_KEY": "bench-only-not-a-secret",
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
    }


class Bench:
    """What a workload is given: sizes (`quick`), a scratch folder, the bench
    database (fresh on request) and ways to run Tenure against it."""

    def __init__(self, *, quick: bool) -> None:
        self.quick = quick
        self.work_dir = WORK_DIR
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.env = bench_environment(self.work_dir)
        self._django_ready = False

    def path(self, name: str) -> Path:
        return self.work_dir / name

    def connect(self) -> psycopg.Connection:
        """An autocommit connection to the bench database."""
        return psycopg.connect(f"{POSTGRES_URL}/{DB_NAME}", autocommit=True)

    def fresh_database(self) -> None:
        """Drop, recreate and migrate the bench database."""
        if self._django_ready:
            from django.db import connections

            connections.close_all()
        with step(f"fresh database {DB_NAME} (drop, create, migrate)"):
            with psycopg.connect(f"{POSTGRES_URL}/postgres", autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
                conn.execute(f"CREATE DATABASE {DB_NAME}")
            self.manage("migrate", "--noinput")

    def database_from_template(
        self, template: str, *, version: str, build: Sequence[Sequence[str]]
    ) -> bool:
        """Make the bench database a copy of `template`, a database built once
        by migrating and running the `build` manage.py commands, then kept
        between runs. It is rebuilt when missing, when its recorded `version`
        (and build commands) differ, or when `BENCH_REBUILD_TEMPLATES=1`.
        Migrations added since it was built are applied to the copy. Returns
        whether the template was (re)built in this run."""
        if self._django_ready:
            from django.db import connections

            connections.close_all()
        marker = f"tenure bench template {version}: " + "; ".join(" ".join(c) for c in build)
        rebuild = os.environ.get("BENCH_REBUILD_TEMPLATES") == "1"
        with psycopg.connect(f"{POSTGRES_URL}/postgres", autocommit=True) as conn:
            found = conn.execute(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                [template],
            ).fetchone()
            built = rebuild or found is None or found[0] != marker
            if built:
                with step(f"build template database {template} (once; kept between runs)"):
                    conn.execute(f"DROP DATABASE IF EXISTS {template} WITH (FORCE)")
                    conn.execute(f"CREATE DATABASE {template}")
                    self.manage("migrate", "--noinput", database=template)
                    for command in build:
                        self.manage(*command, database=template)
                    with psycopg.connect(f"{POSTGRES_URL}/{template}", autocommit=True) as built_db:
                        built_db.execute("VACUUM ANALYZE")
                    conn.execute(
                        sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                            sql.Identifier(template), sql.Literal(marker)
                        )
                    )
            with step(f"bench database {DB_NAME} from template {template}"):
                conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
                # FILE_COPY: a big template is copied file by file, not through the WAL.
                conn.execute(f"CREATE DATABASE {DB_NAME} TEMPLATE {template} STRATEGY FILE_COPY")
        self.manage("migrate", "--noinput")
        return built

    def manage(self, *args: str, database: str = DB_NAME) -> subprocess.CompletedProcess:
        """Run `manage.py` against the bench database (or another one on the
        same server); a failure raises with the end of its stderr."""
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env | {"DATABASE_URL": f"{POSTGRES_URL}/{database}"},
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode:
            tail = "\n".join(done.stderr.strip().splitlines()[-15:])
            raise BenchError(f"manage.py {' '.join(args)} exited {done.returncode}:\n{tail}")
        return done

    def settle(self) -> None:
        """Start a timed phase from a quiet database: statistics fresh, dead
        rows vacuumed, the previous phase's dirty pages written out."""
        with self.connect() as conn:
            conn.execute("VACUUM ANALYZE")
            conn.execute("CHECKPOINT")

    def django(self) -> None:
        """Set Django up in this process, on the bench database (for services
        the workloads call directly, like creating an API key)."""
        if self._django_ready:
            return
        os.environ.update(self.env)
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        self._django_ready = True


# --- HTTP: a gunicorn server and a lean load client -------------------------


def stop(process: subprocess.Popen, *, timeout_s: float) -> None:
    """Ask a child process to stop (SIGTERM: a warm shutdown), and kill it if
    it has not within `timeout_s`."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def gunicorn(bench: Bench, *, workers: int, timeout_s: float = 60) -> Iterator[int]:
    """gunicorn serving Tenure as the Procfile runs it (sync workers, access
    log), on a free loopback port (yielded), once `/healthz` answers 200;
    stopped (SIGTERM) on exit."""
    port = free_port()
    log_path = bench.path(f"gunicorn-{workers}w.log")
    command = [
        str(Path(sys.executable).with_name("gunicorn")),
        "config.wsgi:application",
        f"--bind=127.0.0.1:{port}",
        f"--workers={workers}",
        "--worker-class=sync",
        "--log-level=warning",
        f"--access-logfile={bench.path(f'gunicorn-{workers}w-access.log')}",
    ]
    with log_path.open("w") as log:
        server = subprocess.Popen(command, cwd=ROOT, env=bench.env, stdout=log, stderr=log)
    try:
        _wait_healthy(server, port, log_path, timeout_s)
        yield port
    finally:
        stop(server, timeout_s=30)


def _wait_healthy(server: subprocess.Popen, port: int, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    url = f"http://127.0.0.1:{port}/healthz"
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise BenchError(f"gunicorn exited {server.returncode}; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not listening yet, or 503 while a dependency is down
        time.sleep(0.2)
    raise BenchError(f"/healthz did not answer 200 within {timeout_s:.0f}s; see {log}")


Validator = Callable[[int, bytes], str | None]  # (status, body) -> the problem, or None


@dataclass
class LoadResult:
    requests: int
    seconds: float
    latencies: list[float]  # seconds, one per request
    problems: list[str]  # one per failed request or refused response

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile of the request latencies, in seconds."""
        ordered = sorted(self.latencies)
        rank = max(1, round(p / 100 * len(ordered)))
        return ordered[rank - 1]


def post_concurrently(
    port: int,
    path: str,
    bodies: Sequence[bytes],
    *,
    headers: dict[str, str],
    clients: int,
    validate: Validator,
    label: str | None = None,
) -> LoadResult:
    """POST every body once from `clients` threads, each on its own connection
    (kept alive when the server allows it). Bodies are prepared up front, so
    the client's share of the CPU is little more than the sockets."""
    bar = progress(len(bodies), label, " req") if label else None
    lock = threading.Lock()

    def client(share: Sequence[bytes]) -> tuple[list[float], list[str]]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        latencies, problems = [], []
        try:
            for body in share:
                started = time.perf_counter()
                try:
                    conn.request("POST", path, body, headers)
                    response = conn.getresponse()
                    answer = response.read()
                except (http.client.HTTPException, OSError) as exc:
                    problems.append(_one_line(exc))
                    conn.close()  # the next request reconnects
                else:
                    latencies.append(time.perf_counter() - started)
                    if (problem := validate(response.status, answer)) is not None:
                        problems.append(problem)
                if bar is not None:
                    with lock:
                        bar.update()
        finally:
            conn.close()
        return latencies, problems

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        outcomes = list(pool.map(client, [bodies[i::clients] for i in range(clients)]))
    seconds = time.perf_counter() - started
    if bar is not None:
        bar.close()
    return LoadResult(
        requests=len(bodies),
        seconds=seconds,
        latencies=[t for latencies, _ in outcomes for t in latencies],
        problems=[p for _, problems in outcomes for p in problems],
    )


# --- Machine ----------------------------------------------------------------


# --- CPU time of other processes, from /proc -------------------------------------------

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None  # ended meanwhile


def process_cpu(pid: int, *, reaped: bool = False) -> float:
    """CPU seconds (user + system) a process has used so far; with
    `reaped`, also what its children that ended and were waited for used
    (how PostgreSQL's postmaster accounts for finished backends)."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    used = int(fields[11]) + int(fields[12])
    if reaped:
        used += int(fields[13]) + int(fields[14])
    return used / TICKS_PER_S


def pids_where(fragment: bytes) -> list[int]:
    """The processes whose command line contains `fragment`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if fragment in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def children_of(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) and int(fields[1]) == parent:
            found.append(int(entry.name))
    return found


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its live children (a Celery worker and
    its prefork processes; gunicorn and its workers)."""
    return process_cpu(pid) + sum(process_cpu(child) for child in children_of(pid))


def postgres_cpu() -> float:
    """CPU seconds of the whole PostgreSQL server so far: the postmaster,
    its live processes and the backends that ended (of every database)."""
    return sum(
        process_cpu(root, reaped=True) + sum(process_cpu(pid) for pid in children_of(root))
        for root in pids_where(b"/bin/postgres")
    )


# --- Celery workers -------------------------------------------------------------------

ALL_QUEUES = "default,delivery,tracking"  # as the Procfile's worker consumes them
WORKER_READY_TIMEOUT_S = 90


@contextmanager
def celery_worker(
    bench: "Bench",
    env: dict[str, str],
    *,
    processes: int,
    queues: str = ALL_QUEUES,
    name: str = "worker",
) -> Iterator[subprocess.Popen]:
    """`celery -A config worker` on `queues` with `processes` prefork
    processes, once it is consuming; yields its process (`tree_cpu` of its
    pid is its CPU time); stopped (warm shutdown) on exit. Its log is
    `bench.path(name + ".log")`."""
    log_path = bench.path(f"{name}.log")
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "config", "worker",
                "--queues", queues, "--concurrency", str(processes),
                "--loglevel", "INFO", "--without-gossip", "--without-mingle",
                "--without-heartbeat", "--hostname", f"bench-{name}-{os.getpid()}@%h",
            ],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
        while b"ready." not in log_path.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"the Celery worker did not start; see {log_path}")
            time.sleep(0.2)
        yield process
    finally:
        stop(process, timeout_s=60)


def purge_queues() -> None:
    """Empty the broker's queues (what an earlier run left)."""
    from config.celery import QUEUES, app

    with app.connection_for_write() as conn:
        for queue in QUEUES:
            conn.default_channel.queue_purge(queue)


def require_services() -> None:
    """PostgreSQL and Redis answer, or a BenchError that says which does not."""
    try:
        psycopg.connect(f"{POSTGRES_URL}/postgres", connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        raise BenchError(
            f"PostgreSQL at {POSTGRES_URL} does not answer ({exc}); "
            "start one, or set BENCH_POSTGRES_URL"
        ) from None
    url = urllib.parse.urlsplit(REDIS_URL)
    try:
        with socket.create_connection((url.hostname, url.port or 6379), timeout=3) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(16)
    except OSError as exc:
        answer = str(exc).encode()
    if not answer.startswith(b"+PONG"):
        raise BenchError(
            f"Redis at {REDIS_URL} does not answer PING ({answer!r}); `make services` starts it"
        )


def machine_summary() -> str:
    with psycopg.connect(f"{POSTGRES_URL}/postgres") as conn:
        postgres = conn.execute("SHOW server_version").fetchone()[0].split()[0]
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} cores ({_cpu_model()}), {_ram_gib():.0f} GiB RAM, "
        f"PostgreSQL {postgres}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; load average {load} at start"
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _ram_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


# --- Report -----------------------------------------------------------------

HEADER = ("metric", "measured", "target", "verdict")


def text_table(rows: Sequence[Row]) -> str:
    cells = [HEADER, *((r.metric, r.measured, r.target, r.verdict) for r in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def print_result(item: Workload, result: Result) -> None:
    print(f"\n== {item.name}: {item.title}\n")
    print(text_table(result.rows))
    for note in result.notes:
        print(f"  * {note}")


GENERATED_MARK = (
    "<!-- Everything below this line is written by `make bench` (bench/harness.py); "
    "edit the text above it. -->"
)
SECTION_MARK = "<!-- bench:workload {name} -->"
_SECTION_RE = re.compile(r"^<!-- bench:workload (\S+) -->$", re.MULTILINE)
DEFAULT_INTRO = """\
# Benchmarks

`make bench` (or `python -m bench [workload ...]`) measures Tenure's hot paths
on PostgreSQL and Redis and compares them with the targets set in the issues.
Each workload runs in its own freshly created database, `tenure_bench`, so the
numbers never depend on what a developer has in theirs. A *MISS* is a target
not reached, shown with the fraction of the target that was; a *FAIL* is a
correctness check that did not hold. Numbers from a shared 2-core machine are
noisy: compare runs by their ratios to the raw PostgreSQL ceiling measured in
the same run rather than by absolute figures.
"""
REPRODUCE = """\
## Reproduce

```sh
make bench                             # every workload, full size; rewrites this page
.venv/bin/python -m bench ingestion    # one workload (its section here is replaced)
.venv/bin/python -m bench --quick      # small sizes, a fast self-check; this page untouched
BENCH_SEGMENTS_SIZES=100k .venv/bin/python -m bench segments   # one size only (100k or 1m)
```

Needs a PostgreSQL server at BENCH_POSTGRES_URL (default 127.0.0.1:5432, user
`postgres`, trust auth: a server like the one you deploy on, not the embedded
default; `make services` starts only Redis) and Redis on 127.0.0.1:6379 (db 13 is used). The bench
creates and drops the `tenure_bench` database and works in `bench/.work/`.
Seeded data sets are built once into template databases (`tenure_bench_seg_*`)
and kept between runs; `BENCH_REBUILD_TEMPLATES=1` rebuilds them.
"""


def markdown_section(item: Workload, result: Result, *, when: datetime, machine: str) -> str:
    lines = [
        SECTION_MARK.format(name=item.name),
        f"## {item.name}: {item.title}",
        "",
        item.description,
        "",
        f"Measured {when:%Y-%m-%d %H:%M} UTC on {machine}.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    for r in result.rows:
        cells = (r.metric, r.measured, r.target, f"**{r.verdict}**" if r.missed else r.verdict)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if result.notes:
        lines += ["", *(f"- {note}" for note in result.notes)]
    return "\n".join(lines) + "\n"


def write_doc(sections: dict[str, str], *, order: Sequence[str], path: Path = DOC_PATH) -> None:
    """Rewrite the generated part of the page: the sections just measured
    replace their predecessors, the others are kept; the intro above the mark
    is the maintainers' and is kept as it is."""
    intro, kept = _read_doc(path)
    merged = kept | sections
    names = [n for n in order if n in merged] + [n for n in merged if n not in order]
    parts = [intro.rstrip() + "\n", GENERATED_MARK + "\n", *(merged[n] for n in names), REPRODUCE]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))


def _read_doc(path: Path) -> tuple[str, dict[str, str]]:
    if not path.exists():
        return DEFAULT_INTRO, {}
    text = path.read_text()
    intro, mark, generated = text.partition(GENERATED_MARK)
    if not mark:
        return text, {}  # all hand-written so far: keep it as the intro
    generated = generated.split("\n## Reproduce\n", 1)[0]
    starts = list(_SECTION_RE.finditer(generated))
    ends = [m.start() for m in starts[1:]] + [len(generated)]
    sections = {
        m.group(1): generated[m.start() : end].rstrip() + "\n"
        for m, end in zip(starts, ends, strict=True)
    }
    return intro, sections
