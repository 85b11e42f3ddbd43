"""Fingerprints of upstream code that a mirror in apps/core/mirrors copies or
leans on: a short hash of each piece's source (or pattern), so that a test
fails, naming the piece, when an upgrade changes it underneath the mirror."""

import hashlib
import inspect
import re


def fingerprint(pieces: dict[str, object]) -> dict[str, str]:
    """{name: hash} for each piece: a function, method or class (its source)
    or a compiled pattern (its pattern and flags)."""
    found = {}
    for name, piece in pieces.items():
        piece = getattr(piece, "__self__", piece) if inspect.isbuiltin(piece) else piece
        if isinstance(piece, re.Pattern):
            text = f"{piece.pattern!r} {piece.flags}"
        else:
            text = inspect.getsource(piece)
        found[name] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return found


def changed(pieces: dict[str, object], recorded: dict[str, str]) -> list[str]:
    """The names of the pieces whose source is no longer the recorded one."""
    now = fingerprint(pieces)
    return sorted(
        name for name in recorded.keys() | now.keys() if now.get(name) != recorded.get(name)
    )
