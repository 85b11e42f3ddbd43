from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from tqdm import tqdm

from apps.customers.importing import count_lines, detect_format, import_file

MAX_ERRORS_SHOWN = 100


class Command(BaseCommand):
    help = (
        "Import usage data: JSONL of identify/track calls (the batch API's item shapes) "
        "or a CSV of customers (external_id,email,phone,timezone,locale,…traits). Bad "
        "lines are reported and skipped; good lines are kept; re-running is idempotent. "
        "Exits with status 1 when any line was refused."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--format", choices=["jsonl", "csv"], dest="fmt")
        parser.add_argument("--chunk", type=int, default=20_000, help="calls per transaction")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, file: Path, fmt, chunk, no_progress, **options):
        if not file.is_file():
            raise CommandError(f"{file}: no such file")
        try:
            fmt = fmt or detect_format(file)
        except ValueError as exc:
            raise CommandError(str(exc)) from None

        started = timezone.now()
        with tqdm(
            total=count_lines(file), unit=" lines", disable=no_progress, file=self.stderr._out
        ) as bar:
            report = import_file(
                file, received_at=started, fmt=fmt, chunk_size=chunk, on_progress=bar.update
            )
        elapsed = (timezone.now() - started).total_seconds()

        for line_no, error in report.errors[:MAX_ERRORS_SHOWN]:
            self.stderr.write(f"{file.name}:{line_no}: {error}")
        if len(report.errors) > MAX_ERRORS_SHOWN:
            self.stderr.write(f"… and {len(report.errors) - MAX_ERRORS_SHOWN} more refused lines")

        stored = report.stored
        rate = stored.events_stored / elapsed if elapsed else 0
        self.stdout.write(
            f"{file.name}: {report.accepted:,} calls accepted, {len(report.errors):,} refused; "
            f"customers {stored.customers_created:,} created, "
            f"{stored.customers_updated:,} updated; "
            f"events {stored.events_stored:,} stored, {stored.events_duplicate:,} already there; "
            f"{elapsed:.1f}s ({rate:,.0f} events/s)"
        )
        if report.errors:
            raise CommandError(
                f"{len(report.errors):,} line(s) refused (listed above); "
                "every other line was stored"
            )
