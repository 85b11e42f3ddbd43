"""What the urllib3 tracking mirror costs (apps/core/mirrors/
urllib3_tracking.py): sending N SMS through the real Twilio SDK to the
loopback fake of tests/fakes/provider.py (in a process of its own), with
the tracked connections (TwilioProvider as it is) and with requests' plain
adapter in their place. CPU of this process per SMS, and wall time. The
mirror is kept for correctness (at most once on a timeout), whatever this
says.

    .venv/bin/python tests/core/mirrors/measure_urllib3_tracking.py

Needs no database.
"""

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from tests.fakes.process import fake_provider_process  # noqa: E402

N = 500
ROUNDS = 8


def main() -> None:
    with fake_provider_process() as url:
        measure(url)


def measure(url: str) -> None:
    from tests.fakes.provider import TWILIO_SID, TWILIO_TOKEN

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.update(
        SMS_PROVIDER="twilio", TWILIO_ACCOUNT_SID=TWILIO_SID, TWILIO_AUTH_TOKEN=TWILIO_TOKEN,
        TWILIO_FROM_NUMBER="+15005550006", TWILIO_API_BASE_URL=url,
        NO_PROXY="127.0.0.1,localhost", PUBLIC_BASE_URL="https://tenure.example.com",
    )  # fmt: skip
    import django

    django.setup()
    from requests.adapters import HTTPAdapter

    from apps.messaging.models import Category, Channel, Message
    from apps.messaging.providers.twilio import TwilioProvider

    tracked = TwilioProvider(Channel.SMS)
    plain = TwilioProvider(Channel.SMS)
    adapter = HTTPAdapter(pool_maxsize=8)
    plain.http.session.mount("https://", adapter)
    plain.http.session.mount("http://", adapter)
    messages = [
        Message(
            pk=i, customer_id=i, channel=Channel.SMS, category=Category.MARKETING,
            to_address=f"+1500555{i:04d}", text="Tenure: your pro plan renews on March 3.",
        )
        for i in range(1, N + 1)
    ]  # fmt: skip

    def timed(*providers) -> list[tuple[float, float]]:
        """(CPU, wall) in microseconds per SMS for each provider: the best of
        ROUNDS, the providers taking turns, in turn first (the one going first
        in a round was seen faster by 10-20% whichever it was)."""
        best = [(float("inf"), float("inf"))] * len(providers)
        order = list(enumerate(providers))
        for _ in range(ROUNDS):
            order.reverse()
            for i, provider in order:
                started, started_cpu = time.perf_counter(), time.process_time()
                for m in messages:
                    provider.send(m)
                cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started
                best[i] = (min(best[i][0], cpu), min(best[i][1], wall))
        return [(cpu / N * 1e6, wall / N * 1e6) for cpu, wall in best]

    timed(plain, tracked)  # warm up
    (cpu_t, wall_t), (cpu_p, wall_p) = timed(tracked, plain)
    print(
        f"through the SDK to the fake, one at a time: CPU {cpu_p:.0f} us plain, "
        f"{cpu_t:.0f} us tracked "
        f"({cpu_t / cpu_p - 1:+.1%}); wall {wall_p:.0f} us plain, {wall_t:.0f} us tracked "
        f"({wall_t / wall_p - 1:+.1%})"
    )

    # The added work alone, which the machine's noise above can hide: one
    # request written on a connected connection, tracked or not.
    import urllib3.connection

    from apps.core.mirrors.urllib3_tracking import _TrackedHTTPConnection

    class Socket:
        def sendall(self, data) -> None:
            pass

        def settimeout(self, timeout) -> None:
            pass

    def request_us(kind) -> float:
        connection = kind("api.twilio.example")
        connection.sock = Socket()
        body = b"To=%2B15005550006&Body=Tenure%3A+your+plan+renews" * 3
        best = float("inf")
        for _ in range(ROUNDS):
            started = time.process_time()
            for _ in range(20_000):
                connection.request("POST", "/2010-04-01/Messages.json", body=body)
                connection._HTTPConnection__state = "Idle"  # as if the answer was read
                connection._HTTPConnection__response = None
            best = min(best, time.process_time() - started)
        return best / 20_000 * 1e6

    plain_us = request_us(urllib3.connection.HTTPConnection)
    tracked_us = request_us(_TrackedHTTPConnection)
    print(
        f"a request written, alone: {plain_us:.1f} us plain, {tracked_us:.1f} us tracked "
        f"(+{tracked_us - plain_us:.1f} us, {(tracked_us - plain_us) / cpu_p:.1%} of an SMS's CPU)"
    )


if __name__ == "__main__":
    main()
