"""JSON from the providers' webhooks, read item by item and made safe to store.

A SendGrid batch is a JSON array that SendGrid retries for 24 hours until it
is answered 2xx, so one unreadable item must never fail the whole batch:
`array_items` reads the array one element at a time (the json module's own
scanner, `raw_decode`, per element) and reports an element it cannot use
with its raw text instead of raising; only a body that is not a JSON array
at all raises `NotAnArray` (answered 400).

`clean` returns a parsed value as PostgreSQL's jsonb, SQLite and the admin
can hold it: NUL characters removed (text and jsonb cannot contain them; they
carry no meaning in an event's fields), and `Unsafe` (naming the path) for
what cannot be stored or shown: NaN/Infinity and numbers out of range (jsonb
refuses them; `1e400` parses to inf), lone surrogates (not UTF-8; jsonb
refuses `\\ud800`), nesting deeper than `MAX_DEPTH` (the admin's
`json.dumps` and Python's parser fail far deeper, jsonb at its stack limit),
strings longer than `MAX_STRING`.

The same checks suit any JSON a public endpoint receives (the ingestion API
has its own helper in apps/core; the two can become one).
"""

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# No event field of SendGrid's nests deeper than 2 (a category list); 32 is
# far beyond any real payload and far below the depth that breaks the admin.
MAX_DEPTH = 32
# The longest real fields are click URLs (stored up to 4,000 characters) and
# bounce reasons; 10,000 characters leaves room for both.
MAX_STRING = 10_000
# Integers beyond 64 bits mean nothing to us (ids and timestamps are smaller);
# Python's int() refuses more than 4,300 digits with a ValueError of its own.
MAX_INT = 2**63
# What a refused item keeps of its raw text, for the admin to show.
RAW_KEPT = 2000


class NotAnArray(ValueError):
    """The body is not a JSON array (the whole request is refused)."""


class Unsafe(ValueError):
    """A value that cannot be stored; the message names where it is."""


class _OutOfRange:
    """What the parser returns for NaN, ±Infinity and numbers out of range,
    so that one such number refuses its item, not the batch."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _constant(text: str) -> _OutOfRange:
    return _OutOfRange(text)


def _float(text: str) -> float | _OutOfRange:
    value = float(text)
    return value if math.isfinite(value) else _OutOfRange(text)


def _int(text: str) -> int | _OutOfRange:
    if len(text) > 20:
        return _OutOfRange(text)
    value = int(text)
    return value if -MAX_INT <= value < MAX_INT else _OutOfRange(text)


# strict=False: a raw control character inside a string (which JSON wants
# escaped) is read like its escape; `clean` then removes NUL.
_DECODER = json.JSONDecoder(
    parse_constant=_constant, parse_float=_float, parse_int=_int, strict=False
)
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_STRUCTURE = re.compile(r'["\[\]{}]')
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def loads(text: str) -> Any:
    """The whole of `text` as one JSON value, parsed like the items (NaN,
    ±Infinity and out-of-range numbers as placeholders that `clean` refuses).
    Raises ValueError (or RecursionError) when it is not JSON."""
    return _DECODER.decode(text)


def clean(value: Any, path: str = "", depth: int = 0) -> Any:
    """`value` (as `loads`/`array_items` parsed it) with NUL characters
    removed; Unsafe names the first part that cannot be stored."""
    if isinstance(value, str):
        return _clean_text(value, path)
    if isinstance(value, bool) or value is None or isinstance(value, int | float):
        return value
    if isinstance(value, _OutOfRange):
        name = value.text if value.text in ("NaN", "Infinity", "-Infinity") else "number"
        raise Unsafe(f"{path or 'value'}: {name} is out of range (NaN, Infinity, over 64 bits)")
    if depth >= MAX_DEPTH:
        raise Unsafe(f"{path or 'value'}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, list):
        return [clean(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    return {
        _clean_text(k, path): clean(v, f"{path}.{k}" if path else str(k), depth + 1)
        for k, v in value.items()
    }


def _clean_text(text: str, path: str) -> str:
    if len(text) > MAX_STRING:
        raise Unsafe(f"{path or 'value'}: too long ({len(text)} characters, at most {MAX_STRING})")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise Unsafe(f"{path or 'value'}: contains a lone surrogate (not UTF-8)") from None
    return text.replace("\x00", "") if "\x00" in text else text


def safe_text(text: str) -> str:
    """Any text as it can be stored: NUL removed, lone surrogates replaced."""
    text = text.replace("\x00", "")
    return text.encode("utf-8", "replace").decode("utf-8") if not text.isascii() else text


@dataclass(frozen=True)
class Item:
    """One element of an array: its raw text and either its parsed `value`
    or why it could not be read (`problem`, the raw text kept)."""

    index: int
    raw: str
    value: Any = None
    problem: str = ""


def array_items(body: bytes) -> Iterator[Item]:
    """The elements of a JSON array, in order. Bytes that are not UTF-8 are
    read as U+FFFD (after the signature check, which covers the raw bytes).
    Raises NotAnArray when the body is not one JSON array."""
    text = body.decode("utf-8", "replace")
    at = _WHITESPACE.match(text).end()
    if not text.startswith("[", at):
        raise NotAnArray(_not_an_array(text))
    at = _WHITESPACE.match(text, at + 1).end()
    if text.startswith("]", at):
        _expect_end(text, at + 1)
        return
    index = 0
    while True:
        try:
            value, end = _DECODER.raw_decode(text, at)
            item = Item(index, text[at:end], value=value)
        except RecursionError:
            end = _skip(text, at)
            item = Item(index, text[at:end], problem=f"nested deeper than {MAX_DEPTH} levels")
        except ValueError as exc:
            raise NotAnArray(f"body is not JSON: {exc}") from None
        yield item
        index += 1
        at = _WHITESPACE.match(text, end).end()
        if text.startswith(",", at):
            at = _WHITESPACE.match(text, at + 1).end()
            continue
        if text.startswith("]", at):
            _expect_end(text, at + 1)
            return
        raise NotAnArray(f"body is not JSON: expected ',' or ']' at character {at}")


def _expect_end(text: str, at: int) -> None:
    if _WHITESPACE.match(text, at).end() != len(text):
        raise NotAnArray(f"body is not JSON: extra data at character {at}")


def _not_an_array(text: str) -> str:
    try:
        value = loads(text)
    except (ValueError, RecursionError) as exc:
        return f"body is not JSON: {exc}"
    return f"body must be a JSON array of events, got {type(value).__name__}"


def _skip(text: str, at: int) -> int:
    """Where the array or object starting at `at` ends, for one nested too
    deep for the parser, without recursion."""
    depth = 0
    pos = at
    while True:
        found = _STRUCTURE.search(text, pos)
        if found is None:
            raise NotAnArray("body is not JSON: unterminated array or object")
        char = found.group()
        if char == '"':
            string = _STRING.match(text, found.start())
            if string is None:
                raise NotAnArray("body is not JSON: unterminated string")
            pos = string.end()
            continue
        depth += 1 if char in "[{" else -1
        pos = found.end()
        if depth <= 0:
            if depth < 0:
                raise NotAnArray("body is not JSON: unbalanced brackets")
            return pos
