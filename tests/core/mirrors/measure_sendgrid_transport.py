"""What the SendGrid transport mirror saves (apps/core/mirrors/
sendgrid_transport.py): sending N emails through the real SDK to the
loopback fake of tests/fakes/provider.py (in a process of its own), with
the mirror (SendGridProvider as it is: one kept-alive connection, each
request in one write; a group written at once on a connection each) and
without it (the SDK's own client: a urllib opener and a new connection per
call; a group from a thread pool, as delivery calls a provider without
`send_many`). CPU of this process per email, and wall time per email.

    .venv/bin/python tests/core/mirrors/measure_sendgrid_transport.py

Needs no database.
"""

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from tests.fakes.process import fake_provider_process  # noqa: E402

N = 2000
GROUP = 8  # DELIVERY_CONCURRENCY's default
ROUNDS = 3


def main() -> None:
    with fake_provider_process() as url:
        measure(url)


def measure(url: str) -> None:
    from tests.fakes.provider import SENDGRID_KEY

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.update(
        EMAIL_PROVIDER="sendgrid", SENDGRID_API_KEY=SENDGRID_KEY, SENDGRID_API_HOST=url,
        NO_PROXY="127.0.0.1,localhost", PUBLIC_BASE_URL="https://tenure.example.com",
    )  # fmt: skip
    import django

    django.setup()
    from django.conf import settings
    from sendgrid import SendGridAPIClient

    from apps.messaging.models import Category, Channel, Message
    from apps.messaging.providers.sendgrid import SendGridProvider

    provider = SendGridProvider(Channel.EMAIL)
    sdk = SendGridAPIClient(api_key=SENDGRID_KEY, host=url)
    sdk.client.timeout = settings.DELIVERY_TIMEOUT_S
    messages = [
        Message(
            pk=i, customer_id=i, channel=Channel.EMAIL, category=Category.MARKETING,
            to_address=f"reader{i}@example.com", from_address="Tenure <hello@example.com>",
            subject="Your plan renews on March 3", html="<p>Hi Ada,</p>" * 20,
            text="Hi Ada,\n" * 20,
        )
        for i in range(1, N + 1)
    ]  # fmt: skip
    payloads = [provider.payload(m) for m in messages]
    pool = ThreadPoolExecutor(max_workers=GROUP)

    def mirror_one_by_one():
        for m in messages:
            provider.send(m)

    def sdk_one_by_one():
        for payload in payloads:
            sdk.client.mail.send.post(request_body=payload)

    def mirror_groups():
        for i in range(0, N, GROUP):
            answers = provider.send_many(messages[i : i + GROUP])
            assert not any(isinstance(a, Exception) for a in answers), answers

    def sdk_groups():
        def post(payload):
            return sdk.client.mail.send.post(request_body=payload)

        for i in range(0, N, GROUP):
            list(pool.map(post, payloads[i : i + GROUP]))

    def timed(function) -> tuple[float, float]:
        """(CPU, wall) in microseconds per email: the best of ROUNDS."""
        cpu = wall = float("inf")
        for _ in range(ROUNDS):
            started, started_cpu = time.perf_counter(), time.process_time()
            function()
            cpu = min(cpu, time.process_time() - started_cpu)
            wall = min(wall, time.perf_counter() - started)
        return cpu / N * 1e6, wall / N * 1e6

    sdk_one_by_one(), mirror_one_by_one()  # warm up
    for name, with_mirror, without in (
        ("one at a time", mirror_one_by_one, sdk_one_by_one),
        (f"groups of {GROUP}", mirror_groups, sdk_groups),
    ):
        (cpu_m, wall_m), (cpu_s, wall_s) = timed(with_mirror), timed(without)
        print(
            f"{name}: CPU {cpu_s:.0f} -> {cpu_m:.0f} us an email ({1 - cpu_m / cpu_s:.0%} saved), "
            f"wall {wall_s:.0f} -> {wall_m:.0f} us ({1 - wall_m / wall_s:.0%} saved)"
        )


if __name__ == "__main__":
    main()
