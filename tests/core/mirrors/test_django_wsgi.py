"""apps/core/mirrors/django_wsgi.py mirrors Django's request cycle. These
tests fail when the Django internals it mirrors change underneath it (then
read the new upstream code, bring the mirror in line, and record the new
fingerprints), and check that it answers as Django does."""

import hashlib
import inspect
import logging
import time

import django
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.base import BaseHandler
from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIHandler, WSGIRequest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, connection
from django.db.backends.base.base import BaseDatabaseWrapper
from django.http import Http404, HttpResponse
from django.test import RequestFactory
from django.urls import path

from apps.core.mirrors import django_wsgi

# sha256 of `inspect.getsource` of each mirrored upstream function, Django 5.2.20.
UPSTREAM = {
    BaseHandler.load_middleware: "a1fb7ee5f8586195da2174d1bbc2bbfc7ca19b9d26ea66412cb434f45bf6d467",
    BaseHandler.get_response: "3d6a79b124c2cccb709071aa82e68030f0a172c3c4662b68351e6b8161b9a848",
    WSGIHandler.__call__: "8391f497d588b2a0021c078fdceb400705b194e3651cb795465e87c2057d4cf9",
    close_old_connections: "c352dd45e8333c97d83fb0905f187e31475cb3d8bb9308611077febb6e21deb6",
    BaseDatabaseWrapper.close_if_unusable_or_obsolete: (
        "9e0690a760eb710d7259a5878f6fd2052dd2718f95d7f64931526a6554be1a51"
    ),
    convert_exception_to_response: (
        "a297ae868bddaca2e7a82847cb707105b2a23ded927d6609f6832901db45758e"
    ),
}

# The middleware the tracking fast path keeps (none with URL-resolution hooks).
LEAN_MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "apps.core.middleware.BodySizeLimitMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]


def hello(request, name):
    if name == "missing":
        raise Http404("no such name")
    if name == "broken":
        raise RuntimeError("boom")
    response = HttpResponse(f"hello {name}", content_type="text/plain")
    response.set_cookie("seen", name, httponly=True)
    response["Cache-Control"] = "no-store"
    return response


urlpatterns = [path("hello/<str:name>", hello)]


def test_the_mirrored_django_internals_are_those_it_was_written_against():
    changed = [
        f"{function.__module__}.{function.__qualname__}"
        for function, recorded in UPSTREAM.items()
        if hashlib.sha256(inspect.getsource(function).encode()).hexdigest() != recorded
    ]
    assert changed == [], (
        f"Django {django.get_version()} changed what apps/core/mirrors/django_wsgi.py mirrors"
    )


def _lean_app(environ, start_response):
    handler = django_wsgi.middleware_chain(
        lambda request: hello(request, request.path_info.rsplit("/", 1)[1]), LEAN_MIDDLEWARE
    )
    return django_wsgi.respond(handler, WSGIRequest(environ), environ, start_response)


def _call(application, path: str, **environ) -> tuple[str, list, bytes]:
    request_environ = RequestFactory().get(path, **environ).environ
    answered = {}

    def start_response(status, headers, exc_info=None):
        answered.update(status=status, headers=headers)

    # As Django's test client does: the request signals must not close the
    # test's connection (its transaction holds the test's rows).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        body = application(request_environ, start_response)
        content = b"".join(body)
        if hasattr(body, "close"):
            body.close()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    return answered["status"], sorted(answered["headers"]), content


@pytest.mark.urls(__name__)
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "environ", "status"),
    [
        ("/hello/ada", {}, "200 OK"),
        ("/hello/ada", {"HTTP_X_FORWARDED_PROTO": "https"}, "200 OK"),
        ("/hello/ada", {"HTTP_HOST": "evil.example"}, "400 Bad Request"),
        ("/hello/missing", {}, "404 Not Found"),
        ("/hello/broken", {}, "500 Internal Server Error"),
    ],
)
def test_it_answers_as_django_does_header_for_header(settings, path, environ, status):
    settings.MIDDLEWARE = LEAN_MIDDLEWARE
    settings.SECURE_HSTS_SECONDS = 3600
    django_app = WSGIHandler()

    lean = _call(_lean_app, path, **environ)

    assert lean == _call(django_app, path, **environ)
    assert lean[0] == status


@pytest.mark.urls(__name__)
@pytest.mark.django_db
def test_an_error_answer_is_logged_as_django_logs_it(caplog):
    with caplog.at_level(logging.WARNING, logger="django.request"):
        status, _, _ = _call(_lean_app, "/hello/missing")

    assert status.startswith("404")
    assert [r.getMessage() for r in caplog.records] == ["Not Found: /hello/missing"]


def test_a_middleware_that_needs_url_resolution_is_refused():
    with pytest.raises(ImproperlyConfigured, match="process_view"):
        django_wsgi.middleware_chain(hello, ["django.middleware.csrf.CsrfViewMiddleware"])


@pytest.mark.django_db(transaction=True)
def test_after_a_request_a_connection_closes_on_errors_or_age_and_is_otherwise_left_checked():
    connection.ensure_connection()
    connection.health_check_done = True

    django_wsgi.connections_upkeep()
    assert connection.connection is not None
    assert connection.health_check_done  # no round trip before the next request

    connection.close_at = time.monotonic() - 1
    django_wsgi.connections_upkeep()
    assert connection.connection is None

    connection.ensure_connection()
    connection.errors_occurred = True
    django_wsgi.connections_upkeep()
    # Still usable: kept, as close_if_unusable_or_obsolete keeps it.
    assert connection.connection is not None
    assert not connection.errors_occurred
