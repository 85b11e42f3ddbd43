"""The fake provider in a process of its own, for measuring scripts whose
CPU figures must not include the fake's."""

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def fake_provider_process() -> Iterator[str]:
    """Start `python -m tests.fakes.provider` on a free port; yield its URL;
    stop it after."""
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.provider", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield fake.stdout.readline().strip()
    finally:
        fake.terminate()
        fake.wait()
