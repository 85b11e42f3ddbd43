"""Templates (apps/messaging/rendering.py) assembled from fragments a marketer
(or an attacker with a marketer's login) might write: any template either
renders or fails with a TemplateRenderError, never another exception, within
a time bound (a render that runs past RENDER_BOUND_S fails the test instead
of holding it); and the save-time check (`template_check`) never raises."""

import signal
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from apps.messaging.models import Category, Channel, Template
from apps.messaging.rendering import TemplateRenderError, render, template_check
from tests.attack.conftest import shows

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
RENDER_BOUND_S = 5  # far above a real template's milliseconds; below a held worker
# Far above a real message (SendGrid takes 30 MB in all, Twilio 1,600 characters):
# a template building 100 MB must be refused, not rendered.
OUTPUT_BOUND = 10_000_000

FRAGMENTS = [
    "Hello ", "{{ customer.first_name }}", "{{ customer.traits.plan | default('x') }}",
    "{{ customer.nope }}", "{{ links.unsubscribe }}", "{{ company.postal_address }}",
    "{{ now | datetime }}", "{{ now | datetime('%Q %') }}", "{{ customer.traits | tojson }}",
    "{% for t in customer.traits.tags %}{{ t }}{% endfor %}", "{% if customer.email %}",
    "{% endif %}", "{% for i in range(100000) %}", "{% endfor %}", "{{ range(10**10) }}",
    "{{ 'A' * 100000000 }}", "{{ 'A' * 10 }}", "{{ 9 ** 9 ** 9 }}", "{{ (1,) * 100000000 }}",
    "{{ ''.__class__ }}", "{{ cycler.__init__.__globals__ }}", "{{ customer.__dict__ }}",
    "{{ lipsum(10000, false, 100000, 100000) }}", "{{ 'x' | center(100000000) }}",
    "{{ '%s' % customer }}", "{{ '{0:>100000000}'.format(1) }}", "{{ 1 / 0 }}",
    "{{ customer.traits.nested.a[0].b }}", "{% set x = x %}",
    "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
    "{% include 'x' %}", "{% extends 'y' %}", "{{", "}}", "{%", "%}", "{#", "\x00", "\ud800",
    "<script>alert(1)</script>", "{% raw %}", "{% endraw %}", "{{ customer.traits.huge }}",
    "{{ [1] * 10**8 }}", "{{ dict(a=1).items() | list }}",
    "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}",
]  # fmt: skip
NOTHING = dict(channel=Channel.EMAIL, category=Category.TRANSACTIONAL, subject="Hi", html="",
               text="", body="")  # fmt: skip
sources = st.one_of(
    st.lists(st.sampled_from(FRAGMENTS), max_size=6).map("".join),
    st.text(max_size=40),
)


@contextmanager
def bounded(seconds: float):
    def expire(signum, frame):
        raise TimeoutError(f"the render ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def odd_customer(make_customer):
    nested: object = "deep"
    for _ in range(200):
        nested = {"a": [nested]}
    return make_customer(
        traits={"first_name": "Ada", "plan": "pro", "tags": ["a", "b"], "huge": "x" * 100_000,
                "nested": nested},
    )  # fmt: skip


# The attack run's templates, always tried (a loop of 10**9 steps, 100 MB built).
@example(**{**NOTHING, "subject": "{{ 'A' * 100000000 }}"})
@example(**{**NOTHING, "channel": Channel.SMS, "body": FRAGMENTS[-1] + "x"})
@example(**{**NOTHING, "html": "{{ 'x' | center(100000000) }}"})
@given(
    channel=st.sampled_from([Channel.EMAIL, Channel.SMS]),
    category=st.sampled_from([Category.MARKETING, Category.TRANSACTIONAL]),
    subject=sources,
    html=sources,
    text=sources,
    body=sources,
)
def test_any_template_renders_or_fails_with_a_template_error(
    odd_customer, settings, channel, category, subject, html, text, body
):
    settings.COMPANY_POSTAL_ADDRESS = "1 Main St, Springfield"
    template = Template(
        slug="fuzz", name="Fuzz", channel=channel, category=category, subject=subject, html=html,
        text=text, body=body,
    )  # fmt: skip
    with shows(channel=channel, category=category, subject=subject, html=html, text=text,
               body=body):  # fmt: skip
        with bounded(RENDER_BOUND_S):
            problems = template_check(template)
        assert all(isinstance(p, str) for p in problems)
        try:
            with bounded(RENDER_BOUND_S):
                rendered = render(template, customer=odd_customer, now=NOW)
            size = sum(len(part) for part in vars(rendered).values())
            assert size <= OUTPUT_BOUND, f"rendered {size:,} characters"
            event("rendered")
        except TemplateRenderError as exc:
            assert str(exc), "a template error says what is wrong"
            event("refused")
