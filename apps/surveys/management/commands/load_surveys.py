import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from apps.surveys.fixtures import surveys_load


class Command(BaseCommand):
    help = (
        "Create or update NPS surveys by slug from a JSON file: a list of {slug, name, question, "
        "follow_up_question, thank_you_text, email_template, sms_template} (templates by slug; "
        "load them first). One invalid survey and nothing is written."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument(
            "--only-new", action="store_true", help="leave surveys that exist as they are"
        )

    def handle(self, *args, file: Path, only_new: bool, **options):
        if not file.is_file():
            raise CommandError(f"{file}: no such file")
        try:
            items = json.loads(file.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise CommandError(f"{file.name}: not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise CommandError(
                f"{file.name}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
            ) from None
        try:
            report = surveys_load(items, only_new=only_new)
        except ValueError as exc:
            raise CommandError(f"{file.name}: nothing loaded:\n{exc}") from None
        self.stdout.write(
            f"{file.name}: {len(report.created)} survey(s) created, {len(report.updated)} "
            f"updated, {len(report.kept)} kept as they were"
        )
