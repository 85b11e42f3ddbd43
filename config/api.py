"""The public HTTP API under /api/v1/ (django-ninja: its schemas are the same
pydantic models the services use, and the OpenAPI document comes from them)."""

from django.http import HttpRequest
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError

from apps.customers.api import router as customers_router
from apps.customers.schemas import BatchIn, IdentifyIn, TrackIn
from apps.messaging.api import ConsentIn
from apps.messaging.api import router as messaging_router

# Bodies the endpoints parse themselves, documented as components.
DOCUMENTED_BODIES = (IdentifyIn, TrackIn, BatchIn, ConsentIn)


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
    description="Usage data in (identify, track, batch), Segment-spec shaped; consent "
    "(granted or revoked per channel and email topic). "
    "Text may not hold NUL characters or lone surrogates (PostgreSQL cannot store them), "
    "and timestamps lie between 1970 and one day ahead; such a value is refused with a 400 "
    "naming the field (in a batch, only its item). "
    "Authenticate with `Authorization: Bearer <key>` (`manage.py create_api_key NAME`).",
    urls_namespace="api-v1",
    openapi_url="/openapi.json",
    docs_url="/docs",
)
api.add_router("", customers_router)
api.add_router("", messaging_router)


@api.exception_handler(AuthenticationError)
def _unauthorized(request: HttpRequest, exc: AuthenticationError):
    return api.create_response(
        request, {"error": "missing or invalid API key (Authorization: Bearer <key>)"}, status=401
    )


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError):
    return api.create_response(request, {"error": exc.message}, status=exc.status_code)
