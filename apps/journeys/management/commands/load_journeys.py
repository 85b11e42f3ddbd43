import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from apps.journeys.graph import JourneyError
from apps.journeys.models import Journey
from apps.journeys.services import journey_import


class Command(BaseCommand):
    help = (
        "Import journey files (a folder of them, or files) and publish them: the demo's "
        "lifecycle journeys for `make run`. All or nothing: one invalid file and nothing is "
        "imported. With --only-new, journeys that exist are left as they are, so a "
        "marketer's edits, pauses and versions survive a rerun."
    )

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", type=Path, help="journey files or folders")
        parser.add_argument(
            "--only-new", action="store_true", help="leave journeys that exist as they are"
        )
        parser.add_argument(
            "--draft", action="store_true", help="import as drafts, without publishing"
        )

    def handle(self, *args, paths: list[Path], only_new: bool, draft: bool, **options):
        files = self._files(paths)
        documents = [(path, self._read(path)) for path in files]
        now = timezone.now()
        created, updated, kept = [], [], []
        with transaction.atomic():
            existing = set(Journey.objects.values_list("slug", flat=True))
            for path, data in documents:
                slug = data.get("slug") if isinstance(data, dict) else None
                if only_new and slug in existing:
                    kept.append(slug)
                    continue
                try:
                    journey = journey_import(data, now=now, publish=not draft)
                except JourneyError as exc:
                    # Raising rolls back the journeys imported before this one.
                    problems = "\n".join(f"  {line}" for line in exc.lines())
                    raise CommandError(f"{path.name}: nothing imported:\n{problems}") from None
                (updated if journey.slug in existing else created).append(journey.slug)
        state = "as drafts" if draft else "and published"
        self.stdout.write(
            f"{len(created)} journey(s) created {state}, {len(updated)} updated, "
            f"{len(kept)} kept as they were"
        )

    def _files(self, paths: list[Path]) -> list[Path]:
        files: list[Path] = []
        for path in paths:
            if path.is_dir():
                found = sorted(path.glob("*.json"))
                if not found:
                    raise CommandError(f"{path}: no .json files in this folder")
                files += found
            elif path.is_file():
                files.append(path)
            else:
                raise CommandError(f"{path}: no such file or folder")
        return files

    def _read(self, path: Path):
        try:
            return json.loads(path.read_bytes().decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise CommandError(f"{path.name}: not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise CommandError(
                f"{path.name}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
            ) from None
