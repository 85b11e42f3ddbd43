import json
from datetime import UTC, datetime, timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from tqdm import tqdm

from apps.journeys.models import Journey
from apps.journeys.simulation import (
    DEFAULT_SEGMENT_STEP,
    MAX_DAYS,
    SimulationError,
    SimulationResult,
    journey_simulate,
)


def _parse_now(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(
            f"--now: {value!r} is not an ISO-8601 time (like 2026-01-31T09:30:00Z)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = (
        "Backtest a journey: replay the last N days of recorded events through the real "
        "engine and sending policies on a virtual clock, inside a transaction that is rolled "
        "back. Nothing is sent and nothing is kept; the result says who would have entered, "
        "converted and exited, the messages per channel, why others were suppressed or "
        "skipped, and how many went through each node."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug", help="the journey's slug")
        parser.add_argument(
            "--days", type=int, required=True, help=f"how many days back (1 to {MAX_DAYS})"
        )
        parser.add_argument(
            "--draft", action="store_true", help="backtest the draft instead of the live version"
        )
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="print the result as JSON"
        )
        parser.add_argument(
            "--segment-step",
            type=int,
            default=int(DEFAULT_SEGMENT_STEP.total_seconds() // 60),
            metavar="MINUTES",
            help="segment triggers: how often the segment is re-evaluated (default 60)",
        )
        parser.add_argument(
            "--now", type=_parse_now, help="ISO-8601 end of the window (default: now)"
        )
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, slug, days, draft, as_json, segment_step, now, no_progress, **options):
        journey = Journey.objects.select_related("live_version").filter(slug=slug).first()
        if journey is None:
            known = ", ".join(Journey.objects.order_by("slug").values_list("slug", flat=True))
            raise CommandError(f"no journey {slug!r} (there are: {known or 'none'})")
        if segment_step < 1:
            raise CommandError("--segment-step: must be at least 1 minute")
        now = now or timezone.now()
        # tqdm redraws with "\r": hand it the raw stream, not Django's OutputWrapper.
        with tqdm(
            total=days * 24,
            unit=" h",
            desc="virtual time",
            disable=no_progress,
            file=self.stderr._out,
            mininterval=0.5,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} h [{elapsed}]",
        ) as bar:
            try:
                result = journey_simulate(
                    journey,
                    days=days,
                    now=now,
                    draft=draft,
                    segment_step=timedelta(minutes=segment_step),
                    on_progress=bar.update,
                )
            except SimulationError as exc:
                raise CommandError(str(exc)) from None
        if as_json:
            self.stdout.write(_dumps(result.as_dict()))
        else:
            self.stdout.write(format_result(result))


def _dumps(data) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def format_result(result: SimulationResult) -> str:
    """The result as a readable report with aligned tables."""
    lines = [
        f"Backtest of {result.name!r} ({result.journey}, {result.version}) over the last "
        f"{result.days} day{'s' if result.days != 1 else ''}",
        f"{result.start:%Y-%m-%d %H:%M} UTC to {result.end:%Y-%m-%d %H:%M} UTC, "
        f"replayed in {result.elapsed_s:.1f} s. Nothing was sent or kept.",
        "",
    ]
    held = f" ({result.held_out} held out)" if result.held_out else ""
    lines += _table(
        ["", "enrollments"],
        [
            ["entered", f"{result.entered}{held}"],
            ["converted (goal met)", result.converted],
            ["exited", result.exited],
            ["completed", result.completed],
            ["failed", result.failed],
            ["still active", result.active],
        ],
    )
    lines.append("")
    lines += _table(
        ["messages", "would send"],
        [[channel, n] for channel, n in result.messages.items()],
    )
    for title, counts in (
        ("deferred", result.deferred),
        ("suppressed", result.suppressed),
        ("skipped", result.skipped),
        ("failed enrollments", result.errors),
    ):
        if counts:
            lines.append("")
            lines += _table([title, "count"], [[reason, n] for reason, n in counts.items()])
    lines.append("")
    lines += _table(
        ["node", "type", "entered", "completed", "outcomes"],
        [
            [
                node_id,
                node["type"],
                node["entered"],
                node["completed"],
                ", ".join(f"{k} {v}" for k, v in node["outcomes"].items()),
            ]
            for node_id, node in result.nodes.items()
        ],
    )
    lines += ["", "Notes:"] + [f"- {note}" for note in result.notes]
    return "\n".join(lines)


def _table(header: list[str], rows: list[list]) -> list[str]:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    numeric = [
        all(row[i].split(" ")[0].isdigit() for row in cells[1:]) and len(cells) > 1
        for i in range(len(header))
    ]

    def line(row: list[str]) -> str:
        parts = [
            cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        return "  ".join(parts).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells[1:]]
    return out
