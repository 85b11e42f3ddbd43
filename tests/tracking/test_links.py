import re

from apps.messaging.consent import consent_record
from apps.messaging.models import Category, Channel, ConsentRecord, Message, Template
from apps.messaging.services import message_send
from apps.tracking.links import insert_open_pixel, rewrite_links
from apps.tracking.models import TrackedLink
from apps.tracking.tokens import (
    click_token,
    open_token,
    read_click_token,
    read_open_token,
)

from .conftest import PUBLIC, T0

CLICK = re.compile(re.escape(PUBLIC) + r"/t/c/([^\"' >]+)")


def test_web_links_are_replaced_by_click_links_in_position_order():
    html, links = rewrite_links(
        '<a href="https://example.com/a">A</a> <a class="b" href=\'http://example.com/b\'>B</a>',
        message_id=7,
    )

    assert links == ["https://example.com/a", "http://example.com/b"]
    tokens = CLICK.findall(html)
    assert [read_click_token(t) for t in tokens] == [(7, 0), (7, 1)]
    assert "https://example.com/a" not in html and "http://example.com/b" not in html
    assert 'class="b"' in html


def test_the_same_url_twice_has_one_position():
    html, links = rewrite_links(
        '<a href="https://example.com/x">1</a><a href="https://example.com/x">2</a>', message_id=3
    )

    assert links == ["https://example.com/x"]
    assert {read_click_token(t) for t in CLICK.findall(html)} == {(3, 0)}


def test_an_escaped_ampersand_is_stored_as_the_url_means_it():
    _, links = rewrite_links('<a href="https://example.com/?a=1&amp;b=2">x</a>', message_id=1)

    assert links == ["https://example.com/?a=1&b=2"]


def test_mailto_anchors_own_pages_and_opted_out_links_are_left_alone():
    source = (
        '<a href="mailto:help@example.com">mail</a>'
        '<a href="tel:+15550100">call</a>'
        '<a href="#top">top</a>'
        f'<a href="{PUBLIC}/u/some-token">unsubscribe</a>'
        '<a href="http://tenure.example.com/preferences/x">prefs</a>'
        '<a data-notrack href="https://example.com/raw">raw</a>'
        '<a clicktracking="off" href="https://example.com/raw2">raw2</a>'
        '<a href="javascript:alert(1)">js</a>'
    )

    html, links = rewrite_links(source, message_id=1)

    assert links == []
    assert html == source


def test_the_open_pixel_goes_before_the_end_of_the_body():
    html = insert_open_pixel("<html><body><p>Hi</p></body></html>", message_id=42)

    match = re.search(re.escape(PUBLIC) + r'/t/o/([^"]+)"', html)
    assert match is not None
    assert read_open_token(match.group(1)) == 42
    assert html.index("/t/o/") < html.index("</body>")


def test_without_a_body_tag_the_pixel_is_appended():
    html = insert_open_pixel("<p>Hi</p>", message_id=5)

    assert html.startswith("<p>Hi</p><img ")


def test_tokens_carry_ids_only_and_are_refused_when_tampered_or_for_another_purpose():
    token = click_token(123, 4)

    assert read_click_token(token) == (123, 4)
    assert "@" not in token and "+" not in token
    assert token.split(":")[0] == "123.4"  # the ids, signed; nothing else
    tampered = token.replace("123.4", "124.4")
    assert read_click_token(tampered) is None
    assert read_click_token(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    # An open token is not a click token, and the other way round.
    assert read_click_token(open_token(123)) is None
    assert read_open_token(token) is None
    assert read_open_token("garbage") is None
    assert read_click_token("") is None


def test_an_email_sent_through_message_send_has_tracked_links_and_the_pixel(make_customer):
    customer = make_customer()
    template = Template.objects.create(
        slug="receipt",
        name="Receipt",
        channel=Channel.EMAIL,
        category=Category.TRANSACTIONAL,
        subject="Your receipt",
        html='<html><body><p>See <a href="https://shop.example.com/orders/1?x=1&y=2">your '
        "order</a></p></body></html>",
    )

    message = message_send(
        customer=customer, template=template, idempotency_key="receipt:1", now=T0
    )

    message.refresh_from_db()
    assert message.status == Message.Status.QUEUED, message.reason or message.error
    stored = list(TrackedLink.objects.filter(message=message).values_list("position", "url"))
    assert stored == [(0, "https://shop.example.com/orders/1?x=1&y=2")]
    assert [read_click_token(t) for t in CLICK.findall(message.html)] == [(message.pk, 0)]
    assert f"{PUBLIC}/t/o/{open_token(message.pk)}" in message.html
    assert "shop.example.com" not in message.html


def test_sms_messages_are_not_rewritten(make_customer):
    customer = make_customer()
    consent_record(
        customer=customer,
        channel=Channel.SMS,
        status=ConsentRecord.Status.GRANTED,
        source=ConsentRecord.Source.API,
        recorded_at=T0,
    )
    template = Template.objects.create(
        slug="code",
        name="Code",
        channel=Channel.SMS,
        category=Category.TRANSACTIONAL,
        body="Your code: 1234 https://example.com/x",
    )

    message = message_send(customer=customer, template=template, idempotency_key="c:1", now=T0)

    message.refresh_from_db()
    assert message.status == Message.Status.QUEUED, message.reason or message.error
    assert "https://example.com/x" in message.text
    assert not TrackedLink.objects.filter(message=message).exists()
