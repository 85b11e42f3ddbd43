"""A WSGI fast path for the open pixel and the click redirect.

They are the busiest requests Tenure answers (every email opened, every link
clicked) and the simplest: a signed token, one INSERT, a GIF or a 302. Through
the full Django stack most of their CPU went to what they never use: session,
CSRF, authentication, messages and static-file middleware, URL resolution,
and the request signals, whose connection check (`CONN_HEALTH_CHECKS`) costs
a database round trip per request. Without them a request costs about
half the CPU (figures in apps/core/mirrors/django_wsgi.py).

`TrackingFastPath` wraps Django's WSGI application (config/wsgi.py) and
answers `GET`/`HEAD /t/o/<token>` and `/t/c/<token>` itself, with the same
view functions (`views.open_pixel`, `views.click_redirect`: the one source of
their behaviour) behind the middleware of `settings.MIDDLEWARE` that can
matter to them (security headers, host validation, body size limit,
clickjacking header, Content-Length), through the lean request cycle of
`apps.core.mirrors.django_wsgi` (Django's own, without what these views never
use), so errors, 404 pages and headers come out as they do through Django.
Anything else, and any request it does not take (another method, a body, a
path with more in it), goes to Django unchanged.

The database connection is kept as Django keeps it between requests (closed
after an error or when `CONN_MAX_AGE` has passed), but it is not
health-checked before each hit: a connection that died while idle fails one
hit (an open is then lost, a click gets the "try again" page, as for any
database error) and is replaced on the next one, Django's behaviour without
`CONN_HEALTH_CHECKS`.
"""

from collections.abc import Callable, Iterable

from django.conf import settings
from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpRequest, HttpResponse

from apps.core.mirrors import django_wsgi

from . import views

# Path prefix -> view; the rest of the path is the token (Django's `str`
# converter: non-empty, no slash), as in apps/tracking/urls.py.
FAST_VIEWS: dict[str, Callable[..., HttpResponse]] = {
    "/t/o/": views.open_pixel,
    "/t/c/": views.click_redirect,
}
PREFIX_LENGTH = 5
METHODS = ("GET", "HEAD")
# Middleware these views never need: sessions and the logged-in user, CSRF
# (they answer GET and HEAD only and read no form), flash messages, static
# files. Every other middleware of the settings runs, in its order.
SKIPPED_MIDDLEWARE = frozenset(
    {
        "whitenoise.middleware.WhiteNoiseMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
    }
)
TOKEN_ATTRIBUTE = "tracking_token"  # noqa: S105  (an attribute name)


def fast_middleware() -> list[str]:
    return [path for path in settings.MIDDLEWARE if path not in SKIPPED_MIDDLEWARE]


def _chain(view: Callable[..., HttpResponse]) -> django_wsgi.Handler:
    """`view` behind `fast_middleware()`, the token read from the request."""

    def call_view(request: HttpRequest) -> HttpResponse:
        return view(request, getattr(request, TOKEN_ATTRIBUTE))

    return django_wsgi.middleware_chain(call_view, fast_middleware())


class TrackingFastPath:
    """WSGI middleware: the pixel and the redirect without the rest of Django's
    request cycle; every other request to `application`."""

    def __init__(self, application: Callable) -> None:
        self.application = application
        self.handlers = {prefix: _chain(view) for prefix, view in FAST_VIEWS.items()}

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        handler = self.handlers.get(path[:PREFIX_LENGTH])
        if (
            handler is None
            or environ.get("REQUEST_METHOD") not in METHODS
            or environ.get("CONTENT_LENGTH", "") not in ("", "0")
        ):
            return self.application(environ, start_response)
        request = WSGIRequest(environ)
        token = request.path_info[PREFIX_LENGTH:]
        if not token or "/" in token or request.path_info[:PREFIX_LENGTH] not in self.handlers:
            return self.application(environ, start_response)
        setattr(request, TOKEN_ATTRIBUTE, token)
        return django_wsgi.respond(handler, request, environ, start_response)
