"""`python -m bench [workload ...] [--quick] [--no-doc]`: run the workloads
(all by default), print their tables and rewrite docs/benchmarks.md.

Exit status 1 when a correctness check failed or a workload crashed; a missed
performance target is reported as a MISS but does not fail the run.
"""

import argparse
import importlib
import os
import sys
import traceback
from datetime import UTC, datetime

from .harness import (
    DOC_PATH,
    WORKLOADS,
    Bench,
    BenchError,
    Result,
    crashed,
    machine_summary,
    markdown_section,
    print_result,
    require_services,
    write_doc,
)

# One module per workload, in report order; each registers itself on import.
WORKLOAD_MODULES = (
    "bench.ingestion",
    "bench.segment",
    "bench.segments",
    "bench.messaging",
    "bench.tracking",
    "bench.journeys",
)
BUSY_LOAD_PER_CORE = 0.5


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "workloads", nargs="*", metavar="workload", help=f"any of: {', '.join(WORKLOADS)}"
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, a self-check; implies --no-doc"
    )
    parser.add_argument("--no-doc", action="store_true", help=f"do not rewrite {DOC_PATH.name}")
    args = parser.parse_args(argv)
    unknown = [name for name in args.workloads if name not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(WORKLOADS)}")
    return args


def warn_if_busy() -> None:
    load = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    if load > BUSY_LOAD_PER_CORE * cores:
        print(
            f"warning: load average {load:.2f} on {cores} cores; the numbers will be noisy",
            file=sys.stderr,
        )


def run_one(name: str, bench: Bench) -> Result:
    try:
        return WORKLOADS[name].run(bench)
    except Exception as exc:
        traceback.print_exc()
        return crashed(exc)


def main(argv: list[str]) -> int:
    for module in WORKLOAD_MODULES:
        importlib.import_module(module)
    args = parse_args(argv)
    names = args.workloads or list(WORKLOADS)
    try:
        require_services()
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    warn_if_busy()
    machine = machine_summary()
    bench = Bench(quick=args.quick)

    sections, failed, missed = {}, 0, 0
    for name in names:
        when = datetime.now(UTC)
        result = run_one(name, bench)
        print_result(WORKLOADS[name], result)
        sections[name] = markdown_section(WORKLOADS[name], result, when=when, machine=machine)
        failed += sum(row.failed for row in result.rows)
        missed += sum(row.missed for row in result.rows)

    if not (args.quick or args.no_doc):
        write_doc(sections, order=list(WORKLOADS))
        print(f"\nwrote {DOC_PATH.relative_to(DOC_PATH.parent.parent)}")
    print(f"\n{missed} target(s) missed, {failed} check(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
