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

_ERRORS: dict[int | str, Any] = {400: ErrorOut, 401: ErrorOut, 413: ErrorOut}


def _body_doc(schema_name: str) -> dict:
    ref = {"$ref": f"#/components/schemas/{schema_name}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


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
    "/identify", response={200: Accepted, **_ERRORS}, openapi_extra=_body_doc("IdentifyIn")
)
def identify(request: HttpRequest):
    """Create or update a customer. Traits merge into the stored ones."""
    call = _validated(IdentifyIn, read_json_object(request))
    services.ingest([call], received_at=timezone.now())
    return Accepted()


@router.post("/track", response={200: Accepted, **_ERRORS}, openapi_extra=_body_doc("TrackIn"))
def track(request: HttpRequest):
    """Record an event. A repeated `messageId` stores nothing and still succeeds."""
    call = _validated(TrackIn, read_json_object(request))
    services.ingest([call], received_at=timezone.now())
    return Accepted()


@router.post("/batch", response={200: BatchOut, **_ERRORS}, openapi_extra=_body_doc("BatchIn"))
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
