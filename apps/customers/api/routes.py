"""The ingestion API, wire-compatible with Segment's HTTP Tracking API:
`POST /api/v1/identify|track|page|screen|group|alias|batch`, so an SDK whose
host is set to `https://<tenure>/api` posts where it always does.

Bodies are read here rather than by ninja (`wire.py`: any Content-Type,
gzip, Segment's size limits), so that every refusal names its problem (the
JSON syntax error and where, or the offending field), and so a batch is
validated item by item: good items are stored, bad ones reported. Only a
body that is not JSON (400) or is too big (413) fails a whole request: the
SDKs retry 429 and 5xx, so bad input never gets a 5xx.
"""

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone
from ninja import Router
from ninja.errors import HttpError

from .. import services
from ..schemas import Accepted, BatchError, BatchOut, ErrorOut, parse_call
from . import wire
from .auth import ingestion_auth

router = Router(tags=["ingestion"])
# The endpoints' names (their URL names too): the Segment call types and batch.
INGESTION_ENDPOINTS = ("identify", "track", "page", "screen", "group", "alias", "batch")

# Every endpoint's refusals, all `{"error": "..."}` (ErrorOut).
ERRORS: dict[int | str, Any] = {400: ErrorOut, 401: ErrorOut, 413: ErrorOut}
_ERROR_DESCRIPTIONS = {
    400: "The body is not valid JSON, or a field is invalid: `error` names each "
    "offending field (`userId: Field required`, `traits.a.b: contains a NUL character`).",
    401: "No API key, or a wrong or revoked one.",
    413: "The body is over API_MAX_BODY_BYTES (1 MiB by default).",
}
_WIRE = (
    " The body is read as JSON whatever its Content-Type (`application/json`, "
    "`text/plain`, `application/x-www-form-urlencoded`), and may be sent with "
    "`Content-Encoding: gzip`. The key may be sent as Basic auth's user name "
    "(Segment's write key), as `writeKey` in the body, or as a Bearer token."
)
_413 = {
    "call": "The body is over API_MAX_BODY_BYTES as sent (1 MiB), or over "
    "SEGMENT_MAX_CALL_BYTES once decompressed (32 KiB, Segment's limit per call). "
    "Not worth retrying: the SDKs drop it.",
    "batch": "The body is over API_MAX_BODY_BYTES as sent (1 MiB), over "
    "SEGMENT_MAX_BATCH_BYTES once decompressed (500 KiB, Segment's limit per batch), "
    "or `batch` has more than SEGMENT_MAX_BATCH_ITEMS items (2,500). "
    "Not worth retrying: the SDKs drop it.",
}


def body_doc(schema_name: str, *, ok: str, too_big: str | None = None) -> dict:
    """The OpenAPI of an endpoint that reads its body itself: the body's
    schema, and what each answer means (`ok` for the 200, `too_big` for the
    413 when its limits are not only API_MAX_BODY_BYTES).

    Only `application/json` is listed: the other types are the same JSON
    under another name, and a client generated from the document (or a
    fuzzer) would encode a form type as a form."""
    ref = {"$ref": f"#/components/schemas/{schema_name}"}
    descriptions = {200: ok, **_ERROR_DESCRIPTIONS}
    if too_big:
        descriptions[413] = too_big
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": ref}}},
        "responses": {status: {"description": text} for status, text in descriptions.items()},
    }


def read_json_object(request: HttpRequest) -> dict:
    """The body as a JSON object (gzip allowed), or a 400 that says what is
    wrong with it: for endpoints that take no Segment call (consent)."""
    return wire.json_object(wire.body_bytes(request, limit=wire.ANY))


def _single_call(kind: str, *, summary: str, schema: str, ok: str) -> Callable:
    """The endpoint of one call type: the path names the type. A body may
    leave `type` out (Segment's SDKs send it, the same); another type is a
    client's mistake, refused as the document says (the type is a constant)."""

    def endpoint(request: HttpRequest):
        body = wire.payload(request, limit=wire.CALL)
        body.pop("writeKey", None)
        said = body.setdefault("type", kind)
        if said != kind:
            got = repr(said) if isinstance(said, str) and len(said) <= 50 else type(said).__name__
            raise HttpError(400, f"type: must be {kind!r} on /{kind} (or left out), got {got}")
        try:
            call = parse_call(body)
        except ValueError as exc:
            raise HttpError(400, str(exc)) from None
        services.ingest([call], received_at=timezone.now())
        return Accepted()

    endpoint.__name__ = kind
    endpoint.__doc__ = summary
    return router.post(
        f"/{kind}",
        description=summary + _WIRE,
        response={200: Accepted, **ERRORS},
        auth=ingestion_auth(wire.CALL),
        # The ids the endpoints had when they lived in apps/customers/api.py:
        # generated clients name their methods after them.
        operation_id=f"apps_customers_api_{kind}",
        openapi_extra=body_doc(schema, ok=ok, too_big=_413["call"]),
    )(endpoint)


identify = _single_call(
    "identify",
    summary="Create or update a customer. Traits merge into the stored ones.",
    schema="IdentifyIn",
    ok="The customer is stored.",
)
track = _single_call(
    "track",
    summary="Record an event. A repeated `messageId` stores nothing and still succeeds.",
    schema="TrackIn",
    ok="The event is stored (or was already, by `messageId`).",
)
page = _single_call(
    "page",
    summary="A page view, stored as a `page_viewed` event (name, category, URL path, properties).",
    schema="PageIn",
    ok="The page view is stored (or was already, by `messageId`).",
)
screen = _single_call(
    "screen",
    summary="A mobile screen view, stored as a `screen_viewed` event.",
    schema="ScreenIn",
    ok="The screen view is stored (or was already, by `messageId`).",
)
group = _single_call(
    "group",
    summary="The customer belongs to an account (`groupId`); the account's traits "
    "merge into the stored ones.",
    schema="GroupIn",
    ok="The account and the membership are stored.",
)
alias = _single_call(
    "alias",
    summary="`previousId` and `userId` are one person: the previous profile is merged "
    "into the customer.",
    schema="AliasIn",
    ok="The profiles are merged (or already were).",
)


_BATCH = (
    "Many calls at once, each with its `type`. Valid items are stored; invalid ones are "
    "reported by index and nothing of them is written. The envelope's `sentAt` applies to "
    "the items that have none, and its `context` lies under each item's own."
)


@router.post(
    "/batch",
    response={200: BatchOut, **ERRORS},
    auth=ingestion_auth(wire.BATCH),
    operation_id="apps_customers_api_batch",
    description=_BATCH + _WIRE,
    openapi_extra=body_doc(
        "BatchIn",
        ok="The valid items are stored, even when others are refused: each refused "
        "item is listed in `errors` by its index, with the field at fault, and nothing "
        "of it is written. A 400 is only for a body that is not a batch at all.",
        too_big=_413["batch"],
    ),
)
def batch(request: HttpRequest):
    """Many calls at once (see `_BATCH`)."""
    body = wire.payload(request, limit=wire.BATCH)
    items = body.get("batch")
    if not isinstance(items, list):
        raise HttpError(400, "batch: must be a list of calls")
    limit = settings.SEGMENT_MAX_BATCH_ITEMS
    if len(items) > limit:
        raise HttpError(
            413, f"batch has {len(items)} items, at most {limit} (SEGMENT_MAX_BATCH_ITEMS)"
        )
    wire.refuse_oversize_items(request, items)
    envelope_apply(items, sent_at=body.get("sentAt"), context=body.get("context"))
    calls, errors = [], []
    for index, item in enumerate(items):
        try:
            calls.append(parse_call(item))
        except ValueError as exc:
            errors.append(BatchError(index=index, error=str(exc)))
    services.ingest(calls, received_at=timezone.now())
    return BatchOut(accepted=len(calls), errors=errors)


def envelope_apply(items: list, *, sent_at: Any, context: Any) -> None:
    """What a batch's envelope says for all its items, written onto them
    (in place: they were parsed for this request). `sentAt` goes to the items
    without one (an invalid one is then refused with each of them, naming
    it). A `context` object is merged under an item's own (the item's keys
    win); an item with no context takes a copy of it."""
    if sent_at is None and context is None:
        return
    for item in items:
        if type(item) is not dict:
            continue  # refused by parse_call, naming what it is
        if sent_at is not None and item.get("sentAt") is None:
            item["sentAt"] = sent_at
        if context is not None:
            own = item.get("context")
            if own is None:
                item["context"] = dict(context) if type(context) is dict else context
            elif type(own) is dict and type(context) is dict:
                item["context"] = {**context, **own}
