"""The WSGI fast path of the pixel and the redirect (apps/tracking/wsgi.py):
the same answers as Django's full request cycle, for the requests it takes,
and every other request left to Django. The behaviour of the two endpoints
themselves is tested through both in test_open_and_click.py."""

import logging
import socket

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.db import connection, connections
from django.urls import resolve

from apps.tracking import views
from apps.tracking.models import Engagement
from apps.tracking.services.hits import tracked_links_store
from apps.tracking.tokens import click_token, open_token
from apps.tracking.views import PIXEL_GIF
from apps.tracking.wsgi import FAST_VIEWS, TrackingFastPath
from config.wsgi import application

from .conftest import wsgi_call

BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36"


@pytest.fixture
def linked(make_message):
    message = make_message()
    tracked_links_store(message_id=message.pk, urls=["https://example.com/pricing"])
    return message


def test_the_fast_path_serves_the_views_the_url_configuration_names():
    for prefix, view in FAST_VIEWS.items():
        assert resolve(f"{prefix}any-token").func is view
    assert set(FAST_VIEWS.values()) == {views.open_pixel, views.click_redirect}


@pytest.mark.parametrize(
    ("method", "path", "environ"),
    [
        ("get", "open", {}),
        ("head", "open", {}),
        ("get", "/t/o/not-a-token", {}),
        ("get", "click", {}),
        ("head", "click", {}),
        ("get", "/t/c/not-a-token", {}),
        ("get", "click 7", {}),
        ("get", "open", {"HTTP_HOST": "evil.example"}),
        ("get", "open", {"HTTP_X_FORWARDED_PROTO": "https"}),
        ("post", "open", {}),
        ("put", "click", {}),
        ("get", "/t/o/token/more", {}),
        ("get", "/t/o/", {}),
        ("get", "/t/x/token", {}),
    ],
)
def test_answers_are_those_of_django_header_for_header(linked, method, path, environ, settings):
    settings.SECURE_HSTS_SECONDS = 3600  # a header only secure requests get
    full_app = WSGIHandler()  # middleware read their settings when made
    fast_app = TrackingFastPath(full_app)
    path = {
        "open": f"/t/o/{open_token(linked.pk)}",
        "click": f"/t/c/{click_token(linked.pk, 0)}",
        "click 7": f"/t/c/{click_token(linked.pk, 7)}",
    }.get(path, path)
    environ = {"HTTP_USER_AGENT": BROWSER, **environ}

    fast = wsgi_call(fast_app, method, path, **environ)
    full = wsgi_call(full_app, method, path, **environ)

    assert fast.status_code == full.status_code
    assert sorted(fast.header_list) == sorted(full.header_list)
    assert fast.content == full.content


def test_an_https_request_gets_hsts_from_the_fast_path_too(linked, settings):
    settings.SECURE_HSTS_SECONDS = 3600

    fast = TrackingFastPath(WSGIHandler())
    path = f"/t/o/{open_token(linked.pk)}"

    response = wsgi_call(fast, "get", path, HTTP_X_FORWARDED_PROTO="https")

    assert response.content == PIXEL_GIF
    assert response["Strict-Transport-Security"] == "max-age=3600"


def test_an_ssl_redirect_setting_redirects_plain_http_hits_before_recording(linked, settings):
    settings.SECURE_SSL_REDIRECT = True

    response = wsgi_call(TrackingFastPath(WSGIHandler()), "get", f"/t/o/{open_token(linked.pk)}")

    assert response.status_code == 301
    assert response["Location"].startswith("https://")
    assert not Engagement.objects.exists()


class Recorder:
    """A stand-in for the rest of the site: notes what reached it."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def __call__(self, environ, start_response):
        self.paths.append(environ["PATH_INFO"])
        start_response("204 No Content", [])
        return [b""]


def test_only_get_and_head_of_the_two_endpoints_skip_django(linked):
    rest = Recorder()
    fast = TrackingFastPath(rest)
    taken = [
        ("get", f"/t/o/{open_token(linked.pk)}", {}),
        ("head", f"/t/c/{click_token(linked.pk, 0)}", {}),
        ("get", "/t/c/garbage", {}),
    ]
    left = [
        ("post", f"/t/o/{open_token(linked.pk)}", {}),
        ("get", f"/t/o/{open_token(linked.pk)}", {"CONTENT_LENGTH": "5"}),
        ("get", "/t/o/a/b", {}),
        ("get", "/t/o/", {}),
        ("get", "/healthz", {}),
        ("get", "/t/open", {}),
    ]

    for method, path, environ in taken:
        assert wsgi_call(fast, method, path, **environ).status_code in (200, 302, 404)
    assert rest.paths == []
    for method, path, environ in left:
        assert wsgi_call(fast, method, path, **environ).status_code == 204
    assert rest.paths == [path for _, path, _ in left]
    assert Engagement.objects.count() == 2


def test_an_error_in_a_view_is_a_500_logged_as_django_logs_it(linked, monkeypatch, caplog):
    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(views.hits, "click_record", broken)

    with caplog.at_level(logging.ERROR, logger="django.request"):
        response = wsgi_call(application, "get", f"/t/c/{click_token(linked.pk, 0)}")

    assert response.status_code == 500
    assert any("Internal Server Error" in r.getMessage() for r in caplog.records)


@pytest.mark.django_db(transaction=True)
def test_a_connection_that_died_fails_one_hit_and_the_next_one_reconnects(make_message, caplog):
    """No health check round trip per hit: a connection killed while idle
    loses the next open (logged; the GIF is answered all the same), is
    closed after it, and the hit after that records on a new one."""
    message = make_message()
    token = open_token(message.pk)
    wsgi_call(application, "get", f"/t/o/{token}", HTTP_USER_AGENT=BROWSER)
    first_backend = connection.connection.info.backend_pid
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [first_backend])
    finally:
        other.close()

    with caplog.at_level(logging.ERROR, logger="apps.tracking.views"):
        lost = wsgi_call(application, "get", f"/t/o/{token}", HTTP_USER_AGENT=BROWSER)
    assert lost.content == PIXEL_GIF
    assert any("not recorded" in r.getMessage() for r in caplog.records)
    assert connection.connection is None  # closed after the failed hit

    kept = wsgi_call(application, "get", f"/t/o/{token}", HTTP_USER_AGENT=BROWSER)

    assert kept.content == PIXEL_GIF
    assert connection.connection.info.backend_pid != first_backend
    assert Engagement.objects.filter(message=message).count() == 2


@pytest.mark.django_db(transaction=True)
def test_hits_skip_the_per_request_health_check(make_message, settings):
    """With CONN_HEALTH_CHECKS, Django checks a connection (a round trip)
    before the first query of each request; fast-path hits on a live
    connection never do."""
    assert settings.DATABASES["default"]["CONN_HEALTH_CHECKS"]
    message = make_message()
    token = open_token(message.pk)
    wsgi_call(application, "get", f"/t/o/{token}", HTTP_USER_AGENT=BROWSER)

    calls = []
    real = connection.is_usable

    def counting_is_usable():
        calls.append(1)
        return real()

    connection.is_usable = counting_is_usable
    try:
        for _ in range(5):
            wsgi_call(application, "get", f"/t/o/{token}", HTTP_USER_AGENT=BROWSER)
    finally:
        del connection.is_usable

    assert calls == []
    assert Engagement.objects.filter(message=message).count() == 6


@pytest.fixture
def database_down(transactional_db):
    """The default connection pointed at a loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    original = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(HOST="127.0.0.1", PORT=str(port), NAME="tenure")
    yield
    connection.close()
    connection.settings_dict.clear()
    connection.settings_dict.update(original)


def test_with_the_database_down_the_pixel_still_answers_and_the_redirect_says_try_again(
    database_down,
):
    pixel = wsgi_call(application, "get", f"/t/o/{open_token(1)}", HTTP_USER_AGENT=BROWSER)
    redirect = wsgi_call(application, "get", f"/t/c/{click_token(1, 0)}", HTTP_USER_AGENT=BROWSER)

    assert (pixel.status_code, pixel.content) == (200, PIXEL_GIF)
    assert pixel["Cache-Control"] == "no-store"
    assert redirect.status_code == 503
    assert b"try again" in redirect.content.lower()
    assert "Location" not in redirect
