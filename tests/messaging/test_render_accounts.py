"""Templates see the customer's accounts (Segment's `group` call): `account`,
the most recently grouped, and `accounts`, all of them, most recent first."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.customers.models import Customer
from apps.customers.schemas import GroupIn, IdentifyIn
from apps.customers.services import ingest
from apps.messaging.models import Category, Channel, Message, Template
from apps.messaging.preview import template_preview
from apps.messaging.rendering import TemplateRenderError, render, template_check
from apps.messaging.services import SendRequest, message_send_many
from tests.messaging.sending import FOOTER_HTML, apply_send_settings, make_customer, make_template

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 2, 15, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@pytest.fixture(autouse=True)
def send_settings(settings):
    apply_send_settings(settings, FREQUENCY_CAP_EMAIL="")


def group(customer: Customer, group_id: str, *, at: datetime, **traits) -> None:
    ingest([GroupIn(userId=customer.external_id, groupId=group_id, traits=traits)], received_at=at)


def sms(body: str) -> Template:
    return Template(slug="s", name="S", channel=Channel.SMS, body=body)


def body_for(customer: Customer, source: str) -> str:
    customer = Customer.objects.get(pk=customer.pk)
    return render(sms(source), customer=customer, now=NOW).body


@pytest.fixture
def ada():
    """Ada, grouped with Acme (enterprise) first, then with Beta (starter)."""
    ada = make_customer("ada", first_name="Ada")
    group(ada, "acme", at=NOW - 2 * MINUTE, name="Acme", plan="enterprise", seats=40)
    group(ada, "beta", at=NOW - MINUTE, name="Beta", plan="starter")
    return ada


def test_account_is_the_most_recently_grouped_and_accounts_all_of_them(ada):
    body = body_for(
        ada,
        "{{ account.name }} {{ account.traits.plan }} {{ account.plan }} {{ account.id }}"
        " | {% for a in accounts %}{{ a.name }}={{ a.traits.plan }}"
        "{% if not loop.last %}, {% endif %}{% endfor %}",
    )

    assert body == "Beta starter starter beta | Beta=starter, Acme=enterprise"


def test_grouping_again_makes_an_account_the_current_one(ada):
    group(ada, "acme", at=NOW)

    assert body_for(ada, "{{ account.external_id }} {{ account.seats }}") == "acme 40"


def test_a_customer_in_no_account_has_an_empty_account():
    bo = make_customer("bo")

    assert body_for(bo, "{% if account %}{{ account.name }}{% else %}solo{% endif %}") == "solo"
    assert body_for(bo, "{{ account.name | default('your team') }}") == "your team"
    assert body_for(bo, "{{ accounts | length }}") == "0"
    with pytest.raises(TemplateRenderError, match=r"account\.name is undefined"):
        body_for(bo, "{{ account.name }}")


def test_a_missing_account_trait_fails_naming_it(ada):
    with pytest.raises(TemplateRenderError, match=r"account\.traits\.region is undefined"):
        body_for(ada, "{{ account.traits.region }}")


def test_templates_naming_account_and_accounts_pass_the_check_at_save():
    template = Template(
        slug="team",
        name="Team",
        channel=Channel.EMAIL,
        category=Category.MARKETING,
        subject="News for {{ account.name }}",
        html="<p>{% for a in accounts %}{{ a.name }} {% endfor %}</p>" + FOOTER_HTML,
    )

    assert template_check(template) == []


def test_a_template_not_naming_accounts_does_not_read_them(ada):
    customer = Customer.objects.get(pk=ada.pk)
    with CaptureQueriesContext(connection) as queries:
        render(sms("Hi {{ customer.first_name }}"), customer=customer, now=NOW)

    assert not [q for q in queries if "account" in q["sql"]]


def test_a_batch_of_sends_reads_the_accounts_once_and_renders_each_customers(ada, published):
    others = [make_customer(f"m-{n}", email=f"m{n}@example.com") for n in range(5)]
    for n, customer in enumerate(others):
        group(customer, f"co-{n}", at=NOW - MINUTE, name=f"Company {n}")
    template = make_template(
        slug="team-news",
        subject="{{ account.name | default('Your team') }} news",
    )
    Customer.objects.filter(pk=ada.pk).update(email="ada@example.com")
    customers = list(Customer.objects.filter(pk__in=[ada.pk, *(c.pk for c in others)]))
    requests = [
        SendRequest(customer=c, template=template, idempotency_key=f"team:{c.pk}")
        for c in customers
    ]

    with CaptureQueriesContext(connection) as queries:
        sent = message_send_many(requests, now=NOW)

    account_reads = [q for q in queries if "customers_account" in q["sql"]]
    assert len(account_reads) == 1
    subjects = {m.customer_id: m.subject for m in sent}
    assert subjects[ada.pk] == "Beta news"
    assert {subjects[c.pk] for c in others} == {f"Company {n} news" for n in range(5)}
    assert {m.status for m in sent} == {Message.Status.QUEUED}


def test_the_preview_shows_the_customers_account(ada):
    template = Template(
        slug="p", name="P", channel=Channel.SMS, body="{{ account.name }} on {{ account.plan }}"
    )

    preview = template_preview(template, customer=ada, now=NOW)

    assert preview["sms"]["body"] == "Beta on starter"


def test_the_editors_sample_customer_is_never_an_anonymous_visitor():
    from apps.messaging.forms import sample_customer

    known = make_customer("known", email="known@example.com")
    ingest(
        [IdentifyIn(anonymousId="visitor", traits={"email": "visitor@example.com"})],
        received_at=NOW,
    )

    assert Customer.objects.get(anonymous_id="visitor").pk > known.pk
    assert sample_customer(Channel.EMAIL) == known
    assert sample_customer(Channel.SMS) == known
