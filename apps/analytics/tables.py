"""A dashboard table: the numbers behind one chart, drawn as an HTML table
and downloaded as CSV from the same rows, so the two can never disagree."""

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.http import HttpResponse
from django.utils.safestring import SafeString


@dataclass
class Table:
    name: str  # the CSV's name and the `?csv=` value
    title: str
    columns: Sequence[str]
    rows: list[Sequence[Any]] = field(default_factory=list)
    chart: SafeString | None = None
    note: str = ""

    @property
    def display_rows(self) -> list[list[str]]:
        return [[cell(v) for v in row] for row in self.rows]


def cell(value: Any) -> str:
    """How a value reads in the table and in the CSV: None is empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return str(value)


def csv_response(table: Table, *, filename_suffix: str = "") -> HttpResponse:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(table.columns)
    writer.writerows(table.display_rows)
    response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    name = f"{table.name}{filename_suffix}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
