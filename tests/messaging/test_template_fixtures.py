"""The demo's message templates (`fixtures/templates.json`) and their loader."""

import copy
import json
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from apps.customers.models import Customer
from apps.messaging.fixtures import templates_load
from apps.messaging.models import Category, Channel, Message, Template
from apps.messaging.rendering import render
from apps.messaging.sms_segments import sms_segments

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "templates.json"
JOURNEYS = FIXTURES.parent / "journeys"
# The lifecycle journeys (issue 5); templates of later journeys may need more
# context to render (an NPS survey's answer links) and are tested with them.
LIFECYCLE = ("onboarding", "activation", "renewal-reminder-30d", "renewal-reminder-7d",
             "renewal-reminder-1d", "win-back")  # fmt: skip
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def fixture_items() -> list[dict]:
    return json.loads(FIXTURES.read_text(encoding="utf-8"))


def lifecycle_templates() -> set[str]:
    return {
        node["template"]
        for slug in LIFECYCLE
        for node in json.loads((JOURNEYS / f"{slug}.json").read_text(encoding="utf-8"))["nodes"]
        if "template" in node
    }


def load(*args: str) -> str:
    out = StringIO()
    call_command("load_templates", *args, stdout=out)
    return out.getvalue()


def test_the_demo_templates_load_and_cover_both_channels():
    out = load(str(FIXTURES))

    items = fixture_items()
    assert (
        out == f"templates.json: {len(items)} template(s) created, 0 updated, 0 kept as they were\n"
    )
    assert Template.objects.count() == len(items)
    channels = set(Template.objects.values_list("channel", flat=True))
    assert channels == {Channel.EMAIL, Channel.SMS}
    categories = set(Template.objects.values_list("category", flat=True))
    assert categories == {Category.MARKETING, Category.TRANSACTIONAL}
    # Every marketing email can be opted out of by topic in the preference centre.
    untopical = Template.objects.filter(
        channel=Channel.EMAIL, category=Category.MARKETING, topic=""
    )
    assert not untopical.exists()


def test_every_lifecycle_template_renders_for_every_demo_customer():
    """The copy uses traits the demo has, with a default where one may be
    missing; renewal templates go only to customers with a renewal date."""
    call_command("seed_demo", "--customers", "150", "--seed", "5", "--now", NOW.isoformat(),
                 "--no-progress", stdout=StringIO(), stderr=StringIO())  # fmt: skip
    load(str(FIXTURES))
    customers = list(Customer.objects.all())
    renewing = [c for c in customers if c.traits.get("renewal_at")]
    assert renewing, "the demo has paying customers"

    for template in Template.objects.filter(slug__in=lifecycle_templates()):
        audience = renewing if template.slug.startswith("renewal") else customers
        for customer in audience:
            message = Message(pk=1, customer=customer, channel=template.channel)
            rendered = render(template, customer=customer, now=NOW, message=message)
            if template.channel == Channel.SMS:
                _, segments = sms_segments(rendered.body)
                assert segments <= 2, (template.slug, rendered.body)
                assert "{{" not in rendered.body
                if template.category == Category.MARKETING:
                    assert rendered.body.endswith("Reply STOP to opt out"), template.slug
            else:
                assert rendered.subject and "{{" not in rendered.subject
                assert rendered.text.strip() and rendered.html.strip()
                assert settings.COMPANY_POSTAL_ADDRESS in rendered.text
                if template.category == Category.MARKETING:
                    assert "/u/" in rendered.text and "/u/" in rendered.html


def test_renewal_copy_differs_for_annual_and_monthly_plans():
    load(str(FIXTURES))
    customer = Customer.objects.create(
        external_id="annual",
        email="ann@example.com",
        timezone="America/New_York",
        traits={
            "first_name": "Ann",
            "plan": "growth",
            "billing_interval": "year",
            "mrr": 65.83,
            "renewal_at": "2026-12-01T15:00:00Z",
        },
    )
    annual = render(Template.objects.get(slug="renewal-7d-annual"), customer=customer, now=NOW)
    monthly = render(Template.objects.get(slug="renewal-7d-monthly"), customer=customer, now=NOW)

    assert "Your Growth plan renews on December 01, 2026" in monthly.subject
    assert "$790.00" in annual.text  # ten months of 79, billed yearly
    assert "two months free" in monthly.text
    assert "two months free" not in annual.text


def test_a_reload_with_only_new_keeps_a_marketers_edits():
    load(str(FIXTURES))
    Template.objects.filter(slug="onboarding-tips").update(subject="Edited in the admin")

    out = load(str(FIXTURES), "--only-new")

    count = len(fixture_items())
    assert out.endswith(f"0 template(s) created, 0 updated, {count} kept as they were\n")
    assert Template.objects.get(slug="onboarding-tips").subject == "Edited in the admin"


def test_a_reload_without_only_new_brings_the_copy_back():
    load(str(FIXTURES))
    Template.objects.filter(slug="onboarding-tips").update(subject="Edited in the admin")

    load(str(FIXTURES))

    original = next(t for t in fixture_items() if t["slug"] == "onboarding-tips")
    assert Template.objects.get(slug="onboarding-tips").subject == original["subject"]


def test_a_marketing_email_without_its_unsubscribe_link_loads_nothing():
    items = fixture_items()
    broken = next(t for t in items if t["slug"] == "winback-offer")
    broken["html"] = broken["html"].replace("{{ links.unsubscribe }}", "#")

    with pytest.raises(ValueError) as caught:
        templates_load(items)

    index = items.index(broken)
    message = str(caught.value)
    assert message.startswith(f"templates[{index}] ('winback-offer'): ")
    assert "unsubscribe link" in message and "HTML" in message
    assert not Template.objects.exists()


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"channel": "fax"}, "channel: Input should be 'email' or 'sms'"),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"subject": ""}, "an email template needs a subject"),
        ({"body": "Hi"}, "body is for SMS templates"),
        ({"html": "<p>{{ customer.first_name </p>"}, "html: line 1:"),
        ({"slug": "no spaces"}, "slug: String should match pattern"),
    ],
)
def test_a_bad_email_template_is_refused_naming_the_problem(change, problem):
    item = {**copy.deepcopy(fixture_items()[0]), **change}

    with pytest.raises(ValueError, match=r"^templates\[0\]") as caught:
        templates_load([item])

    assert problem in str(caught.value)
    assert not Template.objects.exists()


def test_an_sms_template_has_only_a_body():
    sms = {"slug": "hi", "name": "Hi", "channel": "sms", "body": "Hi", "subject": "Hello"}

    with pytest.raises(ValueError, match="an SMS template has only a body, not subject"):
        templates_load([sms])


def test_a_slug_twice_in_one_file_is_refused():
    item = fixture_items()[0]

    with pytest.raises(ValueError, match=r"templates\[1\] \('onboarding-welcome'\): the slug"):
        templates_load([item, item])


def test_the_command_refuses_what_is_not_a_template_file(tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        load(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('[{"slug": ', encoding="utf-8")
    with pytest.raises(CommandError, match=r"bad.json: not valid JSON: .* \(line 1, column 11\)"):
        load(str(bad))
    bad.write_text('{"slug": "x"}', encoding="utf-8")
    with pytest.raises(CommandError, match="nothing loaded:\nthe file must hold a list"):
        load(str(bad))
