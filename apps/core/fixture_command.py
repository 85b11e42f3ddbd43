"""The base of the `load_*` commands (segments, templates, surveys): read a
JSON file of items by slug, hand it to the app's all-or-nothing loader, and
report what was created, updated and kept."""

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError


class LoadFixtureCommand(BaseCommand):
    noun = "item"  # e.g. "template": used in the option help and the report

    def load(self, items: Any, *, only_new: bool):
        """The app's loader: returns a report with created/updated/kept lists,
        raises ValueError (naming every problem) and writes nothing."""
        raise NotImplementedError

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument(
            "--only-new", action="store_true", help=f"leave {self.noun}s that exist as they are"
        )

    def handle(self, *args, file: Path, only_new: bool, **options):
        items = read_json_file(file)
        try:
            report = self.load(items, only_new=only_new)
        except ValueError as exc:
            raise CommandError(f"{file.name}: nothing loaded:\n{exc}") from None
        self.stdout.write(
            f"{file.name}: {len(report.created)} {self.noun}(s) created, {len(report.updated)} "
            f"updated, {len(report.kept)} kept as they were"
        )


def read_json_file(file: Path) -> Any:
    """The file's JSON, or a CommandError saying what is wrong with it."""
    if not file.is_file():
        raise CommandError(f"{file}: no such file")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CommandError(f"{file.name}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise CommandError(
            f"{file.name}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
