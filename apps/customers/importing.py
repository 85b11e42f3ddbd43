"""Bulk import of usage data from files.

JSONL: one identify/track call per line, the same shapes as the batch API.
CSV: customers, one per row: `external_id,email,phone,timezone,locale,…` where
every other column becomes a trait.

Bad lines are reported with their line number and skipped; every good line is
kept. Calls are stored in chunks through `services.ingest`, each chunk in one
transaction. Re-running a file stores nothing new: track calls without a
`messageId` get one derived from their content.
"""

import csv
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from apps.core import jsonsafe
from apps.core.jsonsafe import DeepJSONEncoder

from .schemas import TYPED_CALL, Call, IdentifyIn, TrackIn, describe_errors, parse_call
from .services import IngestResult, ingest

Format = Literal["jsonl", "csv"]
FORMATS_BY_SUFFIX: dict[str, Format] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
CSV_ID_COLUMN = "external_id"


@dataclass
class ImportReport:
    lines: int = 0
    accepted: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    stored: IngestResult = field(default_factory=IngestResult)


def detect_format(path: Path) -> Format:
    try:
        return FORMATS_BY_SUFFIX[path.suffix.lower()]
    except KeyError:
        raise ValueError(
            f"cannot tell the format of {path.name!r} from its extension; "
            "use .jsonl/.ndjson or .csv, or pass --format"
        ) from None


def count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))


def import_file(
    path: Path,
    *,
    received_at: datetime,
    fmt: Format | None = None,
    chunk_size: int = 20_000,
    on_progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import `path`; `on_progress(n)` is called with the lines read since the last call."""
    reader = _read_jsonl if (fmt or detect_format(path)) == "jsonl" else _read_csv
    report = ImportReport()
    pending: list[Call] = []
    last_line = 0

    def flush() -> None:
        report.stored.add(ingest(pending, received_at=received_at, source="import"))
        pending.clear()

    for line_no, call_or_error in reader(path):
        report.lines = line_no
        if isinstance(call_or_error, str):
            report.errors.append((line_no, call_or_error))
        else:
            pending.append(call_or_error)
            report.accepted += 1
            if len(pending) >= chunk_size:
                flush()
        if on_progress and line_no - last_line >= 1000:
            on_progress(line_no - last_line)
            last_line = line_no
    if pending:
        flush()
    if on_progress:
        on_progress(report.lines - last_line)
    return report


def _read_jsonl(path: Path) -> Iterator[tuple[int, Call | str]]:
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if raw.strip():
                yield line_no, _jsonl_call(raw)


def _jsonl_call(raw: bytes) -> Call | str:
    """The call on a line, or why it was refused."""
    try:
        call = TYPED_CALL.validate_json(raw)
    except ValidationError:
        call = None  # explained below, in the same words as the batch API
    if call is not None and not (isinstance(call, TrackIn) and call.message_id is None):
        return call
    try:
        item = jsonsafe.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return "not UTF-8 text"
    except json.JSONDecodeError as exc:
        return f"not valid JSON: {exc.msg} (column {exc.colno})"
    except ValueError as exc:
        return f"the line {exc}"
    try:
        call = call or parse_call(item)
    except ValueError as exc:
        return str(exc)
    if isinstance(call, TrackIn) and call.message_id is None:
        call.message_id = _content_id(item)
    return call


def _content_id(item: dict) -> str:
    """A stable id for a track call that came without one: identical lines are
    one event, and importing the same file twice stores each event once."""
    canonical = json.dumps(
        item, sort_keys=True, separators=(",", ":"), ensure_ascii=False, cls=DeepJSONEncoder
    )
    return "import-" + hashlib.sha256(canonical.encode()).hexdigest()[:40]


def _read_csv(path: Path) -> Iterator[tuple[int, Call | str]]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        if CSV_ID_COLUMN not in header:
            yield 1, f"the header must have an {CSV_ID_COLUMN!r} column; it has {header}"
            return
        try:
            for row in reader:
                yield reader.line_num, _csv_row_call(row)
        except UnicodeDecodeError:
            yield reader.line_num + 1, "not UTF-8 text; the rest of the file was not read"
        except csv.Error as exc:
            yield reader.line_num, f"not valid CSV: {exc}; the rest of the file was not read"


def _csv_row_call(row: dict[str | None, Any]) -> IdentifyIn | str:
    if None in row:
        return f"has {len(row[None]) + len(row) - 1} cells; the header has {len(row) - 1}"
    traits = {
        column: value.strip() if column in _TEXT_COLUMNS else coerce_cell(value)
        for column, value in row.items()
        if column and column != CSV_ID_COLUMN and value not in (None, "")
    }
    try:
        return IdentifyIn.model_validate({"userId": row.get(CSV_ID_COLUMN), "traits": traits})
    except ValidationError as exc:
        return describe_errors(exc).replace("userId", CSV_ID_COLUMN)


_LITERALS = {"true": True, "false": False}
_TEXT_COLUMNS = {"email", "phone", "timezone", "locale"}


def coerce_cell(value: str) -> Any:
    """CSV cells are text; numbers and booleans become JSON numbers and booleans
    so conditions like `mrr gt 50` compare numerically. Dates stay ISO strings."""
    text = value.strip()
    if text.lower() in _LITERALS:
        return _LITERALS[text.lower()]
    if text.startswith("+") or (text.startswith("0") and len(text) > 1 and text[1] != "."):
        return text  # phone numbers, zip codes: leading signs and zeros matter
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number if number == number and abs(number) != float("inf") else text
