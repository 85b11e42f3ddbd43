"""JSON from the providers' webhooks, read item by item and made safe to store.

A SendGrid batch is a JSON array that SendGrid retries for 24 hours until it
is answered 2xx, so one unreadable item must never fail the whole batch:
`array_items` reads a batch of plain events in one parse and any other one
element at a time (the json module's own scanner, `raw_decode`, per
element), and reports an element it cannot use with its raw text instead of
raising; only a body that is not a JSON array at all raises `NotAnArray`
(answered 400).

`clean` returns a parsed value as PostgreSQL's jsonb and the admin can hold
it: NUL characters removed (text and jsonb cannot contain them; they carry no
meaning in an event's fields), and `Unsafe` (naming the path) for
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


class _Decoder(json.JSONDecoder):
    """The json module's decoder, with NaN, ±Infinity and numbers out of range
    read as `_OutOfRange` placeholders, counted in `odd_numbers`.

    strict=False: a raw control character inside a string (which JSON wants
    escaped) is read like its escape; `clean` then removes NUL."""

    def __init__(self) -> None:
        self.odd_numbers = 0
        super().__init__(
            parse_constant=self._odd, parse_float=self._float, parse_int=self._int, strict=False
        )

    def _odd(self, text: str) -> _OutOfRange:
        self.odd_numbers += 1
        return _OutOfRange(text)

    def _float(self, text: str) -> float | _OutOfRange:
        value = float(text)
        return value if math.isfinite(value) else self._odd(text)

    def _int(self, text: str) -> int | _OutOfRange:
        if len(text) > 20:
            return self._odd(text)
        value = int(text)
        return value if -MAX_INT <= value < MAX_INT else self._odd(text)


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_SPACES = frozenset(" \t\n\r")
# The escapes of NUL and of UTF-16 surrogates (paired ones too: they only
# cost the slower reading).
_NUL_OR_SURROGATE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_STRUCTURE = re.compile(r'["\[\]{}]')
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def loads(text: str) -> Any:
    """The whole of `text` as one JSON value, parsed like the items (NaN,
    ±Infinity and out-of-range numbers as placeholders that `clean` refuses).
    Raises ValueError (or RecursionError) when it is not JSON."""
    return _Decoder().decode(text)


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
        _clean_text(k, path): clean(v, f"{path}.{k[:50]}" if path else k[:50], depth + 1)
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
    """Any text as it can be stored: NUL removed, lone surrogates as "?"."""
    text = text.replace("\x00", "")
    return text.encode("utf-8", "replace").decode("utf-8") if not text.isascii() else text


@dataclass(slots=True)
class Item:
    """One element of an array: its raw text and either its parsed `value`
    or why it could not be read (`problem`, the raw text kept)."""

    index: int
    raw: str
    value: Any = None
    problem: str = ""


def array_items(body: bytes) -> list[Item]:
    """The elements of a JSON array, in order, each `clean`ed (or with the
    problem that refused it). Bytes that are not UTF-8 are read as U+FFFD
    (after the signature check, which covers the raw bytes). Raises
    NotAnArray when the body is not one JSON array.

    A batch of plain events (no NUL, no surrogate escapes, no odd numbers,
    objects of scalars and lists of scalars) is read in one `json.loads`:
    parsing and validating 1,000 SendGrid events costs 6-8 ms of CPU, as
    before this module. Any other batch is read one element at a time:
    about 17 ms (+10 us an event, some 5% of the webhook's end-to-end cost)."""
    text = body.decode("utf-8", "replace")
    decoder = _Decoder()
    try:
        data = decoder.decode(text)
    except (ValueError, RecursionError):
        data = None
    if (
        type(data) is list
        and decoder.odd_numbers == 0
        and "\x00" not in text
        and not _NUL_OR_SURROGATE.search(text)
        and all(_plain(value) for value in data)
    ):
        return [Item(index, "", value=value) for index, value in enumerate(data)]
    return list(_one_by_one(text))


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _plain(value: Any) -> bool:
    """An object whose values are scalars, or lists or objects of scalars
    (SendGrid's `category` list, its `pool` object), no string too long."""
    if type(value) is not dict:
        return False
    for field in value.values():
        kind = type(field)
        if kind is str:
            if len(field) > MAX_STRING:
                return False
        elif kind is list or kind is dict:
            if kind is dict and not _short_keys(field):
                return False
            for element in field if kind is list else field.values():
                if type(element) not in _SCALARS or (
                    type(element) is str and len(element) > MAX_STRING
                ):
                    return False
        elif kind not in _SCALARS:
            return False
    return _short_keys(value)


def _short_keys(value: dict) -> bool:
    return not value or max(map(len, value)) <= MAX_STRING


def _one_by_one(text: str) -> Iterator[Item]:
    at = _WHITESPACE.match(text).end()
    if not text.startswith("[", at):
        raise NotAnArray(_not_an_array(text))
    at = _WHITESPACE.match(text, at + 1).end()
    if text.startswith("]", at):
        _expect_end(text, at + 1)
        return
    decoder = _Decoder()
    index = 0
    while True:
        odd_before = decoder.odd_numbers
        try:
            value, end = decoder.raw_decode(text, at)
        except RecursionError:
            end = _skip(text, at)
            item = Item(index, text[at:end], problem=f"nested deeper than {MAX_DEPTH} levels")
        except ValueError as exc:
            raise NotAnArray(f"body is not JSON: {exc}") from None
        else:
            raw = text[at:end]
            item = Item(index, raw, value=value)
            if decoder.odd_numbers != odd_before or _may_need_cleaning(raw):
                try:
                    item = Item(index, raw, value=clean(value, f"[{index}]"))
                except Unsafe as exc:
                    item = Item(index, raw, value=value, problem=str(exc))
        yield item
        index += 1
        at = end if text[end : end + 1] not in _SPACES else _WHITESPACE.match(text, end).end()
        if text.startswith(",", at):
            at += 1
            if text[at : at + 1] in _SPACES:
                at = _WHITESPACE.match(text, at).end()
            continue
        if text.startswith("]", at):
            _expect_end(text, at + 1)
            return
        raise NotAnArray(f"body is not JSON: expected ',' or ']' at character {at}")


def _may_need_cleaning(raw: str) -> bool:
    """Whether the item whose JSON text is `raw` could hold what `clean`
    removes or refuses (walking every item would double the cost of reading
    them): NUL and lone surrogates can only be escapes or a raw NUL, nesting
    needs brackets, a long string a long item."""
    return (
        "\x00" in raw
        or _NUL_OR_SURROGATE.search(raw) is not None
        or len(raw) > MAX_STRING
        or raw.count("{") + raw.count("[") > MAX_DEPTH
    )


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
