"""What the html.parser mirror saves (apps/core/mirrors/html_parser.py):
CPU per email, the text part alone and the whole render of the messaging
benchmark's email (whose text part is derived from its HTML), with the
mirror and with html.parser itself (the converter as it was before the
mirror, kept as the reference in tests/messaging/test_html_to_text.py).

    DJANGO_SETTINGS_MODULE=config.settings .venv/bin/python \
        tests/core/mirrors/measure_html_parser.py

Needs no database: the template and the customer are not saved.
"""

import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from apps.customers.models import Customer  # noqa: E402
from apps.messaging import rendering  # noqa: E402
from apps.messaging.html_text import html_to_text  # noqa: E402
from apps.messaging.models import Category, Channel, Template  # noqa: E402
from bench.messaging import EMAIL_HTML  # noqa: E402 - the renewal reminder, as a shipped template
from tests.messaging.test_html_to_text import reference  # noqa: E402

N = 5000
ROUNDS = 7


def cpu_us(*functions) -> list[float]:
    """Microseconds of CPU per call of each function: the best of ROUNDS,
    the functions taking turns (so a busy moment of the machine does not
    fall on one of them only)."""
    best = [float("inf")] * len(functions)
    for _ in range(ROUNDS):
        for i, function in enumerate(functions):
            started = time.process_time()
            for _ in range(N):
                function()
            best[i] = min(best[i], time.process_time() - started)
    return [b / N * 1e6 for b in best]


def main() -> None:
    template = Template(
        slug="renewal", name="Renewal", channel=Channel.EMAIL, category=Category.MARKETING,
        subject="Your {{ customer.plan }} plan renews on {{ customer.renewal_day }}",
        html=EMAIL_HTML,
    )  # fmt: skip
    customer = Customer(
        pk=1, external_id="c1", email="ada@example.com", timezone="Europe/Paris",
        traits={"first_name": "Ada", "plan": "pro", "renewal_day": "March 3", "seats": 10,
                "seats_used": 7},
    )  # fmt: skip
    now = datetime(2026, 12, 7, 12, tzinfo=UTC)
    rendered = rendering.render(template, customer=customer, now=now)
    html = rendered.html
    assert html_to_text(html) == reference(html)

    def render_with(converter):
        def render() -> None:
            rendering.html_to_text = converter
            try:
                rendering.render(template, customer=customer, now=now)
            finally:
                rendering.html_to_text = html_to_text

        return render

    text_mirror, text_upstream = cpu_us(lambda: html_to_text(html), lambda: reference(html))
    render_mirror, render_upstream = cpu_us(render_with(html_to_text), render_with(reference))
    print(f"text part:   html.parser {text_upstream:6.1f} us, mirror {text_mirror:6.1f} us "
          f"({1 - text_mirror / text_upstream:.0%} saved)")  # fmt: skip
    print(f"email render: html.parser {render_upstream:6.1f} us, mirror {render_mirror:6.1f} us "
          f"({1 - render_mirror / render_upstream:.0%} of the render saved)")  # fmt: skip


if __name__ == "__main__":
    main()
