import json
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from apps.journeys.graph import MAX_DEPTH, JourneyError
from apps.journeys.services import journey_import


class Command(BaseCommand):
    help = (
        "Create a journey from a journey file (JSON, DESIGN.md's format), or replace the "
        "draft of the journey with its slug. Every problem is listed with its path; an "
        "invalid file writes nothing. --publish also publishes the draft as the next "
        "version (customers in flight stay on theirs unless --migrate maps their nodes)."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="a journey file, or - for standard input")
        parser.add_argument(
            "--publish", action="store_true", help="publish the draft as the live version"
        )
        parser.add_argument(
            "--migrate",
            metavar="MAPPING",
            help=(
                "with --publish: move active enrollments to the new version, at the nodes "
                'this JSON object maps them to ({"old-node": "new-node"}; unnamed nodes keep '
                "their id; {} when all ids stay)"
            ),
        )

    def handle(self, *args, file: str, publish: bool, migrate: str | None, **options):
        name, data = self._read(file)
        mapping = None
        if migrate is not None:
            if not publish:
                raise CommandError("--migrate only goes with --publish")
            try:
                mapping = json.loads(migrate)
            except json.JSONDecodeError as exc:
                raise CommandError(f"--migrate: not valid JSON: {exc.msg}") from None
        try:
            journey = journey_import(
                data,
                now=timezone.now(),
                publish=publish,
                migrate={"mapping": mapping} if mapping is not None else None,
            )
        except JourneyError as exc:
            problems = "\n".join(f"  {line}" for line in exc.lines())
            count = len(exc.errors)
            raise CommandError(
                f"{name}: {count} problem{'s' if count != 1 else ''}, nothing imported:\n{problems}"
            ) from None
        if publish:
            version = journey.live_version
            moved = getattr(version, "migrated", 0)
            self.stdout.write(
                f"{name}: journey {journey.slug!r} published as version {version.number} "
                f"({journey.get_status_display().lower()}"
                + (f"; {moved} enrollment(s) moved" if mapping is not None else "")
                + ")"
            )
        else:
            self.stdout.write(
                f"{name}: draft of journey {journey.slug!r} saved (publish it to make it live)"
            )

    def _read(self, file: str) -> tuple[str, object]:
        if file == "-":
            name, raw = "stdin", sys.stdin.buffer.read()
        else:
            path = Path(file)
            if not path.is_file():
                raise CommandError(f"{file}: no such file")
            name, raw = path.name, path.read_bytes()
        try:
            return name, json.loads(raw.decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise CommandError(f"{name}: not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise CommandError(
                f"{name}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
            ) from None
        except RecursionError:
            raise CommandError(f"{name}: nested more than {MAX_DEPTH} levels deep") from None
