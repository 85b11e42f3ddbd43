import json

from django.core.management.base import BaseCommand, CommandError

from apps.journeys.graph import JourneyError
from apps.journeys.models import Journey
from apps.journeys.services import journey_export


class Command(BaseCommand):
    help = (
        "Print a journey file (JSON) to standard output: the draft, or published version "
        "N with --version. The key order is fixed, so files kept in version control "
        "change only where the journey did; import_journey of the output changes nothing."
    )

    def create_parser(self, prog_name, subcommand, **kwargs):
        # `--version N` (DESIGN.md) replaces Django's own --version (the Django version).
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--version", type=int, metavar="N", help="a published version")

    def handle(self, *args, slug: str, version: int | None, **options):
        journey = Journey.objects.select_related("live_version").filter(slug=slug).first()
        if journey is None:
            known = ", ".join(Journey.objects.order_by("slug").values_list("slug", flat=True))
            raise CommandError(f"no journey {slug!r} (journeys: {known or 'none yet'})")
        try:
            data = journey_export(journey, version=version)
        except JourneyError as exc:
            raise CommandError("\n".join(exc.lines())) from None
        self.stdout.write(json.dumps(data, indent=2, ensure_ascii=False))
