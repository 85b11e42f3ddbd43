"""One node visit, and the chunk it is part of.

A node handler (`nodes.py`) is given a `Run` (the enrollment, its graph, the
node, which visit of it this is, the visit's open step if any, `now`) and
returns a `Move` (go on, wait, end, hold for a webhook call, or ask a
question the chunk answers for all its enrollments at once: a `SendRequest`,
a branch's `Check`). What the chunk's visits gather (new and changed steps,
the enrollments' new state, the webhook calls to make after commit) is kept
in its `Unit` and written in bulk by `advance.py`.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from apps.core.bulk import rows_insert, rows_update
from apps.messaging.models import Message, Template
from apps.messaging.services import SendRequest, UnknownTemplate

from .. import webhooks
from ..enrollment import Definitions
from ..graph import JourneyDefinition
from ..models import Enrollment, EnrollmentStep

ENROLLMENT_FIELDS = [
    "current_node",
    "next_run_at",
    "context",
    "state",
    "finished_at",
    "exit_reason",
    "lease_until",
    "lease_token",
]
STEP_FIELDS = ["finished_at", "outcome", "detail", "message"]
STEP_NEW_FIELDS = ["enrollment", "node_id", "visit", "started_at", *STEP_FIELDS]


@dataclass(slots=True)
class NewStep:
    """A step to insert: EnrollmentStep's columns by their attribute names
    (what `rows_insert` reads), without a model instance's cost; a chunk
    makes two for each enrollment it sends to."""

    enrollment_id: int
    node_id: str
    visit: int
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    detail: str
    message_id: int | None = None


@dataclass
class Unit:
    """What one chunk's enrollments share: parsed versions, templates by
    slug, the webhook calls to make after its transaction, and the writes
    that need not come before a side effect (steps of nodes without one,
    closed steps, the enrollments' new state), made in bulk at the end. The
    rows are locked meanwhile, so nothing else changes them."""

    definitions: Definitions = field(default_factory=Definitions)
    templates: dict[str, Template] = field(default_factory=dict)
    pending: list[webhooks.PendingCall] = field(default_factory=list)
    steps_new: list[NewStep] = field(default_factory=list)
    steps_changed: list[EnrollmentStep] = field(default_factory=list)
    enrollments: list[Enrollment] = field(default_factory=list)
    # The steps of the visits the chunk's enrollments are at, loaded at once.
    steps_open: dict[tuple[int, str, int], EnrollmentStep] = field(default_factory=dict)
    # The enrollments whose goal is met, checked at once (None: one by one).
    goals: set[int] | None = None

    def template(self, slug: str) -> Template:
        """The template (one query per slug and chunk); UnknownTemplate, as
        `message_send` would raise, when there is none (deleted after the
        version was published): that enrollment fails, naming it."""
        if slug not in self.templates:
            found = Template.objects.filter(slug=slug).first()
            if found is None:
                raise UnknownTemplate(f"template {slug!r} does not exist")
            self.templates[slug] = found
        return self.templates[slug]

    def mark(self) -> tuple[int, int, int, int]:
        return (
            len(self.pending),
            len(self.steps_new),
            len(self.steps_changed),
            len(self.enrollments),
        )

    def undo(self, mark: tuple[int, int, int, int]) -> None:
        """Forget what an enrollment whose savepoint rolled back gathered."""
        del self.pending[mark[0] :]
        del self.steps_new[mark[1] :]
        del self.steps_changed[mark[2] :]
        del self.enrollments[mark[3] :]

    def flush(self) -> None:
        if self.steps_new:
            rows_insert(EnrollmentStep, self.steps_new, STEP_NEW_FIELDS)
        if self.steps_changed:
            rows_update(EnrollmentStep, self.steps_changed, STEP_FIELDS)
        if self.enrollments:
            rows_update(Enrollment, self.enrollments, ENROLLMENT_FIELDS)
        self.steps_new, self.steps_changed, self.enrollments = [], [], []


@dataclass
class Move:
    """What a node handler decided. `kind`:
    - "next": record the step finished and go on to `target` (None: the end);
    - "wait": keep the step open, come back at `until`;
    - "end": record the step finished and end the enrollment as `state`;
    - "hold": a webhook call is pending (made after commit);
    - "ask": `ask` (a SendRequest, a Check) is answered with the chunk's
      others of its kind (a Message, a bool); `then(answer)` is the move."""

    kind: str
    outcome: str = ""
    detail: str = ""
    target: str | None = None
    until: datetime | None = None
    state: str = ""
    message: Message | None = None
    ask: "SendRequest | Check | None" = None
    then: Callable[[Any], "Move"] | None = None


@dataclass(frozen=True)
class Check:
    """Does this enrollment's customer meet a branch's condition now? Asked
    with the chunk's other enrollments at the same node: one query for them."""

    condition: Any
    node: tuple[int, str]  # (version, node id): the customers are distinct within one
    enrollment_id: int
    customer_id: int


def go(target: str | None, outcome: str, detail: str, message: Message | None = None) -> Move:
    return Move("next", outcome, detail, target=target, message=message)


def wait(until: datetime, outcome: str, detail: str) -> Move:
    return Move("wait", outcome, detail, until=until)


def end(state: str, outcome: str, detail: str, message: Message | None = None) -> Move:
    return Move("end", outcome, detail, state=state, message=message)


@dataclass
class Run:
    """One visit of one node, as a handler sees it."""

    enrollment: Enrollment
    definition: JourneyDefinition
    node: Any
    visit: int
    step: EnrollmentStep | None  # an open step of this visit (a wait in progress)
    now: datetime
    unit: Unit

    @property
    def key(self) -> str:
        """This visit's idempotency key (messages, webhook deliveries)."""
        return f"enr:{self.enrollment.pk}:{self.node.id}:{self.visit}"

    def open_step(self, outcome: str, detail: str = "") -> EnrollmentStep:
        """Record the step before a side effect: a re-run finds it. This
        enrollment's steps gathered before it are written first, so their
        ids follow the order of the visits."""
        if self.step is None:
            pk = self.enrollment.pk
            mine = [s for s in self.unit.steps_new if s.enrollment_id == pk]
            if mine:
                rows_insert(EnrollmentStep, mine, STEP_NEW_FIELDS)
                self.unit.steps_new = [s for s in self.unit.steps_new if s.enrollment_id != pk]
            self.step = EnrollmentStep.objects.create(
                enrollment_id=self.enrollment.pk,
                node_id=self.node.id,
                visit=self.visit,
                started_at=self.now,
                outcome=outcome,
                detail=detail,
            )
        return self.step
