"""The public pages reached from messages, attacked with any token, query and
form body: the open pixel and click redirect (/t/o, /t/c), unsubscribe (/u/),
preferences (/preferences/) and NPS (/nps/). None answers 5xx; a refused
request (4xx) writes nothing."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from apps.messaging.links import preferences_token, unsubscribe_token
from apps.messaging.models import Category, Channel, Message, Template
from apps.surveys.models import Survey
from apps.surveys.services import survey_invite
from apps.tracking.tokens import click_token, open_token
from tests.attack.conftest import rolled_back, shows
from tests.attack.public import any_bytes, changed, encoded, form_body, mutated, row_counts

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]

FIELDS = st.sampled_from(
    [b"List-Unsubscribe", b"score", b"comment", b"csrfmiddlewaretoken", b"product", b"email",
     b"sms", b"all", b"unsubscribe_all", b"topic", b"channel"]
)  # fmt: skip
VALUES = st.one_of(
    st.sampled_from([b"One-Click", b"on", b"1", b"10", b"11", b"-1", b"1e400", b"NaN", b""]),
    any_bytes,
)


@pytest.fixture
def public_tokens(make_customer, settings) -> dict[str, str]:
    """Valid tokens of each public page, for a sent marketing email and an
    open NPS invitation (the fuzz mutates them)."""
    settings.PUBLIC_BASE_URL = "https://tenure.example.com"
    settings.FREQUENCY_CAP_EMAIL = ""
    now = timezone.now()
    customer = make_customer(traits={"first_name": "Ada"})
    template = Template.objects.create(
        slug="fuzz", name="Fuzz", channel=Channel.EMAIL, subject="Hi", html="<p>Hi</p>"
    )
    message = Message.objects.create(
        customer=customer, channel=Channel.EMAIL, category=Category.MARKETING, template=template,
        to_address=customer.email, idempotency_key="fuzz:1", status=Message.Status.SENT,
        created_at=now - timedelta(minutes=6), sent_at=now - timedelta(minutes=5),
        provider="sendgrid", provider_message_id="sgfuzz",
        html='<p><a href="https://example.com/a">a</a></p>',
    )  # fmt: skip
    for command, path in (
        ("load_templates", "fixtures/templates.json"),
        ("load_surveys", "fixtures/surveys.json"),
    ):
        call_command(command, str(ROOT / path), "--only-new", stdout=open("/dev/null", "w"))  # noqa: SIM115
    invited = survey_invite(
        customer=make_customer(traits={"first_name": "Bo"}),
        survey=Survey.objects.get(slug="nps"),
        channel=Channel.EMAIL,
        idempotency_key="fuzz:nps",
        now=now,
    )
    assert invited.invitation is not None, invited.skipped
    return {
        "/t/o/": open_token(message.pk),
        "/t/c/": click_token(message.pk, 0),
        "/u/": unsubscribe_token(message),
        "/preferences/": preferences_token(message),
        "/nps/": invited.invitation.token,
    }


@st.composite
def public_requests(draw, tokens: dict[str, str]):
    page = draw(st.sampled_from(sorted(tokens)))
    # The valid token half the time: what the page does with a body is only
    # reached past the token check.
    token = draw(st.one_of(st.just(tokens[page].encode()), mutated(tokens[page]), any_bytes))
    method = draw(st.sampled_from(["GET", "HEAD", "POST", "POST"]))
    query = draw(st.lists(st.tuples(st.one_of(FIELDS, any_bytes), VALUES), max_size=3))
    form = draw(st.lists(st.tuples(st.one_of(FIELDS, any_bytes), VALUES), max_size=5))
    if page == "/nps/" and draw(st.booleans()):  # a well-formed answer with an odd comment
        form = [(b"score", str(draw(st.integers(0, 10))).encode()), (b"comment", draw(any_bytes))]
    path = page + encoded(token) + (f"?{form_body(query)}" if query else "")
    return method, path, form_body(form) if method == "POST" else None


def call(client, method: str, path: str, body: str | None):
    if method == "POST":
        return client.post(path, data=body, content_type="application/x-www-form-urlencoded")
    return client.generic(method, path)


def test_no_public_page_answers_5xx_and_a_refusal_writes_nothing(client, public_tokens):
    @given(request=public_requests(public_tokens))
    def attack(request):
        method, path, body = request
        with shows(method=method, path=path, body=body), rolled_back():
            before = row_counts()
            response = call(client, method, path, body)
            status = response.status_code
            assert status < 500, f"{method} {path} body={body!r} -> {status}"
            if 400 <= status < 500:
                assert not changed(before, row_counts()), (
                    f"{method} {path} body={body!r} -> {status} but wrote "
                    f"{changed(before, row_counts())}"
                )

    attack()
