"""The journey file's typed models: triggers, re-entry, the node types and
the definition (apps/journeys/graph/__init__.py describes the file)."""

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    field_validator,
    model_validator,
)

from .values import (
    CRON_FIELDS,
    SECRET_NAME_RE,
    Duration,
    EventName,
    Name,
    NodeId,
    Scalar,
    Slug,
    TraitName,
    Ui,
    _hhmm,
    _http_url,
    _Strict,
    _trait_name,
)

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
