"""The builder's JSON API (`/builder/api/`): it speaks the journey file format
(DESIGN.md), and every write goes through the journeys' services, so the
canvas can do nothing the admin or `import_journey` could not.

Who may call it: logged-in, active staff (the builder is a staff tool), with
`journeys.view_journey` (or `change_journey`) to read and
`journeys.change_journey` to write, so the `Marketer` and `Viewer` groups
work here as in the admin. Writes carry the CSRF token the page hands to the
front end (`X-CSRFToken`); a write without it is refused.

Every refusal is JSON: `{"error": "...", "errors": [{"path", "message",
"node", "field"}]}`, the paths those of `parse_journey` (`nodes[welcome].
template`), so the canvas can put each problem on the node it is about.
"""

import json
import logging
import re
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any, Literal, TypeVar

from django.http import HttpRequest, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from apps.journeys import services
from apps.journeys.graph import (
    MAX_DEPTH,
    NODE_ID_RE,
    JourneyError,
    data_problems,
    parse_journey,
    text_problem,
)
from apps.journeys.models import Journey
from apps.journeys.simulation import MAX_DAYS, SimulationError, journey_simulate
from apps.messaging.models import Template
from apps.segments.conditions import ConditionError, validate_definition

from . import catalog, selectors

logger = logging.getLogger(__name__)

VIEW_PERMISSION = "journeys.view_journey"
CHANGE_PERMISSION = "journeys.change_journey"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# A preview's customer: an external id, email or phone (the longest is 254).
MAX_TERM = 254
NODE_PATH_RE = re.compile(r"^nodes\[([^\]]+)\](?:\.(.+))?$")


class ApiError(Exception):
    """A refusal, answered as JSON with this status."""

    def __init__(self, status: int, error: str, errors: list[dict] | None = None):
        super().__init__(error)
        self.status, self.error, self.errors = status, error, errors or []

    def response(self) -> JsonResponse:
        body: dict[str, Any] = {"error": self.error}
        if self.errors:
            body["errors"] = self.errors
        return JsonResponse(body, status=self.status)


def can_read(user) -> bool:
    # As in the admin, the right to change includes the right to look.
    return user.has_perm(VIEW_PERMISSION) or user.has_perm(CHANGE_PERMISSION)


def can_change(user) -> bool:
    return user.has_perm(CHANGE_PERMISSION)


class _JsonCsrf(CsrfViewMiddleware):
    """Django's own CSRF check, refusing in JSON instead of the HTML page."""

    def _reject(self, request, reason):
        return JsonResponse(
            {
                "error": f"CSRF check failed: {reason} Reload the builder (the page carries "
                "the token) and try again.",
            },
            status=403,
        )


def _needs_csrf(request):  # the callback the check is run for (not exempt)
    return None


_csrf = _JsonCsrf(_needs_csrf)


def endpoint(*methods: str, write: bool = False) -> Callable:
    """An API view: methods allowed, staff and permission checks, CSRF on
    writes, JSON refusals. `write` needs `journeys.change_journey`."""

    def wrap(view: Callable) -> Callable:
        @wraps(view)
        def inner(request: HttpRequest, *args, **kwargs):
            if request.method not in methods:
                response = JsonResponse(
                    {"error": f"method {request.method} not allowed; use {', '.join(methods)}"},
                    status=405,
                )
                response["Allow"] = ", ".join(methods)
                return response
            user = request.user
            if not user.is_authenticated:
                return ApiError(401, "log in first: the builder is for staff").response()
            if not (user.is_active and user.is_staff):
                return ApiError(403, "permission denied: the builder is for staff").response()
            if write and not can_change(user):
                return ApiError(
                    403, f"permission denied: changing journeys needs {CHANGE_PERMISSION}"
                ).response()
            if not can_read(user):
                return ApiError(
                    403, f"permission denied: reading journeys needs {VIEW_PERMISSION}"
                ).response()
            if request.method not in SAFE_METHODS:
                refused = _csrf.process_view(request, _needs_csrf, (), {})
                if refused is not None:
                    return refused
            try:
                return view(request, *args, **kwargs)
            except ApiError as exc:
                return exc.response()

        # The check above is the CSRF check (answering in JSON); the
        # middleware's own would answer an HTML page.
        return csrf_exempt(never_cache(inner))

    return wrap


# --- request bodies -----------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PublishIn(_Body):
    in_flight: Literal["stay", "migrate"] = "stay"
    mapping: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _mapping_only_to_migrate(self) -> "PublishIn":
        if self.in_flight == "stay" and self.mapping:
            raise ValueError("mapping: only goes with in_flight 'migrate'")
        return self


class BacktestIn(_Body):
    days: int = Field(30, ge=1, le=MAX_DAYS)
    draft: bool = False
    segment_step_minutes: int = Field(60, ge=1, le=24 * 60)


BodyT = TypeVar("BodyT", bound=BaseModel)


class ConditionIn(_Body):
    condition: Any
    context: Literal["journey", "segment"] = "journey"


def _json(request: HttpRequest) -> Any:
    """The body's JSON, refused (400, naming the field) when it holds what
    nothing here can store or walk: a NUL, a lone surrogate, `NaN` or
    `1e400`, nesting past graph.MAX_DEPTH (each answered 500 before)."""
    try:
        data = json.loads(request.body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = (
            f" (line {exc.lineno}, column {exc.colno})"
            if isinstance(exc, json.JSONDecodeError)
            else ""
        )
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        raise ApiError(400, f"body: not valid JSON: {reason}{where}") from None
    except RecursionError:
        raise ApiError(400, f"body: nested more than {MAX_DEPTH} levels deep") from None
    problems = data_problems(data)
    if problems:
        raise _refusal(JourneyError(problems), data)
    return data


def _body(request: HttpRequest, model: type[BodyT]) -> BodyT:
    data = _json(request)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ApiError(400, "body: must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            path = ".".join(str(p) for p in err["loc"]) or "body"
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown field"
            elif err["type"] == "missing":
                message = "required"
            if ": " in message and path == "body":
                path, _, message = message.partition(": ")
            errors.append({"path": path, "message": message, "node": None, "field": path})
        summary = "; ".join(f"{e['path']}: {e['message']}" for e in errors)
        raise ApiError(400, summary, errors) from None


def journey_errors(exc: JourneyError, data: Any = None) -> list[dict]:
    """The problems of a journey file, each with the node it is on (the id,
    also when the path names the node by its place in the list) and the
    field within it; `node` is None for the journey's own settings."""
    nodes = data.get("nodes") if isinstance(data, dict) else None
    out = []
    for path, message in exc.errors:
        if message.endswith("(got '')"):
            # A picker left empty: the slug rules are not the point.
            message = "required: it is empty"
        node, field = None, path
        match = NODE_PATH_RE.match(path)
        if match:
            key, field = match.group(1), match.group(2) or ""
            node = key
            if key.isdigit() and isinstance(nodes, list) and int(key) < len(nodes):
                raw = nodes[int(key)]
                found = raw.get("id") if isinstance(raw, dict) else None
                node = found if isinstance(found, str) and found else key
        out.append({"path": path, "message": message, "node": node, "field": field})
    return out


def _refusal(exc: JourneyError, data: Any = None, *, status: int = 400) -> ApiError:
    errors = journey_errors(exc, data)
    count = len(errors)
    head = errors[0]["path"] + ": " + errors[0]["message"] if errors else str(exc)
    more = f" (and {count - 1} more)" if count > 1 else ""
    return ApiError(status, head + more, errors)


def _journey(slug: str) -> Journey:
    journey = Journey.objects.select_related("live_version").filter(slug=slug).first()
    if journey is None:
        raise ApiError(404, f"no journey {slug!r}")
    return journey


def _state(request: HttpRequest, journey: Journey, **extra) -> JsonResponse:
    journey.refresh_from_db()
    state = selectors.journey_state(journey, can_change=can_change(request.user))
    return JsonResponse({**state, **extra})


# --- endpoints ------------------------------------------------------------------------------


@endpoint("GET")
def catalog_view(request: HttpRequest) -> JsonResponse:
    """The palette and the pickers: node kinds, triggers, templates, segments,
    event names and the condition examples."""
    return JsonResponse(catalog.builder_catalog())


@endpoint("GET", "POST")
def journeys_view(request: HttpRequest) -> JsonResponse:
    """GET: the journeys. POST (a journey file): a new journey, saved as a
    draft (needs the change permission)."""
    if request.method == "GET":
        return JsonResponse({"journeys": selectors.journey_list()})
    if not can_change(request.user):
        raise ApiError(403, f"permission denied: changing journeys needs {CHANGE_PERMISSION}")
    data = _json(request)
    try:
        journey = services.journey_draft_save(Journey(), data)
    except JourneyError as exc:
        raise _refusal(exc, data) from None
    logger.info("builder: %s created journey %s", request.user, journey.slug)
    response = _state(request, journey, url=reverse("builder:canvas", args=[journey.slug]))
    response.status_code = 201
    return response


@endpoint("GET")
def journey_view(request: HttpRequest, slug: str) -> JsonResponse:
    """The journey as the canvas loads it (see selectors.journey_state)."""
    return _state(request, _journey(slug))


@endpoint("PUT", "POST", write=True)
def draft_view(request: HttpRequest, slug: str) -> JsonResponse:
    """Save the draft (the body is the journey file). An invalid file is
    refused whole, every problem listed with its node; nothing is saved."""
    journey = _journey(slug)
    data = _json(request)
    try:
        services.journey_draft_save(journey, data)
    except JourneyError as exc:
        raise _refusal(exc, data) from None
    return _state(request, journey, saved=True)


@endpoint("POST", write=True)
def validate_view(request: HttpRequest, slug: str) -> JsonResponse:
    """Check a journey file as saving and publishing would, without saving:
    `{"valid": bool, "errors": [...]}` (200 either way: the check ran)."""
    journey = _journey(slug)
    data = _json(request)
    errors: list[dict] = []
    try:
        definition = parse_journey(data)
    except JourneyError as exc:
        errors = journey_errors(exc, data)
    else:
        if definition.slug != journey.slug:
            message = f"must stay {journey.slug!r}: a journey's slug never changes"
            errors = [{"path": "slug", "message": message, "node": None, "field": "slug"}]
    return JsonResponse({"valid": not errors, "errors": errors})


@endpoint("POST", write=True)
def publish_view(request: HttpRequest, slug: str) -> JsonResponse:
    """Publish the saved draft as the next version. `in_flight`: "stay"
    (customers finish the version they entered) or "migrate" with `mapping`
    {old node: new node} (they take their next step in the new version)."""
    journey = _journey(slug)
    body = _body(request, PublishIn)
    migrate = {"mapping": body.mapping} if body.in_flight == "migrate" else None
    try:
        version = services.journey_publish(
            journey, now=timezone.now(), user=request.user, migrate=migrate
        )
    except JourneyError as exc:
        status = 409 if any(path == "status" for path, _ in exc.errors) else 400
        raise _refusal(exc, journey.draft, status=status) from None
    moved = getattr(version, "migrated", 0)
    logger.info(
        "builder: %s published %s v%s (%s moved)", request.user, slug, version.number, moved
    )
    return _state(request, journey, published={"version": version.number, "migrated": moved})


def _status_change(request: HttpRequest, slug: str, change: Callable) -> JsonResponse:
    journey = _journey(slug)
    try:
        change(journey, now=timezone.now())
    except JourneyError as exc:
        raise _refusal(exc, status=409) from None
    logger.info("builder: %s set %s %s", request.user, slug, journey.status)
    return _state(request, journey)


@endpoint("POST", write=True)
def pause_view(request: HttpRequest, slug: str) -> JsonResponse:
    """Pause a live journey: nothing advances and no one enters until resumed."""
    return _status_change(request, slug, services.journey_pause)


@endpoint("POST", write=True)
def resume_view(request: HttpRequest, slug: str) -> JsonResponse:
    """Resume a paused journey; overdue steps catch up (stale sends skipped)."""
    return _status_change(request, slug, services.journey_resume)


@endpoint("POST", write=True)
def backtest_view(request: HttpRequest, slug: str) -> JsonResponse:
    """Replay the last `days` of recorded events through the live version (or
    the saved draft) in a transaction that is rolled back; per-node counts for
    the canvas. It writes nothing, but it is work: those who may change the
    journey may run it (as in the admin). It runs in the request."""
    journey = _journey(slug)
    body = _body(request, BacktestIn)
    try:
        result = journey_simulate(
            journey,
            days=body.days,
            now=timezone.now(),
            draft=body.draft,
            segment_step=timedelta(minutes=body.segment_step_minutes),
        )
    except SimulationError as exc:
        raise ApiError(400, str(exc)) from None
    return JsonResponse(result.as_dict())


@endpoint("GET")
def counts_view(request: HttpRequest, slug: str) -> JsonResponse:
    """Live counts per node (entered, waiting, sent, delivered, opened,
    clicked, converted) and the journey's enrollments by state; `as_of` says
    when they were counted (a big journey's counts are cached briefly)."""
    journey = _journey(slug)
    return JsonResponse(selectors.live_counts(journey, now=timezone.now()))


@endpoint("GET")
def node_customers_view(request: HttpRequest, slug: str, node_id: str) -> JsonResponse:
    """The customers behind one count: `?metric=waiting` (or entered, sent, …)."""
    journey = _journey(slug)
    if not NODE_ID_RE.match(node_id):
        raise ApiError(
            400, f"node: not a node id (letters, digits, _ and -, at most 100): {node_id[:100]!r}"
        )
    metric = request.GET.get("metric", "waiting")
    try:
        return JsonResponse(selectors.node_customers(journey, node_id, metric))
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


@endpoint("GET")
def template_preview_view(request: HttpRequest, slug: str) -> JsonResponse:
    """A stored template rendered for a customer (`?customer=` external id,
    email or phone; the newest reachable customer by default)."""
    template = Template.objects.filter(slug=slug).first()
    if template is None:
        raise ApiError(404, f"no template {slug!r}")
    term = request.GET.get("customer", "")
    problem = text_problem(term) if len(term) <= MAX_TERM else f"longer than {MAX_TERM} characters"
    if problem:
        raise ApiError(400, f"customer: {problem}")
    customer = selectors.preview_customer(template.channel, term)
    if customer is None:
        if term.strip():
            raise ApiError(
                400, f"customer: no customer has the external id, email or phone {term!r}"
            )
        raise ApiError(400, "customer: there are no customers yet to preview with")
    return JsonResponse(selectors.template_preview(template, customer=customer, now=timezone.now()))


@endpoint("POST")
def condition_check_view(request: HttpRequest) -> JsonResponse:
    """Check a condition as a branch or goal would (the segment editor's
    rules): `{"valid": true}` or the error with the path it names."""
    body = _body(request, ConditionIn)
    try:
        validate_definition(body.condition, context=body.context)
    except ConditionError as exc:
        path, _, message = str(exc).partition(": ")
        return JsonResponse({"valid": False, "error": str(exc), "path": path, "message": message})
    return JsonResponse({"valid": True})


@endpoint("GET")
def api_root(request: HttpRequest) -> JsonResponse:
    """What this API offers (its addresses relative to here)."""
    return JsonResponse(
        {
            "endpoints": {
                "catalog": "GET catalog",
                "journeys": "GET journeys, POST journeys (a journey file)",
                "journey": "GET journeys/<slug>",
                "draft": "PUT journeys/<slug>/draft (a journey file)",
                "validate": "POST journeys/<slug>/validate (a journey file)",
                "publish": 'POST journeys/<slug>/publish {"in_flight": "stay"|"migrate", '
                '"mapping": {old: new}}',
                "pause": "POST journeys/<slug>/pause",
                "resume": "POST journeys/<slug>/resume",
                "backtest": 'POST journeys/<slug>/backtest {"days": 30, "draft": false}',
                "counts": "GET journeys/<slug>/counts",
                "customers": "GET journeys/<slug>/nodes/<node>/customers?metric=waiting",
                "preview": "GET templates/<slug>/preview?customer=<external id>",
                "condition": 'POST conditions/check {"condition": {...}}',
            }
        }
    )
