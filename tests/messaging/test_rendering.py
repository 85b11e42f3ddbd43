from datetime import UTC, datetime

import pytest
from django.core.exceptions import ValidationError

from apps.customers.models import Customer, Event
from apps.messaging import links
from apps.messaging.html_text import html_to_text
from apps.messaging.models import Category, Channel, Message, Template
from apps.messaging.rendering import TemplateRenderError, render, template_check
from apps.messaging.sms_segments import sms_segments
from tests.messaging.sending import FOOTER_HTML

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ADDRESS = "1 Demo Street, Springfield, 12345, USA"


@pytest.fixture(autouse=True)
def company(settings):
    settings.COMPANY_NAME = "Acme & Co"
    settings.COMPANY_POSTAL_ADDRESS = ADDRESS
    settings.PUBLIC_BASE_URL = "https://tenure.example.com"


def customer(**traits) -> Customer:
    """An unsaved customer is enough: rendering reads, never writes."""
    return Customer(
        pk=7,
        external_id="u-7",
        email="ada@example.com",
        phone="+14155550123",
        timezone="Europe/London",
        locale="en-GB",
        traits={"first_name": "Ada", **traits},
    )


def email(**fields) -> Template:
    fields.setdefault("slug", "t")
    fields.setdefault("name", "T")
    fields.setdefault("category", Category.TRANSACTIONAL)
    fields.setdefault("subject", "Hi")
    fields.setdefault("html", "")
    return Template(channel=Channel.EMAIL, **fields)


def sms(body: str, **fields) -> Template:
    return Template(slug="s", name="S", channel=Channel.SMS, body=body, **fields)


def body_of(source: str, **kwargs) -> str:
    return render(sms(source), customer=kwargs.pop("who", customer()), now=NOW, **kwargs).body


# --- the context ---------------------------------------------------------------


def test_the_customer_is_every_trait_plus_the_contact_columns_and_external_id():
    who = customer(plan="pro", seats=12, address={"city": "Leeds"})

    out = body_of(
        "{{ customer.external_id }} {{ customer.email }} {{ customer.phone }} "
        "{{ customer.first_name }} {{ customer.plan }} {{ customer.seats * 2 }} "
        "{{ customer.address.city }} {{ customer.timezone }}",
        who=who,
    )

    assert out == "u-7 ada@example.com +14155550123 Ada pro 24 Leeds Europe/London"


def test_contact_columns_win_over_traits_of_the_same_name():
    who = customer(email="stale@example.com")

    assert body_of("{{ customer.email }}", who=who) == "ada@example.com"


def test_company_links_journey_message_and_event_are_in_the_context(db):
    stored = Customer.objects.create(external_id="u-1", email="a@example.com")
    template = sms(
        "{{ company.name }}|{{ company.postal_address }}|{{ links.unsubscribe }}|"
        "{{ links.preferences }}|{{ journey.slug }}/{{ journey.node_id }}/{{ journey.name }}|"
        "{{ message.id }} {{ message.channel }} {{ message.template }}|"
        "{{ event.name }} {{ event.properties.plan }}|{{ now.year }}"
    )
    template.save()
    message = Message.objects.create(
        customer=stored,
        channel=Channel.SMS,
        category=Category.MARKETING,
        idempotency_key="k",
        to_address="+14155550123",
        journey="onboarding",
        node_id="welcome",
        created_at=NOW,
    )
    event = Event(name="signed_up", properties={"plan": "pro"}, occurred_at=NOW)

    out = render(
        template,
        customer=stored,
        now=NOW,
        message=message,
        context={"event": event, "journey": {"name": "Onboarding"}},
    ).body

    parts = out.split("|")
    assert parts[0:2] == ["Acme & Co", ADDRESS]  # not HTML: nothing escaped
    assert links.read_unsubscribe_token(parts[2].rsplit("/", 1)[1]) == message.pk
    assert parts[2].startswith("https://tenure.example.com/u/")
    assert links.read_preferences_token(parts[3].rsplit("/", 1)[1]).message_id == message.pk
    assert parts[4:] == [
        "onboarding/welcome/Onboarding",
        f"{message.pk} sms s",
        "signed_up pro",
        "2026",
    ]


def test_a_missing_variable_fails_naming_it():
    with pytest.raises(TemplateRenderError) as caught:
        body_of("Hello\n{{ customer.plan }}")

    assert str(caught.value) == (
        "body: line 2: customer.plan is undefined "
        "(use {{ customer.plan | default(...) }} if it may be missing)"
    )


def test_a_missing_nested_variable_names_its_whole_path():
    with pytest.raises(TemplateRenderError, match=r"customer\.address\.zip is undefined"):
        body_of("{{ customer.address.zip }}", who=customer(address={"city": "Leeds"}))


def test_an_unknown_top_level_name_fails_naming_it():
    with pytest.raises(TemplateRenderError, match="body: line 1: 'survey' is undefined"):
        body_of("{{ survey.link }}")


def test_default_fills_a_missing_variable():
    assert body_of("Hi {{ customer.nickname | default(customer.first_name) }}") == "Hi Ada"
    assert body_of("{{ customer.plan | default('your plan') }}") == "your plan"


def test_the_datetime_filter_shows_times_in_the_customers_zone():
    who = customer(renewal_at="2026-07-01T23:30:00Z")

    # 23:30 UTC is 00:30 the next day in London (BST, +1).
    assert body_of("{{ customer.renewal_at | datetime('%d %B %H:%M') }}", who=who) == (
        "02 July 00:30"
    )


def test_html_is_autoescaped_and_text_parts_are_not():
    who = customer(first_name="<b>Ada</b> & Bob")
    template = email(
        subject="Hi {{ customer.first_name }}",
        html="<p>Hi {{ customer.first_name }}</p>",
        text="Hi {{ customer.first_name }}",
    )

    out = render(template, customer=who, now=NOW)

    assert out.html == "<p>Hi &lt;b&gt;Ada&lt;/b&gt; &amp; Bob</p>"
    assert out.subject == "Hi <b>Ada</b> & Bob"
    assert out.text == "Hi <b>Ada</b> & Bob\n"
    assert body_of("{{ customer.first_name }}", who=who) == "<b>Ada</b> & Bob"


def test_the_subject_is_one_line():
    out = render(
        email(subject="Hello\n  {{ customer.first_name }}\n"), customer=customer(), now=NOW
    )

    assert out.subject == "Hello Ada"


def test_the_preheader_is_hidden_at_the_top_of_the_body():
    template = email(
        preheader="Your {{ customer.first_name }} digest",
        html="<html><body class='x'><p>Hi</p></body></html>",
    )

    out = render(template, customer=customer(), now=NOW)

    assert out.preheader == "Your Ada digest"
    before, _, after = out.html.partition("<body class='x'>")
    assert before == "<html>"
    assert after.startswith('<div style="display:none;')
    assert "Your Ada digest</div><p>Hi</p>" in after


# --- the sandbox ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "attribute"),
    [
        ("{{ ''.__class__.__mro__ }}", "__class__"),
        ("{{ cycler.__init__.__globals__.os }}", "__init__"),
        ("{{ joiner.__init__.__globals__ }}", "__init__"),
        ("{{ namespace.__init__ }}", "__init__"),
        ("{{ customer.__class__ }}", "__class__"),
        ("{{ customer.items.__self__ }}", "__self__"),
        ("{{ '{0.__class__}'.format(customer) }}", "__class__"),
        ("{{ (1).__class__.__subclasses__() }}", "__class__"),
        ("{% if customer.__class__ is defined %}x{% endif %}", "__class__"),
        ("{{ customer.__dict__ | default('x') }}", "__dict__"),
        ("{{ now.__class__.__init__ }}", "__class__"),
    ],
)
def test_reaching_for_python_internals_fails_with_a_clear_error(source, attribute):
    with pytest.raises(TemplateRenderError) as caught:
        body_of(source)

    assert f"access to attribute '{attribute}'" in str(caught.value)
    assert "is not allowed in templates" in str(caught.value)


@pytest.mark.parametrize(
    "source",
    [
        "{{ customer.update({'email': 'evil@example.com'}) }}",
        "{% set _ = customer.traits %}{{ customer.pop('email') }}",
        "{{ customer.clear() }}",
    ],
)
def test_the_context_cannot_be_modified(source):
    with pytest.raises(TemplateRenderError, match="is not allowed in templates"):
        body_of(source)


def test_the_customer_is_a_plain_dict_with_no_way_to_the_orm(db):
    stored = Customer.objects.create(external_id="u-1", traits={"first_name": "Ada"})

    for source, named in [
        ("{{ customer.save() }}", "customer.save is undefined"),
        ("{{ customer.objects }}", "customer.objects is undefined"),
        ("{{ customer.messages }}", "customer.messages is undefined"),
        ("{{ customer.pk }}", "customer.pk is undefined"),
        ("{{ settings.SECRET_KEY }}", "'settings' is undefined"),
        ("{{ config }}", "'config' is undefined"),
    ]:
        with pytest.raises(TemplateRenderError, match=named.replace(".", r"\.")):
            render(sms(source), customer=stored, now=NOW)


def test_a_model_passed_in_the_context_is_refused():
    with pytest.raises(TypeError, match="extra: a Customer cannot be given to a template"):
        render(sms("x"), customer=customer(), now=NOW, context={"extra": customer()})


def test_an_error_inside_an_expression_fails_the_render_naming_the_part_and_line():
    with pytest.raises(TemplateRenderError, match=r"^body: line 1: ZeroDivisionError"):
        body_of("{{ 1 / 0 }}")


def test_a_syntax_error_names_the_part_and_line():
    template = email(html="<p>\n{% if customer.plan %}\n</p>")

    with pytest.raises(TemplateRenderError, match=r"^html: line \d: .*endif"):
        render(template, customer=customer(plan="pro"), now=NOW)


def test_huge_ranges_are_refused():
    with pytest.raises(TemplateRenderError, match="Range too big"):
        body_of("{% for i in range(10000000) %}{% endfor %}")


# --- the text part -------------------------------------------------------------


def test_the_text_part_is_derived_from_the_html_when_blank():
    html = """<html><head><title>x</title><style>p { color: red }</style></head><body>
      <h1>Welcome,   Ada</h1>
      <p>Read <a href="https://docs.example.com/start?a=1&amp;b=2">the guide</a> first.
      Mail <a href="mailto:help@example.com">help@example.com</a>.</p>
      <ul><li>Invite your team</li><li>Connect <b>Slack</b>
        <ol><li>Open settings</li><li>Click &ldquo;Connect&rdquo;</li></ol></li></ul>
      <p>Line one<br>Line two</p><script>alert(1)</script>
      <img src="x.png" alt="Acme logo"><hr>
      <p><a href="https://example.com/bare">https://example.com/bare</a></p>
    </body></html>"""

    assert html_to_text(html) == (
        "Welcome, Ada\n"
        "\n"
        "Read the guide (https://docs.example.com/start?a=1&b=2) first. "
        "Mail help@example.com.\n"
        "\n"
        "- Invite your team\n"
        "- Connect Slack\n"
        "  1. Open settings\n"
        "  2. Click \u201cConnect\u201d\n"
        "\n"
        "Line one\n"
        "Line two\n"
        "\n"
        "Acme logo\n"
        "\n"
        "--------------------\n"
        "\n"
        "https://example.com/bare"
    )


def test_render_derives_the_text_part_and_keeps_an_explicit_one():
    derived = render(
        email(html="<p>Hi <a href='https://x.example'>there</a></p>"), customer=customer(), now=NOW
    )
    explicit = render(
        email(html="<p>Hi</p>", text="Plain {{ customer.first_name }}"),
        customer=customer(),
        now=NOW,
    )

    assert derived.text == "Hi there (https://x.example)\n"
    assert explicit.text == "Plain Ada\n"


# --- compliance ----------------------------------------------------------------


def marketing(html: str, **fields) -> Template:
    return email(category=Category.MARKETING, html=html, **fields)


def test_a_compliant_marketing_email_renders_with_address_and_unsubscribe_link_in_both_parts():
    out = render(marketing(f"<p>News</p>{FOOTER_HTML}"), customer=customer(), now=NOW)

    assert ADDRESS in out.html and ADDRESS in out.text
    assert "https://tenure.example.com/u/preview" in out.html
    assert "Unsubscribe (https://tenure.example.com/u/preview)" in out.text


def test_marketing_email_without_the_unsubscribe_link_is_refused_at_render():
    with pytest.raises(TemplateRenderError) as caught:
        render(marketing("<p>News. {{ company.postal_address }}</p>"), customer=customer(), now=NOW)

    assert str(caught.value) == (
        "marketing email must contain the unsubscribe link ({{ links.unsubscribe }}) "
        "in its HTML and text parts"
    )


def test_marketing_email_without_the_postal_address_is_refused_at_render():
    template = marketing(
        "<p><a href='{{ links.unsubscribe }}'>Unsubscribe</a></p>",
        text="News. Unsubscribe: {{ links.unsubscribe }}",
    )

    with pytest.raises(TemplateRenderError, match=r"postal address .* in its HTML and text parts"):
        render(template, customer=customer(), now=NOW)


def test_an_explicit_text_part_must_carry_the_footer_too():
    template = marketing(f"<p>News</p>{FOOTER_HTML}", text="News, no footer")

    with pytest.raises(TemplateRenderError) as caught:
        render(template, customer=customer(), now=NOW)

    assert "unsubscribe link ({{ links.unsubscribe }}) in its text part" in str(caught.value)
    assert "HTML" not in str(caught.value)


def test_a_footer_hidden_behind_a_condition_is_refused_when_the_condition_is_false():
    template = marketing(f"<p>News</p>{{% if customer.plan == 'pro' %}}{FOOTER_HTML}{{% endif %}}")

    assert render(template, customer=customer(plan="pro"), now=NOW).html
    with pytest.raises(TemplateRenderError, match="unsubscribe link"):
        render(template, customer=customer(plan="starter"), now=NOW)


def test_an_address_with_html_characters_is_found_escaped(settings):
    settings.COMPANY_POSTAL_ADDRESS = "Smith & Sons, 2 <Main> St"

    out = render(marketing(FOOTER_HTML), customer=customer(), now=NOW)

    assert "Smith &amp; Sons, 2 &lt;Main&gt; St" in out.html


def test_marketing_email_is_refused_when_no_postal_address_is_configured(settings):
    settings.COMPANY_POSTAL_ADDRESS = ""

    with pytest.raises(TemplateRenderError, match="COMPANY_POSTAL_ADDRESS is not set"):
        render(marketing(FOOTER_HTML), customer=customer(), now=NOW)


def test_transactional_email_and_sms_need_no_footer():
    assert render(email(html="<p>Your receipt</p>"), customer=customer(), now=NOW).html
    assert body_of("Your code is 1234")


# --- checks at save ------------------------------------------------------------


def test_template_check_refuses_marketing_email_without_its_footer():
    problems = template_check(marketing("<p>Hello {{ customer.first_name }}</p>"))

    assert problems == [
        "marketing email must contain the unsubscribe link ({{ links.unsubscribe }}) "
        "in its HTML and text parts",
        "marketing email must contain the company's postal address "
        "({{ company.postal_address }}) in its HTML and text parts",
    ]


def test_template_check_passes_a_compliant_template_that_uses_traits_without_defaults():
    template = marketing(f"<p>Your {{{{ customer.plan }}}} plan renews.</p>{FOOTER_HTML}")

    assert template_check(template) == []


def test_template_check_names_syntax_errors_sandbox_violations_and_unknown_names():
    assert template_check(sms("Hi {{ customer.first_name }")) == ["body: line 1: unexpected '}'"]
    assert template_check(sms("{{ customer.__class__ }}")) == [
        "body: line 1: access to attribute '__class__' of a _Namespace is not allowed in templates"
    ]
    assert template_check(sms("{{ custmer.first_name }}")) == [
        "body: unknown variable custmer (templates can use account, accounts, company, customer, "
        "event, journey, links, message, now)"
    ]


def test_template_check_asks_for_the_parts_of_each_channel():
    assert template_check(sms("")) == ["body: an SMS template needs a body"]
    assert template_check(email(subject="", html="", text="")) == [
        "subject: an email needs a subject",
        "html: an email needs an HTML or a text part",
    ]


def test_the_model_refuses_to_validate_a_non_compliant_marketing_email(db):
    template = marketing("<p>No footer</p>")

    with pytest.raises(ValidationError) as caught:
        template.full_clean()

    assert "unsubscribe link" in str(caught.value.message_dict["__all__"])


def test_the_model_validates_a_template_with_a_syntax_error_against_its_field(db):
    template = sms("{% for x in %}")

    with pytest.raises(ValidationError) as caught:
        template.full_clean()

    assert list(caught.value.message_dict) == ["body"]


# --- SMS segments --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ("GSM-7", 0)),
        ("a" * 160, ("GSM-7", 1)),
        ("a" * 161, ("GSM-7", 2)),
        ("a" * 306, ("GSM-7", 2)),
        ("a" * 307, ("GSM-7", 3)),
        ("é" * 160, ("GSM-7", 1)),  # é is in the GSM-7 basic set
        ("€" * 80, ("GSM-7", 1)),  # extension characters take two septets
        ("€" * 81, ("GSM-7", 2)),
        ("a" * 152 + "{", ("GSM-7", 1)),  # 154 septets: fits one segment of 160
        ("a" * 159 + "[", ("GSM-7", 2)),  # 161 septets
        ("a" * 152 + "[" + "a" * 10, ("GSM-7", 2)),  # the escape is not split: 152 | 12
        ("ł" * 70, ("UCS-2", 1)),
        ("ł" * 71, ("UCS-2", 2)),
        ("ł" * 134, ("UCS-2", 2)),
        ("ł" * 135, ("UCS-2", 3)),
        ("😀" * 35, ("UCS-2", 1)),  # an emoji is two UTF-16 code units
        ("😀" * 36, ("UCS-2", 2)),
        ("a" * 66 + "😀", ("UCS-2", 1)),  # 68 units
        ("a" * 66 + "😀" + "a" * 3, ("UCS-2", 2)),  # 71 units; the pair moves whole
    ],
)
def test_sms_segments_count_gsm7_and_ucs2(text, expected):
    assert sms_segments(text) == expected
