"""Static segments: a list of customers, uploaded (by external id, or as a CSV
file) to replace the list or add to it."""

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import IO, Literal

from django.db import transaction
from django.db.models import F

from apps.core.bulk import values_subquery
from apps.customers.models import Customer

from .. import hooks
from ..models import Segment
from .memberships import apply_member_set
from .snapshots import snapshot_sizes

UploadMode = Literal["replace", "append"]
UPLOAD_MODES = ("replace", "append")
MAX_EXTERNAL_ID = Customer._meta.get_field("external_id").max_length


@dataclass
class UploadReport:
    added: int
    removed: int
    unknown_ids: list[str]
    already_members: int


def segment_static_upload(
    segment: Segment, external_ids: Iterable[str], *, mode: UploadMode, now: datetime
) -> UploadReport:
    """Make the customers with these external ids members of a static segment.
    `replace` also closes the memberships of everyone not in the list; `append`
    only adds. Ids of no known customer are reported, never created."""
    if mode not in UPLOAD_MODES:
        raise ValueError(f"mode must be 'replace' or 'append', got {mode!r}")
    if segment.kind != Segment.Kind.STATIC:
        raise ValueError(f"{segment.slug}: a dynamic segment's members come from its condition")
    ids = list(dict.fromkeys(i.strip() for i in external_ids if i and i.strip()))
    # No customer has such an id (PostgreSQL text cannot even hold a NUL).
    possible = [i for i in ids if "\x00" not in i and len(i) <= MAX_EXTERNAL_ID]
    with transaction.atomic():
        # Uploads to one segment queue behind each other (the row lock).
        Segment.objects.select_for_update().filter(pk=segment.pk).values_list("pk").get()
        # Known customers only: the id of a profile merged into another is
        # reported as unknown (its customer goes by another id now).
        listed = Customer.objects.known().filter(external_id__in=values_subquery(possible))
        known = set(listed.values_list("external_id", flat=True))
        entered, exited, count, _ = apply_member_set(
            segment.pk,
            listed.order_by().values("id").query.sql_with_params(),
            now=now,
            close_others=mode == "replace",
        )
        # The segments nesting this one refresh in full next time (their
        # digests include the version); its own incremental state, should it
        # ever become dynamic, no longer describes its memberships.
        Segment.objects.filter(pk=segment.pk).update(
            member_count=count,
            refreshed_at=now,
            last_error="",
            list_version=F("list_version") + (1 if entered or exited else 0),
            refresh_watermark=None,
            refresh_digest="",
        )
        snapshot_sizes({segment.pk: count}, now=now)
        segment.member_count, segment.refreshed_at = count, now
        if entered or exited:
            transaction.on_commit(partial(hooks.notify, segment, entered, exited, now))
    return UploadReport(
        added=len(entered),
        removed=len(exited),
        unknown_ids=[i for i in ids if i not in known],
        already_members=len(known) - len(entered),
    )


CSV_ID_COLUMN = "external_id"
MAX_CSV_ERRORS = 10


def parse_external_ids_csv(file: IO) -> list[str]:
    """The external ids in an uploaded CSV, in file order without repeats:
    either a file with an `external_id` column in its header (other columns
    ignored) or a single column of ids with no header. Raises ValueError naming
    the line(s) of malformed input."""
    if hasattr(file, "seek"):
        file.seek(0)
    raw = file.read()
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise ValueError(f"line {line}: not UTF-8 text; save the file as UTF-8 CSV") from None
    else:
        text = raw.removeprefix("\ufeff")

    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    ids: list[str] = []
    errors: list[str] = []
    column: int | None = None  # the external_id column; None: one id per line
    first = True
    try:
        for row in reader:
            cells = [c.strip() for c in row]
            while cells and not cells[-1]:
                cells.pop()  # trailing commas
            if not cells:
                continue
            line = reader.line_num
            if first:
                first = False
                names = [c.lower() for c in cells]
                if CSV_ID_COLUMN in names:
                    column = names.index(CSV_ID_COLUMN)
                    continue
                if len(cells) > 1:
                    raise ValueError(
                        f"line {line}: the header has no {CSV_ID_COLUMN!r} column (it has "
                        f"{', '.join(repr(c) for c in cells)}); upload a CSV with an "
                        f"{CSV_ID_COLUMN!r} column or a single column of ids"
                    )
            if column is None and len(cells) > 1:
                errors.append(
                    f"line {line}: {len(cells)} columns; a file without an "
                    f"{CSV_ID_COLUMN!r} header must have one id per line"
                )
            else:
                value = cells[column or 0] if len(cells) > (column or 0) else ""
                if not value:
                    errors.append(f"line {line}: no {CSV_ID_COLUMN}")
                elif "\x00" in value:
                    errors.append(f"line {line}: contains a NUL character")
                elif len(value) > MAX_EXTERNAL_ID:
                    errors.append(f"line {line}: longer than {MAX_EXTERNAL_ID} characters")
                else:
                    ids.append(value)
            if len(errors) >= MAX_CSV_ERRORS:
                errors.append("… (stopped reading)")
                break
    except csv.Error as exc:
        errors.append(f"line {reader.line_num}: not valid CSV: {exc}")
    if errors:
        raise ValueError("; ".join(errors))
    if not ids:
        raise ValueError("the file has no external ids")
    return list(dict.fromkeys(ids))
