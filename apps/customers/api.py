"""The ingestion API: Segment-spec shaped identify, track and batch calls.

Bodies are parsed here rather than by ninja so that every refusal names its
problem (the JSON syntax error and where, or the offending field), and so a
batch is validated item by item: good items are stored, bad ones reported.
"""

import json
from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from ninja import Router
from ninja.errors import HttpError
from ninja.security import HttpBearer
from pydantic import ValidationError

from apps.core import jsonsafe

from . import services
from .schemas import (
    Accepted,
    BatchError,
    BatchOut,
    ErrorOut,
    IdentifyIn,
    TrackIn,
    describe_errors,
    parse_call,
)


class ApiKeyAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str):
        return services.api_key_authenticate(token, now=timezone.now())


router = Router(auth=ApiKeyAuth(), tags=["ingestion"])

# Every endpoint's refusals, all `{"error": "..."}` (ErrorOut).
ERRORS: dict[int | str, Any] = {400: ErrorOut, 401: ErrorOut, 413: ErrorOut}
_ERROR_DESCRIPTIONS = {
    400: "The body is not valid JSON, or a field is invalid: `error` names each "
    "offending field (`userId: Field required`, `traits.a.b: contains a NUL character`).",
    401: "No API key, or a wrong or revoked one.",
    413: "The body is over API_MAX_BODY_BYTES (1 MiB by default).",
}


def body_doc(schema_name: str, *, ok: str) -> dict:
    """The OpenAPI of an endpoint that reads its body itself: the body's
    schema, and what each answer means (`ok` for the 200)."""
    ref = {"$ref": f"#/components/schemas/{schema_name}"}
    descriptions = {200: ok, **_ERROR_DESCRIPTIONS}
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": ref}}},
        "responses": {status: {"description": text} for status, text in descriptions.items()},
    }


def read_json_object(request: HttpRequest) -> dict:
    """The body as a JSON object, or a 400 that says what is wrong with it."""
    if not request.body:
        raise HttpError(400, "request body is empty; expected a JSON object")
    try:
        data = jsonsafe.loads(request.body.decode("utf-8"))
    except UnicodeDecodeError:
        raise HttpError(400, "request body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise HttpError(
            400,
            f"request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
        ) from None
    except ValueError as exc:
        raise HttpError(400, f"request body {exc}") from None
    if not isinstance(data, dict):
        raise HttpError(400, f"request body must be a JSON object, got {type(data).__name__}")
    return data


def _validated(model, data: dict):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise HttpError(400, describe_errors(exc)) from None


@router.post(
    "/identify",
    response={200: Accepted, **ERRORS},
    openapi_extra=body_doc("IdentifyIn", ok="The customer is stored."),
)
def identify(request: HttpRequest):
    """Create or update a customer. Traits merge into the stored ones."""
    call = _validated(IdentifyIn, read_json_object(request))
    services.ingest([call], received_at=timezone.now())
    return Accepted()


@router.post(
    "/track",
    response={200: Accepted, **ERRORS},
    openapi_extra=body_doc("TrackIn", ok="The event is stored (or was already, by `messageId`)."),
)
def track(request: HttpRequest):
    """Record an event. A repeated `messageId` stores nothing and still succeeds."""
    call = _validated(TrackIn, read_json_object(request))
    services.ingest([call], received_at=timezone.now())
    return Accepted()


@router.post(
    "/batch",
    response={200: BatchOut, **ERRORS},
    openapi_extra=body_doc(
        "BatchIn",
        ok="The valid items are stored, even when others are refused: each refused "
        "item is listed in `errors` by its index, with the field at fault, and nothing "
        "of it is written. A 400 is only for a body that is not a batch at all.",
    ),
)
def batch(request: HttpRequest):
    """Many identify/track calls at once. Valid items are stored; invalid ones
    are reported by index and nothing of them is written."""
    items = read_json_object(request).get("batch")
    if not isinstance(items, list):
        raise HttpError(400, "batch: must be a list of identify/track calls")
    calls, errors = [], []
    for index, item in enumerate(items):
        try:
            calls.append(parse_call(item))
        except ValueError as exc:
            errors.append(BatchError(index=index, error=str(exc)))
    services.ingest(calls, received_at=timezone.now())
    return BatchOut(accepted=len(calls), errors=errors)
