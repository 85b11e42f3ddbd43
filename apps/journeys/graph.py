"""The journey file (DESIGN.md): typed models, validation, a canonical form.

`parse_journey(data)` turns a journey file into a `JourneyDefinition` or raises
`JourneyError`, whose `errors` list every problem found as `(path, message)`,
the path naming the node by its id: `nodes[welcome].template: unknown
template 'welcom'`. A marketer fixing a file sees all of its problems at once,
not one per attempt.

What is refused: unknown node types and fields, duplicate ids, edges to nodes
that do not exist, nodes the start cannot reach, cycles with no wait, wait or
wait_until or wait_for_event on them (they would spin the engine), durations
that are zero, negative or in an unknown unit, cron expressions that are not
five valid fields, webhook URLs that are not http(s), invalid conditions (the
segments' language, journey context), and with `check_refs` templates and
segments that do not exist, or a template of the wrong channel for its node,
and surveys that do not exist or have no template for the node's channel.

Semantics the engine relies on:
- A node's `next` (or a branch's `yes`/`no`, a split branch's `next`) names
  the node that follows. A node without `next` ends the journey: the
  enrollment completes there, as at an `exit` node.
- `wait_for_event` follows `yes` when the event arrives before `timeout`
  (matching `where`, property → value equality), `no` otherwise.
- `split` weights are relative (2 and 1 send two thirds and one third).
- Durations are in days, hours and minutes (summed); `wait_until.time` is
  HH:MM in the customer's zone, `weekdays` names days (`mon` … `sun`).
- A `schedule` trigger's cron is five fields evaluated in UTC.
- `ui` on a node is the builder's (position and the like); the engine ignores it.

The canonical form (`canonical_journey`) is what is stored and exported: the
typed fields in a fixed order and free-form objects (conditions, filters,
traits) with sorted keys, so an export reads the same whatever order the file
had (jsonb keeps none), and importing it and exporting again gives the same
bytes.

This module is one thing, the journey file's schema, and stays whole past
~600 lines on purpose: the typed models, the checks that refuse a file
(graph shape, references, data no file may hold) and the error messages that
name a field, and the canonical form are each written against the others'
details; what reads or runs a parsed definition (the engine, the builder,
import and export, version migration) lives elsewhere.
"""

import re
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "NODE_TYPES",
    "WAIT_TYPES",
    "JourneyDefinition",
    "JourneyError",
    "canonical_journey",
    "cron_fields",
    "data_problems",
    "parse_journey",
    "text_problem",
]

MAX_NODE_ID = 100  # Enrollment.current_node's length
NODE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
SLUG_RE = re.compile(r"^[-a-zA-Z0-9_]{1,100}$")
TRAIT_RE = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
SECRET_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
HHMM_RE = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_DURATION = timedelta(days=3660)  # ten years: longer is a typo
# How deep a journey file may nest (conditions, traits, the builder's `ui`):
# deeper is no journey anyone writes, and Python's recursion (parsing,
# checking, storing) gives out near a thousand levels.
MAX_DEPTH = 64
CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")


class JourneyError(ValueError):
    """An invalid journey file. `errors` holds every problem as (path, message)."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = list(errors)
        super().__init__("; ".join(f"{path}: {message}" for path, message in self.errors))

    def lines(self) -> list[str]:
        return [f"{path}: {message}" for path, message in self.errors]


# --- small typed values ----------------------------------------------------------


def _node_id(value: str) -> str:
    if not NODE_ID_RE.match(value):
        raise ValueError(
            f"must be 1-{MAX_NODE_ID} letters, digits, _ or - (got {value!r}); "
            "node ids name nodes in edges and in error messages"
        )
    return value


def _slug(value: str) -> str:
    if not SLUG_RE.match(value):
        raise ValueError(f"must be a slug of letters, digits, _ or - (got {value!r})")
    return value


def _name(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _hhmm(value: str) -> str:
    if not HHMM_RE.match(value):
        raise ValueError(f"must be a time of day as HH:MM, 00:00 to 23:59 (got {value!r})")
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL with a host (got {value!r})")
    return value


def _trait_name(value: str) -> str:
    if not TRAIT_RE.match(value):
        raise ValueError(f"must be a trait name of letters, digits, _ or - (got {value!r})")
    return value


NodeId = Annotated[str, AfterValidator(_node_id)]
Slug = Annotated[str, AfterValidator(_slug)]
Name = Annotated[str, Field(max_length=200), AfterValidator(_name)]
EventName = Annotated[str, Field(min_length=1, max_length=200)]
TraitName = Annotated[str, AfterValidator(_trait_name)]
Scalar = str | int | float | bool | None


class _Strict(BaseModel):
    # Strict: "2" is not a number and true is not 1; a journey file says what it means.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


_UNIT_BOUND = 1_000_000  # days; timedelta holds up to 999,999,999


class Duration(_Strict):
    """days/hours/minutes, summed; more than zero, at most ten years."""

    # Each bounded by itself too, far above MAX_DURATION (which `_positive`
    # names): `timedelta(days=10**20)` overflowed before the sum could be
    # compared with it (a 500 in the builder).
    days: int = Field(0, ge=0, le=_UNIT_BOUND)
    hours: int = Field(0, ge=0, le=_UNIT_BOUND * 24)
    minutes: int = Field(0, ge=0, le=_UNIT_BOUND * 24 * 60)

    @model_validator(mode="before")
    @classmethod
    def _units(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = [k for k in data if k not in ("days", "hours", "minutes")]
            if unknown:
                raise ValueError(f"unknown unit {unknown[0]!r}; use days, hours or minutes")
            if not data:
                raise ValueError("needs days, hours or minutes")
        return data

    @model_validator(mode="after")
    def _positive(self) -> "Duration":
        if self.timedelta <= timedelta(0):
            raise ValueError("must be more than zero")
        if self.timedelta > MAX_DURATION:
            raise ValueError(f"must be at most {MAX_DURATION.days} days")
        return self

    @property
    def timedelta(self) -> timedelta:
        return timedelta(days=self.days, hours=self.hours, minutes=self.minutes)


class Ui(BaseModel):
    """The builder's layout data; open to what the builder needs."""

    model_config = ConfigDict(extra="allow", frozen=True)

    x: float = 0
    y: float = 0


# --- triggers ------------------------------------------------------------------------


def _where(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    for key, item in value.items():
        if not key:
            raise ValueError("property names must not be empty")
        if not isinstance(item, Scalar):
            raise ValueError(
                f"{key!r} must be a string, number, boolean or null (property equality)"
            )
    return value


Where = Annotated[dict[str, Any] | None, AfterValidator(_where)]


class EventTrigger(_Strict):
    type: Literal["event"]
    event: EventName
    where: Where = None


class SegmentTrigger(_Strict):
    type: Literal["segment_entered", "segment_exited"]
    segment: Slug


class DateTraitTrigger(_Strict):
    """Fires `offset_days` from the date in `trait` (negative: before it), at
    `at` in the customer's zone."""

    type: Literal["date_trait"]
    trait: TraitName
    offset_days: int = Field(ge=-3660, le=3660)
    at: Annotated[str, AfterValidator(_hhmm)] = "09:00"


class ScheduleTrigger(_Strict):
    """Enrolls the members of `segment` at each time the cron names (UTC)."""

    type: Literal["schedule"]
    cron: str
    segment: Slug

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        cron_fields(value)
        return value


def _type_tag(value: Any) -> str | None:
    """A trigger's or node's `type`, for the unions' discriminators: only a
    name (a list there raised TypeError: unhashable, a 500)."""
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if isinstance(kind, str) else None


Trigger = Annotated[
    Annotated[EventTrigger, Tag("event")]
    | Annotated[SegmentTrigger, Tag("segment_entered")]
    | Annotated[SegmentTrigger, Tag("segment_exited")]
    | Annotated[DateTraitTrigger, Tag("date_trait")]
    | Annotated[ScheduleTrigger, Tag("schedule")],
    Discriminator(_type_tag),
]
TRIGGER_TYPES = ("event", "segment_entered", "segment_exited", "date_trait", "schedule")


def cron_fields(expression: str) -> dict[str, str]:
    """The five fields of a cron expression by name, each checked (celery's
    crontab parser, the one beat itself uses); ValueError naming the field."""
    from celery.schedules import crontab

    parts = expression.split() if isinstance(expression, str) else []
    if len(parts) != 5:
        raise ValueError(
            f"must be five fields, minute hour day-of-month month day-of-week (got {expression!r})"
        )
    fields = dict(zip(CRON_FIELDS, parts, strict=True))
    for name, value in fields.items():
        try:
            crontab(**{name: value})
        except (ValueError, TypeError) as exc:
            label = name.replace("_", " ").replace("of year", "").strip()
            raise ValueError(f"bad {label} field {value!r}: {exc}") from None
    return fields


class Reentry(_Strict):
    """Whether a customer may enter again: `never`, `always`, or `after` N days
    since their last entry."""

    policy: Literal["never", "always", "after"]
    days: int | None = Field(None, ge=1, le=3660)

    @model_validator(mode="after")
    def _days(self) -> "Reentry":
        if self.policy == "after" and self.days is None:
            raise ValueError("'after' needs days")
        if self.policy != "after" and self.days is not None:
            raise ValueError(f"days only goes with the 'after' policy, not {self.policy!r}")
        return self


# --- nodes --------------------------------------------------------------------------------


class _Node(_Strict):
    id: NodeId
    ui: Ui | None = None

    def edges(self) -> Iterator[tuple[str, str]]:
        """(field path, target id) for each outgoing edge, in field order."""
        return iter(())


class _Linear(_Node):
    next: NodeId | None = None

    def edges(self) -> Iterator[tuple[str, str]]:
        if self.next is not None:
            yield "next", self.next


class _YesNo(_Node):
    yes: NodeId | None = None
    no: NodeId | None = None

    def edges(self) -> Iterator[tuple[str, str]]:
        if self.yes is not None:
            yield "yes", self.yes
        if self.no is not None:
            yield "no", self.no


class EmailNode(_Linear):
    """Send an email template. `over_cap`: what to do when a frequency cap is
    reached: skip the message (default) or defer it until the cap allows."""

    type: Literal["email"]
    template: Slug
    over_cap: Literal["skip", "defer"] | None = None


class SmsNode(_Linear):
    type: Literal["sms"]
    template: Slug
    over_cap: Literal["skip", "defer"] | None = None


class NpsSurveyNode(_Linear):
    """Ask the customer the NPS question of `survey` (apps/surveys) by
    `channel`: an email with the eleven score links, or an SMS asking for a
    reply with a number. Skipped for a customer surveyed within
    NPS_RESURVEY_AFTER_DAYS."""

    type: Literal["nps_survey"]
    survey: Slug
    channel: Literal["email", "sms"]


class WaitNode(_Linear):
    type: Literal["wait"]
    duration: Duration


class WaitUntilNode(_Linear):
    """Wait until the next `time` (HH:MM, customer's zone) on one of `weekdays`
    (any day when absent)."""

    type: Literal["wait_until"]
    time: Annotated[str, AfterValidator(_hhmm)]
    weekdays: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] | None = None

    @field_validator("weekdays")
    @classmethod
    def _days(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("must name at least one day (or leave weekdays out)")
            if len(set(value)) != len(value):
                raise ValueError("names a day twice")
        return value


class WaitForEventNode(_YesNo):
    type: Literal["wait_for_event"]
    event: EventName
    timeout: Duration
    where: Where = None


class BranchNode(_YesNo):
    type: Literal["branch"]
    condition: dict[str, Any]


class SplitBranch(_Strict):
    weight: int = Field(ge=1, le=1_000_000)
    next: NodeId | None = None


class SplitNode(_Node):
    """Sends each enrollment down one branch, stably, in proportion to weights."""

    type: Literal["split"]
    branches: list[SplitBranch] = Field(min_length=2, max_length=20)

    def edges(self) -> Iterator[tuple[str, str]]:
        for i, branch in enumerate(self.branches):
            if branch.next is not None:
                yield f"branches[{i}].next", branch.next


def _traits(value: dict[str, Any]) -> dict[str, Any]:
    if not value:
        raise ValueError("must set at least one trait")
    for key in value:
        _trait_name(key)
    return value


class UpdateTraitsNode(_Linear):
    """Merge `traits` into the customer's traits (a null value removes one)."""

    type: Literal["update_traits"]
    traits: Annotated[dict[str, Any], AfterValidator(_traits)]


class WebhookNode(_Linear):
    """POST the enrollment's context to `url`, HMAC-signed with the secret of
    that name (settings) when given; on failure after retries, `continue` to
    `next` (the failure recorded) or `fail` the enrollment."""

    type: Literal["webhook"]
    url: Annotated[str, Field(max_length=2000), AfterValidator(_http_url)]
    secret: str | None = Field(None, pattern=SECRET_NAME_RE.pattern)
    on_failure: Literal["continue", "fail"] = "continue"


class ExitNode(_Node):
    type: Literal["exit"]


NODE_CLASSES: dict[str, type[_Node]] = {
    "email": EmailNode,
    "sms": SmsNode,
    "nps_survey": NpsSurveyNode,
    "wait": WaitNode,
    "wait_until": WaitUntilNode,
    "wait_for_event": WaitForEventNode,
    "branch": BranchNode,
    "split": SplitNode,
    "update_traits": UpdateTraitsNode,
    "webhook": WebhookNode,
    "exit": ExitNode,
}
NODE_TYPES = tuple(NODE_CLASSES)
# A cycle through one of these takes time to go round; any other cycle spins.
WAIT_TYPES = frozenset({"wait", "wait_until", "wait_for_event"})
SEND_TYPES = frozenset({"email", "sms"})

Node = Annotated[
    Annotated[EmailNode, Tag("email")]
    | Annotated[SmsNode, Tag("sms")]
    | Annotated[NpsSurveyNode, Tag("nps_survey")]
    | Annotated[WaitNode, Tag("wait")]
    | Annotated[WaitUntilNode, Tag("wait_until")]
    | Annotated[WaitForEventNode, Tag("wait_for_event")]
    | Annotated[BranchNode, Tag("branch")]
    | Annotated[SplitNode, Tag("split")]
    | Annotated[UpdateTraitsNode, Tag("update_traits")]
    | Annotated[WebhookNode, Tag("webhook")]
    | Annotated[ExitNode, Tag("exit")],
    Discriminator(_type_tag),
]


# --- the definition -----------------------------------------------------------------


def _reentry(value: Any) -> Any:
    return {"policy": value} if isinstance(value, str) else value


class JourneyDefinition(_Strict):
    slug: Slug
    name: Name
    description: str = ""
    trigger: Trigger
    reentry: Annotated[Reentry, Field(default_factory=lambda: Reentry(policy="never"))]
    goal: dict[str, Any] | None = None
    exit_on_segment_exit: bool = False
    holdout_percent: int = Field(0, ge=0, le=100)
    start: NodeId
    nodes: list[Node] = Field(min_length=1)

    _by_id: dict[str, Any] = PrivateAttr(default_factory=dict)

    @field_validator("reentry", mode="before")
    @classmethod
    def _reentry_shorthand(cls, value: Any) -> Any:
        return _reentry(value)

    def model_post_init(self, __context: Any) -> None:
        self._by_id = {node.id: node for node in self.nodes}

    def node(self, node_id: str) -> Any:
        """The node with this id; KeyError naming it when there is none (a
        stored enrollment pointing at a node a mapping removed, say)."""
        try:
            return self._by_id[node_id]
        except KeyError:
            raise KeyError(f"journey {self.slug!r} has no node {node_id!r}") from None

    def has_node(self, node_id: str) -> bool:
        return node_id in self._by_id

    def successors(self, node_id: str) -> list[str]:
        """The ids the node can lead to, in field order (next; yes, no; branches)."""
        return [target for _, target in self.node(node_id).edges()]

    @property
    def node_ids(self) -> list[str]:
        return [node.id for node in self.nodes]

    @property
    def segment(self) -> str | None:
        """The trigger's segment (segment and schedule triggers), else None."""
        return getattr(self.trigger, "segment", None)


# --- parsing ------------------------------------------------------------------------------


TOP_FIELDS = tuple(JourneyDefinition.model_fields)
FREE_FORM = ("goal", "condition", "where", "traits")


def parse_journey(data: Any, *, check_refs: bool = True) -> JourneyDefinition:
    """The typed definition of a journey file, or JourneyError listing every
    problem. `check_refs` also looks up templates and segments (the engine,
    reading a version it has already accepted, can skip that)."""
    errors: list[tuple[str, str]] = []
    if not isinstance(data, dict):
        raise JourneyError([("journey", f"must be a JSON object, got {_kind(data)}")])
    if check_refs:  # a new file (a stored version was checked when it was one)
        problems = data_problems(data)
        if problems:
            raise JourneyError(problems)

    header_errors = _header_errors(data)
    errors.extend(header_errors)

    nodes_raw = data.get("nodes")
    parsed: list[_Node] = []
    ids_seen: dict[str, int] = {}  # id -> the index of its first node
    all_nodes_ok = isinstance(nodes_raw, list) and bool(nodes_raw)
    if "nodes" in data and not isinstance(nodes_raw, list):
        errors.append(("nodes", f"must be a list of nodes, got {_kind(nodes_raw)}"))
    elif isinstance(nodes_raw, list) and not nodes_raw:
        errors.append(("nodes", "needs at least one node"))
    for index, raw in enumerate(nodes_raw if isinstance(nodes_raw, list) else []):
        path = _node_path(raw, index)
        node_id = raw.get("id") if isinstance(raw, dict) else None
        if isinstance(node_id, str):
            if node_id in ids_seen:
                first = ids_seen[node_id]
                errors.append(
                    (path, f"duplicate id {node_id!r}: nodes {first} and {index} in the list")
                )
                all_nodes_ok = False
                continue
            ids_seen[node_id] = index
        node = _parse_node(raw, path, errors)
        if node is None:
            all_nodes_ok = False
        else:
            parsed.append(node)

    known = set(ids_seen)
    for node in parsed:
        for field, target in node.edges():
            if target not in known:
                errors.append((f"nodes[{node.id}].{field}", f"unknown node {target!r}"))
    start = data.get("start")
    if isinstance(start, str) and NODE_ID_RE.match(start) and ids_seen and start not in known:
        errors.append(("start", f"unknown node {start!r}"))
    elif all_nodes_ok and isinstance(start, str) and start in known:
        errors.extend(_graph_errors(parsed, start))

    trigger = data.get("trigger")
    trigger_ok = isinstance(trigger, dict) and not any(
        p == "trigger" or p.startswith(("trigger.", "trigger[")) for p, _ in header_errors
    )
    if data.get("exit_on_segment_exit") is True and trigger_ok and not trigger.get("segment"):
        errors.append(
            ("exit_on_segment_exit", "needs a trigger with a segment (segment or schedule)")
        )
    if isinstance(data.get("goal"), dict):
        errors.extend(_condition_errors(data["goal"], "goal", check_refs))
    for node in parsed:
        errors.extend(_node_ref_errors(node, check_refs))
    segment = trigger.get("segment") if trigger_ok else None
    if check_refs and segment and not _segment_exists(segment):
        errors.append(("trigger.segment", f"unknown segment {trigger['segment']!r}"))

    if errors:
        raise JourneyError(errors)
    try:
        return JourneyDefinition.model_validate(data)
    except ValidationError as exc:  # pragma: no cover - the checks above cover the model
        raise JourneyError(_pydantic_errors(exc, "")) from None


_MAX_DATA_PROBLEMS = 20


def data_problems(data: Any, *, max_depth: int = MAX_DEPTH) -> list[tuple[str, str]]:
    """(path, problem) for what no journey file (or JSON body) may hold,
    whatever its schema: a NUL character or a lone surrogate in a text or a
    key (PostgreSQL refuses to store them: the save answered 500), a number
    that is not finite (`1e400`, `NaN`), nesting deeper than `max_depth`.
    Walked without recursion; nodes are named by their id, as elsewhere."""
    problems: list[tuple[str, str]] = []
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack and len(problems) < _MAX_DATA_PROBLEMS:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            problem = text_problem(value)
            if problem:
                problems.append((path or "body", problem))
        elif isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                problems.append((path or "body", "must be a finite number"))
        elif isinstance(value, dict | list):
            if depth >= max_depth:
                problems.append((path or "body", f"nested more than {max_depth} levels deep"))
                continue
            if isinstance(value, list):
                for i, item in enumerate(value):
                    where = _node_path(item, i) if path == "nodes" else f"{path}[{i}]"
                    stack.append((item, where, depth + 1))
                continue
            for key, item in value.items():
                key_problem = text_problem(key) if isinstance(key, str) else None
                if key_problem:
                    problems.append((f"{path}.{key!r}" if path else repr(key), key_problem))
                    continue
                stack.append((item, f"{path}.{key}" if path else key, depth + 1))
    return sorted(problems)


def text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode()
    except UnicodeEncodeError:
        return "contains a lone surrogate (not valid Unicode)"
    return None


def canonical_journey(definition: JourneyDefinition) -> dict[str, Any]:
    """The stored and exported form: what the file set, typed fields in the
    models' order, free-form objects with sorted keys (see the module doc)."""
    return _sorted_free_form(definition.model_dump(mode="json", exclude_unset=True))


def _sorted_free_form(value: Any, *, free: bool = False) -> Any:
    if isinstance(value, dict):
        if free:
            return {k: _sorted_free_form(value[k], free=True) for k in sorted(value)}
        # A node reads best as its id and type, then its fields, the layout last.
        keys = sorted(value, key=lambda k: (k != "id", k != "type", k == "ui"))
        return {k: _sorted_free_form(value[k], free=k in FREE_FORM) for k in keys}
    if isinstance(value, list):
        return [_sorted_free_form(v, free=free) for v in value]
    return value


def _header_errors(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Problems of every field but the nodes (one pydantic pass reports them
    all, a placeholder standing in for the nodes)."""
    start = data.get("start")
    placeholder = start if isinstance(start, str) and NODE_ID_RE.match(start) else "start"
    header = {**data, "nodes": [{"id": placeholder, "type": "exit"}]}
    errors = [] if "nodes" in data else [("nodes", "required")]
    try:
        JourneyDefinition.model_validate(header)
    except ValidationError as exc:
        errors.extend(_pydantic_errors(exc, ""))
    return errors


def _parse_node(raw: Any, path: str, errors: list[tuple[str, str]]) -> _Node | None:
    if not isinstance(raw, dict):
        errors.append((path, f"must be an object with an id and a type, got {_kind(raw)}"))
        return None
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in NODE_CLASSES:
        errors.append((f"{path}.type", _unknown_type("node", kind, NODE_TYPES)))
        return None
    try:
        return NODE_CLASSES[kind].model_validate(raw)
    except ValidationError as exc:
        errors.extend(_pydantic_errors(exc, path))
        return None


def _graph_errors(nodes: list[_Node], start: str) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    ids = {node.id for node in nodes}
    successors = {node.id: [t for _, t in node.edges() if t in ids] for node in nodes}

    reached = {start}
    frontier = [start]
    while frontier:
        for target in successors[frontier.pop()]:
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    for node in nodes:
        if node.id not in reached:
            errors.append((f"nodes[{node.id}]", f"unreachable from the start node {start!r}"))

    # Cycles among the nodes that take no time: drop the waits, and any cycle
    # left would run round without ever giving the engine back.
    kinds = {node.id: node.type for node in nodes}
    instant = {
        n: [t for t in succ if kinds[t] not in WAIT_TYPES]
        for n, succ in successors.items()
        if kinds[n] not in WAIT_TYPES
    }
    seen_cycles: set[frozenset[str]] = set()
    for cycle in _cycles(instant, order=[n.id for n in nodes]):
        key = frozenset(cycle)
        if key not in seen_cycles:
            seen_cycles.add(key)
            loop = " → ".join([*cycle, cycle[0]])
            errors.append(
                (f"nodes[{cycle[0]}]", f"a cycle with no wait on it ({loop}); add a wait node")
            )
    return errors


def _cycles(graph: dict[str, list[str]], *, order: list[str]) -> Iterator[list[str]]:
    """One cycle per back edge found by a depth-first search (iterative)."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    for root in order:
        if root not in graph or state.get(root):
            continue
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(graph[root]))]
        path = [root]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                state[node] = 2
            elif state.get(child) == 1:
                yield path[path.index(child) :]
            elif not state.get(child):
                state[child] = 1
                stack.append((child, iter(graph[child])))
                path.append(child)


def _condition_errors(condition: Any, path: str, check_refs: bool) -> list[tuple[str, str]]:
    """Problems of a condition in the segments' language, re-pathed under `path`."""
    if condition is None:
        return []
    from apps.segments.conditions import ConditionError, parse, validate_definition

    try:
        if check_refs:
            validate_definition(condition, context="journey")
        else:
            parse(condition, context="journey")
    except ConditionError as exc:
        inner, _, message = str(exc).partition(": ")
        where = path if inner == "condition" else f"{path}.{inner}"
        return [(where, message)]
    return []


def _node_ref_errors(node: _Node, check_refs: bool) -> list[tuple[str, str]]:
    path = f"nodes[{node.id}]"
    if isinstance(node, WebhookNode) and check_refs:
        # Here, not in the model: a version stored before this check still
        # reads (the call refuses it, webhooks.call).
        from .webhook_hosts import url_problem

        problem = url_problem(node.url)
        return [(f"{path}.url", problem)] if problem else []
    if isinstance(node, NpsSurveyNode):
        return _survey_errors(node, path) if check_refs else []
    if isinstance(node, BranchNode):
        return _condition_errors(node.condition, f"{path}.condition", check_refs)
    if isinstance(node, EmailNode | SmsNode) and check_refs:
        from apps.messaging.models import Template

        channel = Template.objects.filter(slug=node.template).values_list("channel", flat=True)
        found = channel.first()
        if found is None:
            return [(f"{path}.template", f"unknown template {node.template!r}")]
        if found != node.type:
            return [
                (
                    f"{path}.template",
                    f"template {node.template!r} is an {found} template; "
                    f"an {node.type} node needs an {node.type} template",
                )
            ]
    return []


def _survey_errors(node: NpsSurveyNode, path: str) -> list[tuple[str, str]]:
    from apps.surveys.models import Survey

    survey = Survey.objects.filter(slug=node.survey).select_related(
        "email_template", "sms_template"
    )
    found = survey.first()
    if found is None:
        return [(f"{path}.survey", f"unknown survey {node.survey!r}")]
    if found.template_for(node.channel) is None:
        return [
            (
                f"{path}.channel",
                f"survey {node.survey!r} has no {node.channel} template; give it one in the "
                "admin or choose the other channel",
            )
        ]
    return []


def _segment_exists(slug: str) -> bool:
    from apps.segments.models import Segment

    return Segment.objects.filter(slug=slug).exists()


def _pydantic_errors(exc: ValidationError, prefix: str) -> list[tuple[str, str]]:
    out = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if not _is_tag(p)]
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc.append("type")
        path = prefix
        for part in loc:
            path = (
                f"{path}[{part}]" if isinstance(part, int) else f"{path}.{part}" if path else part
            )
        out.append((path or "journey", _message(err)))
    return out


def _is_tag(part: Any) -> bool:
    # Discriminated unions add the tag to the location: trigger.event.event.
    return isinstance(part, str) and (part in NODE_CLASSES or part in TRIGGER_TYPES)


TYPE_WORDS = {
    "int_type": "a whole number",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "dict_type": "an object",
    "list_type": "a list",
    "model_type": "an object",
    "model_attributes_type": "an object",
}


def _message(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tag = err.get("ctx", {}).get("tag")
        return _unknown_type("trigger", None if tag == "None" else tag, TRIGGER_TYPES)
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"must be one of {expected} (got {err.get('input')!r})"
    ctx = err.get("ctx", {})
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        words = {
            "greater_than_equal": ("at least", "ge"),
            "greater_than": ("more than", "gt"),
            "less_than_equal": ("at most", "le"),
            "less_than": ("less than", "lt"),
        }[kind]
        return f"must be {words[0]} {ctx.get(words[1])} (got {err.get('input')!r})"
    expected = TYPE_WORDS.get(kind)
    if expected:
        return f"must be {expected}, got {_kind(err.get('input'))}"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')}"
    if kind == "too_long":
        return f"has more than the {ctx.get('max_length')} allowed"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')} (got {err.get('input')!r})"
    message = err["msg"].removeprefix("Value error, ")
    return message[0].lower() + message[1:] if message else message


def _node_path(raw: Any, index: int) -> str:
    node_id = raw.get("id") if isinstance(raw, dict) else None
    if isinstance(node_id, str) and NODE_ID_RE.match(node_id):
        return f"nodes[{node_id}]"
    return f"nodes[{index}]"


def _unknown_type(what: str, kind: Any, known: Iterable[str]) -> str:
    if kind is None:
        return f"required; a {what} type is one of {', '.join(known)}"
    return f"unknown {what} type {kind!r}; use one of {', '.join(known)}"


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )
