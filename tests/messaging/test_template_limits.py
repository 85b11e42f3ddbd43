"""A template cannot take the service down: its render is bounded in time,
loop work and size (apps/messaging/sandbox.py), in previews, test sends and
sends alike, and an over-limit template fails only its own message."""

import hashlib
import importlib
import inspect
import time
from datetime import UTC, datetime

import pytest
from django.db import transaction
from django.urls import reverse

from apps.customers.models import Customer
from apps.messaging import sandbox
from apps.messaging.models import Category, Channel, Message, Template
from apps.messaging.rendering import TemplateRenderError, render, template_check
from apps.messaging.services import SendRequest, message_send_many
from tests.messaging.sending import apply_send_settings, make_customer, make_template

NOW = datetime(2026, 6, 2, 15, 0, tzinfo=UTC)


def customer(**traits) -> Customer:
    return Customer(pk=7, external_id="u-7", email="ada@example.com", traits=traits)


def body_of(source: str, **traits) -> str:
    template = Template(slug="s", name="S", channel=Channel.SMS, body=source)
    return render(template, customer=customer(**traits), now=NOW).body


def refused(source: str, match: str, **traits) -> float:
    """Seconds it took to refuse `source` with an error matching `match`."""
    started = time.monotonic()
    with pytest.raises(TemplateRenderError, match=match):
        body_of(source, **traits)
    return time.monotonic() - started


# --- loop work and time -------------------------------------------------------------


def test_a_loop_of_ten_billion_steps_is_stopped_at_once_naming_the_setting():
    took = refused(
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        r"^body: line 1: .*more than 200,000 loop steps and calls \(TEMPLATE_MAX_STEPS\)",
    )
    assert took < 2


def test_loop_steps_are_counted_across_the_whole_render(settings):
    settings.TEMPLATE_MAX_STEPS = 50
    # Three loops of 20: each is small, together they are over.
    source = "{% for i in range(20) %}{% endfor %}" * 3

    refused(source, r"TEMPLATE_MAX_STEPS")
    assert body_of("{% for i in range(20) %}{{ i % 10 }}{% endfor %}") == "0123456789" * 2


def test_calls_count_as_steps_so_runaway_recursion_is_stopped(settings):
    settings.TEMPLATE_MAX_STEPS = 1_000
    refused(
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "{{ f(40) }}",
        r"TEMPLATE_MAX_STEPS",
    )


def test_a_render_past_its_time_is_stopped_naming_the_setting(settings):
    settings.TEMPLATE_MAX_RENDER_S = 0.05
    # Few steps, each slow (a sum of 100,000 numbers in one filter call).
    took = refused(
        "{% for i in range(100000) %}{{ range(100000) | sum }}{% endfor %}",
        r"took longer than 0.05 s to render \(TEMPLATE_MAX_RENDER_S\)",
    )
    assert took < 1


# --- size -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'A' * 100000000 }}",
        "{{ 100000000 * 'A' }}",
        "{{ [[0] * 100000] * 100000 }}",
        "{{ 'a' | center(1000000000) }}",
        "{{ 'a'.center(1000000000) }}",
        "{{ 'a'.ljust(1000000000) }}",
        "{{ '\t'.expandtabs(1000000000) }}",
        "{{ 'ab' | indent(1000000000) }}",
        "{{ range(10) | batch(1000000000, 0) | list }}",
        "{{ 'abc' | wordwrap(1, wrapstring='x' * 1000000) }}",
        "{{ '{:>999999999}'.format(1) }}",
        "{{ '{:{w}}'.format(1, w=999999999) }}",
        "{{ ('{0}' * 300000).format('x' * 1000) }}",
        "{{ '%999999999d' % 1 }}",
        "{{ '%*d' % (999999999, 1) }}",
        "{{ '%.999999999f' | format(1.5) }}",
        "{{ range(100000) | join('x' * 100000) }}",
        "{% set s = 'a' * 100000 %}{{ s | replace('a', s) }}",
        "{% set s = 'x' * 1000000 %}{{ s.translate({120: s}) }}",
        # Doubling in a loop, with `+` and with `~`.
        "{% set ns = namespace(s='a' * 1000) %}"
        "{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
        "{% set ns = namespace(s='a' * 1000) %}"
        "{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    ],
)
def test_a_value_bigger_than_the_output_limit_is_refused_before_it_is_built(source):
    took = refused(source, r"^body: line 1: .*\(TEMPLATE_MAX_OUTPUT_CHARS\)")
    assert took < 1


def test_huge_numbers_are_refused_before_they_are_computed():
    refused("{{ 2 ** 100000000 }}", r"a power of more than 65,536 bits")
    refused("{% set n = 10 ** 4000 %}{{ n * n * n * n * n * n }}", r"a product of more than")


def test_output_past_the_limit_is_refused_naming_the_setting():
    refused(
        "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
        r"^body: the output is longer than 1,000,000 characters \(TEMPLATE_MAX_OUTPUT_CHARS\)",
    )


@pytest.mark.parametrize(
    "source",
    [
        # A macro's buffer and a filter block's keep what they are given.
        "{% macro m() %}{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}{% endmacro %}"
        "{{ m() | length }}",
        "{% filter upper %}{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}{% endfilter %}",
    ],
)
def test_what_a_render_builds_in_all_is_bounded(source):
    refused(source, r"more than 10,000,000 characters in all")


def test_the_limits_come_from_the_settings(settings):
    settings.TEMPLATE_MAX_OUTPUT_CHARS = 100
    refused("{{ 'x' * 101 }}", r"more than 100 \(TEMPLATE_MAX_OUTPUT_CHARS\)")
    assert body_of("{{ 'x' * 100 }}") == "x" * 100


def test_ordinary_templates_render_as_before():
    source = (
        "{{ '{:,}'.format(123456789) }} {{ '%d' % 123456789 }} {{ [1, 2, 3] | sum }} "
        "{{ 'No. 12345678901 %s' % 1 }} {{ '{} 12345678901'.format(2) }} "
        "[{{ 'ab' | center(6) }}] {{ '%05.1f' | format(2.5) }} {{ (10 ** 30) | string | length }} "
        "{% for item in customer['items'] %}{{ loop.index }}.{{ item ~ '!' }} {% endfor %}"
        "{{ customer['items'] | join(', ') }} {{ 'a-b' | replace('-', '+') }} {{ [0] * 3 }}"
    )

    assert body_of(source, items=["tea", "cake"]) == (
        "123,456,789 123456789 6 No. 12345678901 1 2 12345678901 "
        "[  ab  ] 002.5 31 1.tea! 2.cake! tea, cake a+b [0, 0, 0]"
    )


def test_recursive_loops_still_work():
    tree = [{"name": "a", "children": [{"name": "b", "children": []}]}]
    source = (
        "{% for node in customer.tree recursive %}{{ node.name }}"
        "{% if node.children %}({{ loop(node.children) }}){% endif %}{% endfor %}"
    )

    assert body_of(source, tree=tree) == "a(b)"


# --- where templates are rendered -----------------------------------------------------


def test_a_template_over_the_limits_with_any_customer_is_refused_at_save():
    template = Template(
        slug="big", name="Big", channel=Channel.SMS, category=Category.TRANSACTIONAL,
        body="{{ 'A' * 100000000 }}",
    )  # fmt: skip

    problems = template_check(template)

    assert len(problems) == 1
    assert problems[0].startswith("body: line 1: a repeated value would be 100,000,000")


@pytest.mark.django_db
def test_a_template_over_the_limits_for_one_customer_fails_only_their_message(settings):
    apply_send_settings(settings, FREQUENCY_CAP_EMAIL="")
    # 1,000 characters per order: one customer's 2,000 orders are too many.
    template = make_template(
        category=Category.TRANSACTIONAL,
        subject="Your orders",
        html="",
        text="{% for o in customer.orders %}{{ 'x' * 1000 }}{% endfor %}",
    )
    few = make_customer("few", email="few@example.com", orders=[1, 2])
    many = make_customer("many", email="many@example.com", orders=list(range(2_000)))
    also = make_customer("also", email="also@example.com", orders=[1])

    with transaction.atomic():
        sent = message_send_many(
            [
                SendRequest(customer=c, template=template, idempotency_key=f"limits:{c.pk}")
                for c in (few, many, also)
            ],
            now=NOW,
        )

    assert [m.status for m in sent] == [Message.Status.QUEUED, Message.Status.FAILED,
                                        Message.Status.QUEUED]  # fmt: skip
    assert "TEMPLATE_MAX_OUTPUT_CHARS" in Message.objects.get(pk=sent[1].pk).error
    assert Message.objects.get(pk=sent[0].pk).text == "x" * 2_000 + "\n"


@pytest.mark.django_db
def test_the_admin_preview_shows_the_limit_as_a_template_error(admin_client, settings):
    settings.COMPANY_POSTAL_ADDRESS = "1 Demo Street"
    make_customer("pv", email="pv@example.com")
    response = admin_client.post(
        reverse("admin:messaging_template_preview"),
        {
            "slug": "pv", "name": "Pv", "channel": Channel.SMS,
            "category": Category.TRANSACTIONAL, "body": "{{ 'A' * 100000000 }}",
            "customer": "pv",
        },
    )  # fmt: skip

    assert response.status_code == 200
    assert "TEMPLATE_MAX_OUTPUT_CHARS" in response.content.decode()


# --- the mirror of Jinja2's internals -----------------------------------------------------


def test_the_jinja2_sources_the_sandbox_relies_on_are_unchanged():
    """When this fails, Jinja2 changed code that apps/messaging/sandbox.py
    hooks into: read the new source against the module's overrides, then
    update the hashes in sandbox.UPSTREAM."""
    changed = []
    for name, expected in sandbox.UPSTREAM.items():
        parts = name.split(".")
        obj = importlib.import_module(".".join(parts[:2]))
        for part in parts[2:]:
            obj = getattr(obj, part)
        digest = hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]
        if digest != expected:
            changed.append(name)
    assert changed == []
