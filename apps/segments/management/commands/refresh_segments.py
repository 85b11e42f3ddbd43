from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from apps.segments.models import Segment
from apps.segments.services import RefreshResult, segment_refresh, segments_refresh_all


class Command(BaseCommand):
    help = (
        "Refresh every active dynamic segment now (what beat does every minute), or one "
        "with --segment. Prints, per segment, its members, who entered and exited, and "
        "how long it took, or its error. Exits with status 1 when any segment failed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--segment", metavar="SLUG", help="refresh only this segment")
        parser.add_argument(
            "--full",
            action="store_true",
            help="evaluate every customer, not only those that may have changed",
        )

    def handle(self, *args, segment: str | None, full: bool, **options):
        now = timezone.now()
        if segment:
            found = Segment.objects.filter(slug=segment).first()
            if found is None:
                raise CommandError(f"no segment {segment!r}")
            if found.kind != Segment.Kind.DYNAMIC:
                raise CommandError(f"{segment}: a static segment is uploaded, not refreshed")
            results = [segment_refresh(found, now=now, full=full)]
        else:
            results = segments_refresh_all(now=now, full=full)
            if not results:
                self.stdout.write("no active dynamic segments")

        for result in results:
            self.stdout.write(self._line(result))
        failed = [r.slug for r in results if r.error]
        if failed:
            raise CommandError(f"{len(failed)} segment(s) failed: {', '.join(failed)}")

    @staticmethod
    def _line(r: RefreshResult) -> str:
        if r.error:
            return f"{r.slug}: FAILED: {r.error}"
        if r.skipped:
            return f"{r.slug}: skipped: {r.skipped}"
        how = f"full: {r.full_reason}" if r.full_reason else f"{r.candidates:,} evaluated"
        return (
            f"{r.slug}: {r.member_count:,} members, +{len(r.entered_ids):,} entered, "
            f"\N{MINUS SIGN}{len(r.exited_ids):,} exited, {r.ms:,} ms ({how})"
        )
