"""JSON that every layer below can hold: PostgreSQL, Python's own json module
and the admin pages that show it.

Python's json reads more than PostgreSQL stores: NUL characters (text and
jsonb refuse `\\u0000`), lone surrogates (`\\ud800`: not encodable as UTF-8),
`NaN`, `Infinity` and numbers like `1e400` (read as infinite floats; jsonb has
no such numbers), and nesting as deep as the recursion limit allows (and
deeper nesting raises RecursionError, not a decoding error). `loads` turns
what cannot be read into a `ValueError`; `problem` finds, for a value that was
read, the first part that cannot be stored, named by its path (`traits.a.b`).

`problem` walks a value once, and only into dicts and lists: a call's scalar
fields cost one type check each. On a 10-trait identify it adds about 2 us
to the 10 us pydantic takes to validate the call.
"""

import json
import math
import threading
from collections.abc import Callable
from typing import Any

from django.conf import settings


def loads(text: str | bytes) -> Any:
    """`json.loads`, with every failure a ValueError whose message says what
    is wrong (JSONDecodeError, a subclass, keeps its position)."""
    try:
        try:
            return json.loads(text)
        except RecursionError:
            # Deep in a request's stack: again from an empty one, so that only
            # nesting past Python's recursion limit itself is refused here
            # (and a batch item nested 900 levels is refused by `problem`, alone).
            return _in_a_fresh_thread(lambda: json.loads(text))
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise ValueError("is nested too deeply to be read") from None
    except ValueError:
        # Python refuses to read integers of more than sys.get_int_max_str_digits().
        raise ValueError("has an integer too long to be read") from None


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which cannot be stored"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "contains a lone surrogate (like \\ud800), which is not Unicode text"
    return None


def problem(value: Any, path: str, *, max_depth: int | None = None) -> str | None:
    """Why `value` cannot be stored, as `path.to.part: reason`, or None.
    Nesting is counted in containers: `{"a": {"b": 1}}` is 2 deep."""
    limit = settings.INGEST_JSON_MAX_DEPTH if max_depth is None else max_depth
    kind = type(value)
    if kind is dict or kind is list:
        return _walk(value, path, limit, limit)
    return _scalar_problem(value, path)


def _scalar_problem(value: Any, path: str) -> str | None:
    kind = type(value)
    if kind is str:
        reason = _string_problem(value)
        return f"{path}: {reason}" if reason else None
    if kind is float and not math.isfinite(value):
        return f"{path}: must be a finite number (NaN, Infinity and 1e400 are not)"
    return None


def _walk(value: dict | list, path: str, depth_left: int, limit: int) -> str | None:
    """The first problem inside a container. Scalars are checked inline, with
    no call each: this runs on every traits and properties object ingested."""
    if depth_left <= 0:
        return f"{path}: is nested too deeply (the limit is {limit})"
    is_dict = type(value) is dict
    for key, item in value.items() if is_dict else enumerate(value):
        if is_dict and type(key) is str and ("\x00" in key or not key.isascii()):
            reason = _string_problem(key)
            if reason:
                return f"{path}: a key {reason}"
        kind = type(item)
        if kind is str:
            if "\x00" in item or not item.isascii():
                found = _scalar_problem(item, f"{path}.{key}")
                if found:
                    return found
        elif kind is float:
            if not math.isfinite(item):
                return _scalar_problem(item, f"{path}.{key}")
        elif kind is dict or kind is list:
            found = _walk(item, f"{path}.{key}", depth_left - 1, limit)
            if found:
                return found
    return None


def _in_a_fresh_thread(work: Callable[[], Any]) -> Any:
    """`work()` run in a new thread, whose stack starts empty, and its result
    (or its exception) handed back."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = work()
        except BaseException as exc:  # handed back to the caller below
            result["error"] = exc

    thread = threading.Thread(target=run, name="deep-json")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"] from None
    return result["value"]


class DeepJSONDecoder(json.JSONDecoder):
    """Reads stored JSON however deep the stack of the reader is. Python's
    json counts each level of nesting against the recursion limit, so a value
    nested 900 levels (which older versions stored) reads in a shallow task
    but raises RecursionError deep in a template (the event page loads the
    customer while rendering). On that error only, the value is read again in
    a new thread, whose stack starts empty: the common path costs nothing."""

    def decode(self, s, *args, **kwargs):
        try:
            return super().decode(s, *args, **kwargs)
        except RecursionError:
            return _in_a_fresh_thread(lambda: json.JSONDecoder.decode(self, s, *args, **kwargs))


class DeepJSONEncoder(json.JSONEncoder):
    """Writes such a value back (an admin edit of the customer's email writes
    the traits too) the same way: again in a fresh thread on RecursionError."""

    def encode(self, o):
        try:
            return super().encode(o)
        except RecursionError:
            return _in_a_fresh_thread(lambda: json.JSONEncoder.encode(self, o))


# --- display ------------------------------------------------------------------

ELLIPSIS = "…"


class _Full(Exception):
    pass


class _Preview:
    def __init__(self, *, max_depth: int, max_chars: int, max_items: int, indent: int | None):
        self.max_depth, self.max_chars, self.max_items = max_depth, max_chars, max_items
        self.indent = indent
        self.parts: list[str] = []
        self.size = 0
        self.cut = False

    def emit(self, text: str) -> None:
        if self.size + len(text) > self.max_chars:
            self.cut = True
            raise _Full
        self.parts.append(text)
        self.size += len(text)

    def newline(self, depth: int) -> str:
        return "" if self.indent is None else "\n" + " " * (self.indent * depth)

    def value(self, value: Any, depth: int) -> None:
        if isinstance(value, dict | list):
            self.container(value, depth)
        elif isinstance(value, str):
            if len(value) > self.max_chars:
                self.cut = True
                value = value[: self.max_chars]
                self.emit(json.dumps(value)[:-1] + ELLIPSIS + '"')
            else:
                self.emit(json.dumps(value))
        elif isinstance(value, bool) or value is None:
            self.emit(json.dumps(value))
        elif isinstance(value, int):
            # Python refuses to write out integers past 4,300 digits.
            self.emit(str(value) if value.bit_length() < 10_000 else ELLIPSIS)
        elif isinstance(value, float):
            self.emit(repr(value) if math.isfinite(value) else json.dumps(value))
        else:
            self.emit(json.dumps(str(value)))

    def container(self, value: dict | list, depth: int) -> None:
        opening, closing = ("{", "}") if isinstance(value, dict) else ("[", "]")
        if not value:
            self.emit(opening + closing)
            return
        if depth >= self.max_depth:
            self.cut = True
            self.emit(opening + ELLIPSIS + closing)
            return
        items = (
            sorted(value.items(), key=lambda kv: str(kv[0])) if isinstance(value, dict) else value
        )
        separator = "," if self.indent is not None else ", "
        self.emit(opening)
        for n, item in enumerate(items):
            if n >= self.max_items:
                self.cut = True
                self.emit(separator + self.newline(depth + 1) + f"{ELLIPSIS} {len(value) - n} more")
                break
            self.emit((separator if n else "") + self.newline(depth + 1))
            if isinstance(value, dict):
                key, item = item
                self.emit(json.dumps(str(key)) + ": ")
            self.value(item, depth + 1)
        self.emit(self.newline(depth) + closing)


def preview(
    value: Any,
    *,
    indent: int | None = 2,
    max_depth: int = 12,
    max_chars: int = 20_000,
    max_items: int = 200,
) -> tuple[str, bool]:
    """Stored JSON as text to show, bounded whatever it holds: containers
    past `max_depth` levels, past `max_items` entries, and text past
    `max_chars` in all are cut, with an ellipsis where they are. Returns the
    text and whether anything was cut. Keys are sorted, as the admin always
    showed them. Written by hand because `json.dumps(indent=…)` recurses in
    Python (a few hundred levels raise RecursionError) and has no bound."""
    writer = _Preview(max_depth=max_depth, max_chars=max_chars, max_items=max_items, indent=indent)
    try:
        writer.value(value, 0)
    except _Full:
        writer.parts.append(ELLIPSIS)
    return "".join(writer.parts), writer.cut
