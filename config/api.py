"""The public HTTP API under /api/v1/ (django-ninja: its schemas are the same
pydantic models the services use, and the OpenAPI document comes from them)."""

from django.http import HttpRequest
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError

from apps.customers.api import router as customers_router
from apps.customers.api.routes import INGESTION_ENDPOINTS
from apps.customers.schemas import (
    AliasIn,
    BatchIn,
    GroupIn,
    IdentifyIn,
    PageIn,
    ScreenIn,
    TrackIn,
)
from apps.messaging.api import ConsentIn
from apps.messaging.api import router as messaging_router

WRITE_KEY_WHERE = (
    "; or Segment's write key: Basic auth with the key as user name, or writeKey in the body"
)

# Bodies the endpoints parse themselves, documented as components.
DOCUMENTED_BODIES = (IdentifyIn, TrackIn, PageIn, ScreenIn, GroupIn, AliasIn, BatchIn, ConsentIn)


class TenureAPI(NinjaAPI):
    def get_openapi_schema(self, *, path_prefix=None, path_params=None):
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in DOCUMENTED_BODIES:
            doc = model.model_json_schema(
                by_alias=True, ref_template="#/components/schemas/{model}"
            )
            components.update(doc.pop("$defs", {}))
            components[model.__name__] = doc
        return schema


api = TenureAPI(
    title="Tenure API",
    version="1",
    description="Usage data in, wire-compatible with Segment's HTTP Tracking API "
    "(identify, track, page, screen, group, alias, batch): point a Segment or RudderStack "
    "SDK's host at `https://<tenure>/api` and it posts to `/api/v1/...` as it always does. "
    "Consent (granted or revoked per channel and email topic). "
    "Text may not hold NUL characters or lone surrogates (PostgreSQL cannot store them), "
    "and timestamps lie between 1970 and one day ahead; such a value is refused with a 400 "
    "naming the field (in a batch, only its item).\n\n"
    "**Keys** (`manage.py create_api_key NAME`): `Authorization: Bearer <key>` everywhere; "
    "the ingestion calls also take Segment's write-key conventions, "
    '`Authorization: Basic base64("<key>:")` (the key as user name, any password) or '
    "`writeKey` in the JSON body.\n\n"
    "**Bodies** are JSON whatever the Content-Type says (`application/json`, `text/plain`, "
    "`application/x-www-form-urlencoded`: what the SDKs send), plain or with "
    "`Content-Encoding: gzip`. **Limits**, as Segment's: API_MAX_BODY_BYTES as sent "
    "(1 MiB); once decompressed, SEGMENT_MAX_CALL_BYTES per single call (32 KiB) and "
    "SEGMENT_MAX_BATCH_BYTES per batch (500 KiB); SEGMENT_MAX_BATCH_ITEMS items per batch "
    "(2,500). Over a limit the answer is 413 naming it; a gzip stream that is corrupt is a "
    "400. Bad input never gets a 5xx (the SDKs retry those).",
    urls_namespace="api-v1",
    openapi_url="/openapi.json",
    docs_url="/docs",
)
api.add_router("", customers_router)
api.add_router("", messaging_router)


@api.exception_handler(AuthenticationError)
def _unauthorized(request: HttpRequest, exc: AuthenticationError):
    # The ingestion calls say where else a Segment client may put its key.
    match = request.resolver_match
    where = WRITE_KEY_WHERE if match and match.url_name in INGESTION_ENDPOINTS else ""
    message = f"missing or invalid API key (Authorization: Bearer <key>{where})"
    return api.create_response(request, error_body(401, message), status=401)


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError):
    return api.create_response(
        request, error_body(exc.status_code, exc.message), status=exc.status_code
    )


ERROR_CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 413: "too_large"}


def error_body(status: int, message: str) -> dict:
    """`error` (Tenure's own clients read it) and `code` + `message`: the
    RudderStack SDK reads an error answer's `code` and `message`, and without
    them takes the answer for a network failure and retries it."""
    return {"error": message, "code": ERROR_CODES.get(status, str(status)), "message": message}
