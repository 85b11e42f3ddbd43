"""The open pixel and the click redirect against odd requests (RELIABILITY.md
14, 24, 27): any token (NUL, broken UTF-8, invalid percent-escapes, 20,000
characters) gets the same GIF or our "link not valid" page, never a 500, and
an odd User-Agent never loses the hit. Every public route refuses an oversize
body with 413 before reading it."""

import pytest
from django.core.handlers.wsgi import WSGIHandler

from apps.tracking.models import Engagement
from apps.tracking.services.hits import tracked_links_store
from apps.tracking.tokens import click_token, open_token
from apps.tracking.views import PIXEL_GIF

from .conftest import wsgi_call

pytestmark = pytest.mark.django_db

ODD_TOKENS = [
    "%00",
    "a%00b",
    "%ED%A0%80",  # a lone surrogate, UTF-8 encoded
    "%FF%FE",
    "%C0%AF",
    "%",
    "%zz",
    "%0A%0D",
    "x" * 20_000,
    "a:b:c:" * 100,
]


@pytest.mark.parametrize("token", ODD_TOKENS, ids=lambda t: t[:12])
@pytest.mark.parametrize("method", ["get", "head"])
def test_the_pixel_answers_the_same_gif_for_any_token(token, method):
    for response in (
        wsgi_call(None, method, f"/t/o/{token}"),  # gunicorn's way in: the fast path
        wsgi_call(WSGIHandler(), method, f"/t/o/{token}"),  # Django's whole stack
    ):
        assert response.status_code == 200
        assert response["Content-Type"] == "image/gif"
        assert response["Cache-Control"] == "no-store"
        if method == "get":
            assert response.content == PIXEL_GIF
    assert not Engagement.objects.exists()


@pytest.mark.parametrize("token", ODD_TOKENS, ids=lambda t: t[:12])
def test_the_redirect_answers_its_invalid_link_page_for_any_token(client, token):
    fast = wsgi_call(None, "get", f"/t/c/{token}")
    full = client.get(f"/t/c/{token}")

    assert fast.status_code == full.status_code == 404
    assert "location" not in fast and not full.has_header("Location")
    assert not Engagement.objects.exists()


def test_a_nul_in_the_user_agent_never_loses_the_open_or_the_click(client, make_message):
    message = make_message()
    tracked_links_store(message_id=message.pk, urls=["https://example.com/pricing"])

    opened = client.get(f"/t/o/{open_token(message.pk)}", HTTP_USER_AGENT="Mail\x00Agent")
    clicked = client.get(f"/t/c/{click_token(message.pk, 0)}", HTTP_USER_AGENT="Mail\x00Agent")

    assert (opened.status_code, clicked.status_code) == (200, 302)
    assert sorted(Engagement.objects.values_list("kind", "user_agent")) == [
        ("click", "MailAgent"),
        ("open", "MailAgent"),
    ]


@pytest.mark.parametrize(
    "path",
    [
        "/t/o/token",
        "/t/c/token",
        "/u/token",
        "/preferences/token",
        "/nps/token",
        "/webhooks/sendgrid",
        "/webhooks/twilio/status",
        "/webhooks/twilio/inbound",
    ],
)
def test_every_public_route_refuses_an_oversize_body_with_413(client, settings, path):
    settings.API_MAX_BODY_BYTES = 1000

    response = client.post(path, data=b"x=" + b"y" * 2000, content_type="text/plain")

    assert response.status_code == 413
    assert "limit is 1000 bytes" in response.json()["error"]
