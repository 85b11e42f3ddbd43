import time
from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from tqdm import tqdm

from apps.customers.demo import demo_seed
from apps.customers.models import Customer


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
        "Fill the database with demo customers of a subscription SaaS and their usage "
        "history (trials, plans, renewals, churn). Deterministic per --seed and --now; "
        "rerunning with both the same stores nothing new."
    )

    def add_arguments(self, parser):
        parser.add_argument("--customers", type=int, default=500, help="How many (default 500).")
        parser.add_argument("--seed", type=int, default=1, help="Random seed (default 1).")
        parser.add_argument(
            "--now",
            type=_parse_now,
            help="ISO-8601 time the history ends at (default: now, to the minute).",
        )
        parser.add_argument(
            "--if-empty",
            action="store_true",
            help="Do nothing if any customer exists (for `make run`).",
        )
        parser.add_argument(
            "--chunk", type=int, default=5000, help="Calls per transaction (default 5000)."
        )
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, customers, seed, now, if_empty, chunk, no_progress, **options):
        if customers < 0:
            raise CommandError("--customers: must be 0 or more")
        if chunk < 1:
            raise CommandError("--chunk: must be 1 or more")
        if if_empty and Customer.objects.exists():
            self.stdout.write("Customers already exist; --if-empty: not seeding demo data.")
            return
        now = now or timezone.now().replace(second=0, microsecond=0)

        started = time.perf_counter()
        # tqdm redraws with "\r": hand it the raw stream, not Django's
        # OutputWrapper, which would end every update with a newline.
        with tqdm(
            total=customers,
            unit=" customers",
            disable=no_progress,
            file=self.stderr._out,
            mininterval=0.5,
        ) as bar:
            report = demo_seed(
                customers=customers, seed=seed, now=now, chunk_size=chunk, on_progress=bar.update
            )
        elapsed = time.perf_counter() - started

        stored = report.stored
        rate = stored.events_stored / elapsed if elapsed else 0.0
        self.stdout.write(
            self.style.SUCCESS(
                f"Seeded {report.customers:,} customers ({stored.customers_created:,} new) "
                f"and {stored.events_stored:,} events ({stored.events_duplicate:,} already "
                f"there) in {elapsed:.1f} s: {rate:,.0f} events/s "
                f"(seed {seed}, now {now.isoformat()})."
            )
        )
