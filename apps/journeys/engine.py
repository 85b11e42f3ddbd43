"""The engine: claiming due enrollments and moving them through their graph.

A tick (`engine_tick`, beat, every ENGINE_TICK_INTERVAL_S) claims the due
active enrollments of live journeys in batches — `FOR UPDATE SKIP LOCKED` on
PostgreSQL, so concurrent ticks take disjoint rows without waiting, plus a
lease (`lease_until`, `lease_token`) set by the same statement, a
compare-and-set that is all SQLite needs — and, once that commits, publishes
their ids in chunks to worker tasks. A claim nobody processes (a lost task,
a killed worker) expires and is claimed again; one whose task the broker
refused, or lost with its data (a Redis restarted without persistence,
`apps.core.broker`), is released at once and claimed by the next tick.

A worker (`enrollments_advance`) takes a chunk in one transaction, its rows
locked and loaded at once with their customers (their journeys and versions
read once per chunk, and the open steps of the visits they are at, in one
query): each node visit
records an `EnrollmentStep` (unique per enrollment, node and visit) in the
same transaction as its side effect and the enrollment's move, so a crash
rolls all of it back and a re-run finds either nothing or everything; a
side effect that must be found by a re-run carries the visit's key
(`enr:<enrollment>:<node>:<visit>`: a message's idempotency key). The
enrollments walk their graphs side by side: every send node the chunk
reaches is collected and sent in ONE `message_send_many` call (policies,
render and the Messages in bulk, deliveries published on commit), and every
branch's condition is tested for the chunk's customers at that node in one
query (as the goals are, before any node); then each enrollment goes on from
its answer (again, for a send after a branch, or two sends without a wait
between). Steps and the enrollments' new state are written in bulk at the end
of the chunk. A node that raises rolls the chunk back whole; the chunk is
then done again one enrollment per savepoint, each send on its own, so the
failing one fails with the error recorded and the others go on. A template
that does not render is not an exception: its Message is failed, and so is
that enrollment alone. Waits are `next_run_at` in the future, never Celery
countdowns.

Webhook calls are the one side effect outside the database: the step is
committed first ("calling"), the POST is made after the chunk's transaction,
and its outcome is recorded in a second transaction (see `webhooks.py`).
"""

import hashlib
import logging
import secrets
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Subquery
from django.db.models.fields.json import KeyTransform

from apps.core.broker import broker_lost_data
from apps.core.bulk import rows_insert, rows_update
from apps.customers.models import CONTACT_FIELDS, Customer, Event, EventStat
from apps.customers.schemas import IdentifyIn
from apps.customers.services import customer_save
from apps.messaging.models import Message, Template
from apps.messaging.services import SendRequest, UnknownTemplate

from . import webhooks
from .enrollment import (
    GOAL_STEP,
    Definitions,
    describe_condition,
    enrollment_finish,
    enrollments_matching,
    goal_reached,
    goal_reason,
    goals_reached,
    properties_match,
)
from .graph import WEEKDAYS, JourneyDefinition
from .models import Enrollment, EnrollmentStep, Journey, JourneyVersion
from .selectors import is_stale

logger = logging.getLogger(__name__)

# The tick's name for the broker's epoch (apps.core.broker).
BROKER_EPOCH_NAME = "engine"

# Nodes one advance may pass without waiting: the validator refuses cycles
# without a wait, so reaching this means stored data the validator never saw.
MAX_STEPS_PER_ADVANCE = 100
# How far back the tick looks for events that may end a wait_for_event (the
# event listener wakes API events at once; this catches imports and misses).
WAKE_WINDOW = timedelta(minutes=10)
# Rounds of "call the webhooks, then advance those enrollments" per task.
WEBHOOK_ROUNDS = 5


# --- the tick -------------------------------------------------------------------------


@dataclass
class TickResult:
    claimed: int = 0
    tasks: int = 0
    woken: int = 0
    outstanding: int = 0  # claimed by earlier ticks and not advanced yet


def engine_tick(*, now: datetime, publish: Callable[[list[int]], None] | None = None) -> TickResult:
    """Wake enrollments whose awaited event has arrived, claim what is due and,
    after commit, hand it to workers in chunks of ENGINE_CHUNK_SIZE ids
    (`publish`, by default the `advance_enrollments` task). At most
    ENGINE_MAX_PER_TICK per tick, and only while fewer than ENGINE_MAX_CLAIMED
    are claimed and waiting for a worker."""
    if publish is None:
        from .tasks import advance_enrollments  # the task module imports this one

        def publish(ids: list[int]) -> None:
            advance_enrollments.delay(ids)

    if broker_lost_data(BROKER_EPOCH_NAME, now=now):
        # The broker lost its data (a Redis restarted without persistence):
        # the tasks of the claims still outstanding went with it. Their
        # leases end now, so this tick claims them again instead of waiting
        # ENGINE_LEASE_S (and holding the backpressure budget meanwhile).
        released = _outstanding_query(now=now).update(lease_until=now)
        if released:
            logger.warning("engine tick: the broker lost its data; %d claims released", released)
    result = TickResult(woken=wake_waiting(now=now), outstanding=_outstanding(now=now))
    # Backpressure: a backlog waits in the table, not in the broker, where its
    # claims would expire before a worker got to them and be taken again.
    budget = min(settings.ENGINE_MAX_PER_TICK, settings.ENGINE_MAX_CLAIMED - result.outstanding)
    token = secrets.token_hex(16)
    chunk = settings.ENGINE_CHUNK_SIZE
    while result.claimed < budget:
        limit = min(settings.ENGINE_CLAIM_BATCH, budget - result.claimed)
        with transaction.atomic():
            ids = _claim(now=now, limit=limit, token=token)
            for start in range(0, len(ids), chunk):
                transaction.on_commit(
                    partial(_publish_or_release, publish, ids[start : start + chunk], token, now)
                )
                result.tasks += 1
        result.claimed += len(ids)
        if len(ids) < limit:
            break
    if result.claimed:
        logger.info("engine tick: claimed %d enrollments in %d tasks", result.claimed, result.tasks)
    return result


def _publish_or_release(
    publish: Callable[[list[int]], None], ids: list[int], token: str, now: datetime
) -> None:
    """Publish a chunk of claimed enrollments; when the broker refuses it,
    release the claims (the lease ends now) so the next tick takes them again
    at once, rather than when their lease would have run out. The next
    chunks are still tried."""
    try:
        publish(ids)
    except Exception:
        logger.exception("engine tick: publishing %d enrollments failed; released", len(ids))
        Enrollment.objects.filter(pk__in=ids, lease_token=token).update(lease_until=now)


_PG_CLAIM = """
WITH due AS (
    SELECT e.id FROM {enrollment} AS e JOIN {journey} AS j ON j.id = e.journey_id
    WHERE e.state = 'active' AND e.next_run_at <= %s AND j.status = 'live' AND {claimable}
    ORDER BY e.next_run_at
    LIMIT %s
    FOR UPDATE OF e SKIP LOCKED
)
UPDATE {enrollment} AS e SET lease_until = %s, lease_token = %s
FROM due WHERE e.id = due.id
RETURNING e.id
"""
# SQLite has one writer at a time: the statement is a compare-and-set on its own.
_SQLITE_CLAIM = """
UPDATE {enrollment} SET lease_until = %s, lease_token = %s
WHERE id IN (
    SELECT e.id FROM {enrollment} AS e JOIN {journey} AS j ON j.id = e.journey_id
    WHERE e.state = 'active' AND e.next_run_at <= %s AND j.status = 'live' AND {claimable}
    ORDER BY e.next_run_at
    LIMIT %s
) AND state = 'active' AND (lease_until IS NULL OR lease_until <= %s)
RETURNING id
"""
# What may be claimed, each read from its own partial index: enrollments whose
# holder's lease ran out (`enrollment_claimed`, by lease_until), then those
# nobody holds (`enrollment_due`, by next_run_at). One condition for both
# would walk, on every claim, past all the rows earlier ticks hold and
# workers have not reached yet (up to ENGINE_MAX_CLAIMED: 20,000 rows read
# for each batch of 2,000 claimed).
_EXPIRED = "e.lease_token <> '' AND e.lease_until <= %s"
_FREE = "e.lease_token = ''"


def _outstanding(*, now: datetime) -> int:
    """Due enrollments whose claim is still live: handed to workers, not yet
    advanced (read from the claimed index: as many rows as are claimed,
    whatever the backlog)."""
    return _outstanding_query(now=now).count()


def _outstanding_query(*, now: datetime):
    claimed = Enrollment.objects.filter(state=Enrollment.State.ACTIVE).exclude(lease_token="")
    return claimed.filter(next_run_at__lte=now, lease_until__gt=now)


def _claim(*, now: datetime, limit: int, token: str) -> list[int]:
    """Lease up to `limit` due enrollments of live journeys to `token`: those
    whose lease expired first (their claim was lost), then unclaimed ones."""
    tables = {"enrollment": Enrollment._meta.db_table, "journey": Journey._meta.db_table}
    adapt = connection.ops.adapt_datetimefield_value
    at, until = adapt(now), adapt(now + timedelta(seconds=settings.ENGINE_LEASE_S))
    ids: list[int] = []
    with connection.cursor() as cursor:
        for claimable, params in ((_EXPIRED, [at]), (_FREE, [])):
            want = limit - len(ids)
            if want <= 0:
                break
            if connection.vendor == "postgresql":
                sql = _PG_CLAIM.format(claimable=claimable, **tables)
                cursor.execute(sql, [at, *params, want, until, token])
            else:
                sql = _SQLITE_CLAIM.format(claimable=claimable, **tables)
                cursor.execute(sql, [until, token, at, *params, want, at])
            ids += [row[0] for row in cursor.fetchall()]
    return sorted(ids)


def wake_waiting(*, now: datetime, customer_ids: Sequence[int] | None = None) -> int:
    """Make enrollments waiting for an event due now when that event has
    arrived since their wait began (set-based: one UPDATE per wait_for_event
    node of a running journey). The tick looks at events of the last
    WAKE_WINDOW; the event listener passes the customers it just heard of.
    A wake is a hint: the node itself checks the event exactly."""
    woken = 0
    definitions = Definitions()
    versions = JourneyVersion.objects.filter(journey__status=Journey.Status.LIVE).order_by("pk")
    for version in versions:
        definition = definitions.find(version)
        if definition is None:
            continue
        for node in definition.nodes:
            if node.type != "wait_for_event":
                continue
            started = EnrollmentStep.objects.filter(
                enrollment=OuterRef(OuterRef("pk")), node_id=node.id, finished_at__isnull=True
            ).values("started_at")[:1]
            arrived = Event.objects.filter(
                customer=OuterRef("customer_id"),
                name=node.event,
                occurred_at__gte=Subquery(started),
                occurred_at__lte=now,
            )
            for n, (key, value) in enumerate((node.where or {}).items()):
                # KeyTransform, not properties__<key>: a key may hold "__".
                arrived = arrived.alias(**{f"_where{n}": KeyTransform(key, "properties")})
                arrived = arrived.filter(**{f"_where{n}": value})
            waiting = Enrollment.objects.filter(
                journey_version=version,
                current_node=node.id,
                state=Enrollment.State.ACTIVE,
                next_run_at__gt=now,
            )
            if customer_ids is None:
                recent = EventStat.objects.filter(
                    name=node.event, last_at__gt=now - WAKE_WINDOW, last_at__lte=now
                )
                waiting = waiting.filter(customer_id__in=recent.values("customer_id"))
            else:
                waiting = waiting.filter(customer_id__in=list(customer_ids))
            woken += waiting.filter(Exists(arrived)).update(next_run_at=now)
    return woken


# --- advancing ------------------------------------------------------------------------


@dataclass
class AdvanceResult:
    advanced: int = 0  # enrollments moved (or put back to wait)
    steps: int = 0  # node visits recorded or completed
    failed: int = 0
    skipped: int = 0  # not due, finished, locked by another worker, or journey paused


def enrollments_advance(ids: Sequence[int], *, now: datetime) -> AdvanceResult:
    """Advance each of these enrollments that is active and due (as of `now`)
    until it waits or ends. Safe to run twice, or concurrently with itself:
    rows are locked (PostgreSQL) or the database is (SQLite), and an
    enrollment already moved on is simply not due any more."""
    result = AdvanceResult()
    pending = _advance_chunk(list(ids), now=now, result=result)
    for _ in range(WEBHOOK_ROUNDS):
        if not pending:
            break
        done = webhooks.calls_make(pending, now=now)
        pending = _advance_chunk(done, now=now, result=result) if done else []
    return result


def _advance_chunk(
    ids: list[int], *, now: datetime, result: AdvanceResult
) -> list[webhooks.PendingCall]:
    """Advance a chunk in one transaction. First all together, with the rows'
    writes gathered and made in bulk at the end; if anything raises, that
    attempt is rolled back whole (messages and deliveries included: they
    publish on commit) and the chunk is done again one enrollment at a time,
    each in a savepoint, so the failing one fails alone and the others go on."""
    try:
        attempt = AdvanceResult()
        unit = _advance_locked(ids, now=now, result=attempt, careful=False)
    except Exception:
        logger.info("chunk of %d enrollments: a node failed; advancing them one by one", len(ids))
        attempt = AdvanceResult()
        unit = _advance_locked(ids, now=now, result=attempt, careful=True)
    for name in ("advanced", "steps", "failed", "skipped"):
        setattr(result, name, getattr(result, name) + getattr(attempt, name))
    return unit.pending


def _advance_locked(ids: list[int], *, now: datetime, result: AdvanceResult, careful: bool):
    unit = Unit()
    with transaction.atomic():
        due = (
            Enrollment.objects.filter(
                pk__in=ids, state=Enrollment.State.ACTIVE, next_run_at__lte=now
            )
            .select_related("customer")
            .order_by("pk")
        )
        if connection.vendor == "postgresql":
            # Another worker on the same rows (a re-published chunk) keeps
            # them; this one moves on.
            due = due.select_for_update(skip_locked=True, of=("self",))
        enrollments = list(due)
        _journeys_attach(enrollments)
        result.skipped += len(ids) - len(enrollments)
        live = []
        for enrollment in enrollments:
            if enrollment.journey.status != Journey.Status.LIVE:
                # Paused since the claim: let go, so a resume finds it at once.
                enrollment.lease_until, enrollment.lease_token = None, ""
                unit.enrollments.append(enrollment)
                result.skipped += 1
            else:
                live.append(enrollment)
        unit.steps_open = _open_steps(live)
        if not careful:
            unit.goals = goals_reached(live, unit.definitions, now=now)
            walks = [_advance_one(enrollment, unit, now=now) for enrollment in live]
            result.steps += _walk_together(walks, now=now)
            result.advanced += len(walks)
            live = []
        for enrollment in live:  # careful: each alone, in a savepoint
            mark = unit.mark()
            try:
                with transaction.atomic():
                    steps = _walk_together([_advance_one(enrollment, unit, now=now)], now=now)
            except Exception as exc:
                logger.exception("enrollment %s failed", enrollment.pk)
                unit.undo(mark)
                enrollment_fail(enrollment, error=f"{type(exc).__name__}: {exc}", now=now)
                result.failed += 1
            else:
                result.steps += steps
                result.advanced += 1
                unit.flush()  # outside the next one's savepoint
        unit.flush()
    return unit


# An enrollment's way through its graph in one advance (`_advance_one`): a
# generator that yields what it must ask (a send, a branch's condition), is
# sent back the answer (a Message, a bool), and returns the steps it recorded.
Walk = Generator["SendRequest | Check", Any, int]


def _walk_together(walks: list[Walk], *, now: datetime) -> int:
    """Drive these walks to their ends together: each goes until it waits,
    ends or asks; what they ask is answered for all at once: the sends in
    ONE `message_send_many` call (in the walks' order), the branches' checks
    in one query per node; each walk is handed its answer and goes on. Again
    while any asks more (a send after a branch, two sends without a wait
    between them). Returns the steps recorded."""
    from apps.messaging.services import message_send_many

    steps = 0
    going: list[tuple[Walk, Any]] = [(walk, None) for walk in walks]
    while going:
        asking: list[tuple[Walk, SendRequest | Check]] = []
        for walk, answer in going:
            try:
                asking.append((walk, walk.send(answer)))  # send(None) starts it
            except StopIteration as done:
                steps += done.value
        if not asking:
            break
        answers: list[Any] = [None] * len(asking)
        sends = [n for n, (_, ask) in enumerate(asking) if isinstance(ask, SendRequest)]
        if sends:
            messages = message_send_many([asking[n][1] for n in sends], now=now)
            for n, message in zip(sends, messages, strict=True):
                answers[n] = message
        checks: dict[tuple[int, str], list[int]] = {}
        for n, (_, ask) in enumerate(asking):
            if isinstance(ask, Check):
                checks.setdefault(ask.node, []).append(n)
        for positions in checks.values():
            asked = [asking[n][1] for n in positions]
            met = enrollments_matching(
                asked[0].condition, [(a.enrollment_id, a.customer_id) for a in asked], now=now
            )
            for n, check in zip(positions, asked, strict=True):
                answers[n] = check.enrollment_id in met
        going = [(walk, answer) for (walk, _), answer in zip(asking, answers, strict=True)]
    return steps


def _journeys_attach(enrollments: Sequence[Enrollment]) -> None:
    """Give the enrollments their journey and version, each read once for
    the chunk (a join would decode a version's definition once per row)."""
    journeys = Journey.objects.defer("draft").in_bulk({e.journey_id for e in enrollments})
    versions = JourneyVersion.objects.in_bulk({e.journey_version_id for e in enrollments})
    for enrollment in enrollments:
        enrollment.journey = journeys[enrollment.journey_id]
        enrollment.journey_version = versions[enrollment.journey_version_id]


def _open_steps(enrollments: Sequence[Enrollment]) -> dict[tuple[int, str, int], EnrollmentStep]:
    """The steps of the visits these enrollments are at (a wait in progress, a
    webhook's recorded call), in one query: (enrollment, node, visit) → step."""
    wanted = {}
    for enrollment in enrollments:
        context = enrollment.context if isinstance(enrollment.context, dict) else {}
        node_id = enrollment.current_node
        visit = (context.get("visits") or {}).get(node_id) if node_id else None
        if visit is not None:
            wanted[(enrollment.pk, node_id, visit)] = None
    if not wanted:
        return {}
    found = EnrollmentStep.objects.filter(
        enrollment_id__in=sorted({key[0] for key in wanted}),
        node_id__in=sorted({key[1] for key in wanted}),
    )
    return {
        key: step
        for step in found
        if (key := (step.enrollment_id, step.node_id, step.visit)) in wanted
    }


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


def _advance_one(enrollment: Enrollment, unit: Unit, *, now: datetime) -> Walk:
    """Move one (locked, active, due) enrollment until it waits or ends;
    returns the steps recorded. Its writes are gathered in `unit`. A
    generator (a `Walk`): at a send node it yields the SendRequest and goes
    on with the Message it is sent back (`_walk_together`)."""
    definition = unit.definitions.get(enrollment.journey_version)
    if unit.goals is not None:
        met = enrollment.pk in unit.goals
    else:
        met = goal_reached(definition, enrollment, now=now)
    if met:
        reason = goal_reason(definition)
        unit.steps_new.append(
            NewStep(enrollment.pk, GOAL_STEP, 1, now, now, Enrollment.State.CONVERTED, reason)
        )
        _finish(enrollment, unit, state=Enrollment.State.CONVERTED, reason=reason, now=now)
        return 1
    context = enrollment.context if isinstance(enrollment.context, dict) else {}
    enrollment.context = context
    visits = context.setdefault("visits", {})
    node_id = enrollment.current_node or definition.start
    fresh = node_id not in visits
    if fresh:
        visits[node_id] = 1
    steps = 0
    while True:
        if steps >= MAX_STEPS_PER_ADVANCE:
            raise RuntimeError(
                f"passed {MAX_STEPS_PER_ADVANCE} nodes without waiting (a cycle with no wait?)"
            )
        node = definition.node(node_id)
        visit = visits[node_id]
        step = None
        if not fresh:
            step = unit.steps_open.get((enrollment.pk, node_id, visit))
        run = Run(enrollment, definition, node, visit, step, now, unit)
        move = HANDLERS[node.type](run)
        while move.kind == "ask":
            move = move.then((yield move.ask))
        steps += 1
        enrollment.current_node = node_id
        if move.kind == "hold":
            # The claim stays: the call is made after commit, then recorded.
            unit.enrollments.append(enrollment)
            return steps
        _record(run, move)
        if move.kind == "wait":
            enrollment.next_run_at = move.until
            enrollment.lease_until, enrollment.lease_token = None, ""
            unit.enrollments.append(enrollment)
            return steps
        if move.kind == "end" or move.target is None:
            state = move.state or Enrollment.State.COMPLETED
            reason = move.detail if move.kind == "end" else f"reached the end after {node_id!r}"
            _finish(enrollment, unit, state=state, reason=reason, now=now)
            return steps
        node_id = move.target
        visits[node_id] = visits.get(node_id, 0) + 1
        fresh = True


def _finish(enrollment: Enrollment, unit: Unit, *, state: str, reason: str, now: datetime) -> None:
    enrollment.state, enrollment.finished_at, enrollment.next_run_at = state, now, None
    enrollment.exit_reason = reason[:300]
    enrollment.lease_until, enrollment.lease_token = None, ""
    unit.enrollments.append(enrollment)


def _record(run: Run, move: Move) -> None:
    finished = None if move.kind == "wait" else run.now
    if run.step is None:
        run.unit.steps_new.append(
            NewStep(
                enrollment_id=run.enrollment.pk,
                node_id=run.node.id,
                visit=run.visit,
                started_at=run.now,
                finished_at=finished,
                outcome=move.outcome[:30],
                detail=move.detail,
                message_id=move.message.pk if move.message is not None else None,
            )
        )
    else:
        # A step finished earlier (a webhook's recorded call) keeps its time.
        run.step.finished_at = run.step.finished_at or finished
        run.step.outcome = move.outcome[:30]
        run.step.detail = move.detail
        run.step.message = move.message or run.step.message
        run.unit.steps_changed.append(run.step)


def enrollment_fail(enrollment: Enrollment, *, error: str, now: datetime) -> None:
    """Fail one enrollment (its node raised): the step of the node it was at
    says why. Runs after the node's savepoint rolled back, so it reads the
    enrollment as it was before the attempt."""
    enrollment.refresh_from_db()
    if enrollment.state != Enrollment.State.ACTIVE:
        return
    context = enrollment.context if isinstance(enrollment.context, dict) else {}
    node_id = enrollment.current_node or "(start)"
    visit = context.get("visits", {}).get(node_id, 1)
    EnrollmentStep.objects.update_or_create(
        enrollment_id=enrollment.pk,
        node_id=node_id,
        visit=visit,
        defaults={"outcome": "failed", "detail": error, "finished_at": now},
        create_defaults={
            "outcome": "failed",
            "detail": error,
            "finished_at": now,
            "started_at": now,
        },
    )
    enrollment_finish(enrollment, state=Enrollment.State.FAILED, reason=error, now=now)


# --- words for steps ------------------------------------------------------------------


def when(moment: datetime, zone: ZoneInfo | None = None) -> str:
    """A time in a step's detail: UTC, and the customer's local time if given."""
    text = f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    if zone is not None and getattr(zone, "key", "UTC") != "UTC":
        text += f" ({moment.astimezone(zone):%a %H:%M} {zone.key})"
    return text


def span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    parts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}{'s' if count != 1 else ''}")
    return " ".join(parts) or f"{seconds} seconds"


def customer_zone(customer: Customer) -> tuple[ZoneInfo, str]:
    """The customer's zone, or UTC with a note saying why."""
    return zone_named(customer.timezone)


def zone_named(name: str | None) -> tuple[ZoneInfo, str]:
    """The zone of this name, or UTC with a note saying why."""
    if not name:
        return ZoneInfo("UTC"), "the customer has no time zone; used UTC"
    try:
        return ZoneInfo(name), ""
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC"), f"unknown time zone {name!r}; used UTC"


# --- node handlers --------------------------------------------------------------------

SENT_STATUSES = {
    Message.Status.QUEUED,
    Message.Status.SENDING,
    Message.Status.SENT,
    Message.Status.DELIVERED,
    Message.Status.OPENED,
    Message.Status.CLICKED,
}


def _skip_stale(run: Run) -> Move:
    """A send or survey too late to make sense (paused past the staleness
    limit): skipped, saying when it was due."""
    due = run.enrollment.next_run_at
    return go(
        run.node.next,
        "skipped",
        f"skipped: stale, due {when(due)}, {span(run.now - due)} late "
        "(the journey was paused or the engine stopped)",
    )


def _send(run: Run) -> Move:
    node, enrollment = run.node, run.enrollment
    if is_stale(enrollment, now=run.now):
        return _skip_stale(run)
    if enrollment.is_holdout:
        return go(node.next, "holdout", "holdout: not sent")
    # Sent with the chunk's other sends; the step is written with the move,
    # in the transaction that writes the Message (a rerun of this visit finds
    # the Message by its key and sends nothing again).
    request = SendRequest(
        customer=enrollment.customer,
        template=run.unit.template(node.template),
        idempotency_key=run.key,
        context=_send_context(enrollment),
        journey=enrollment.journey.slug,
        node_id=node.id,
        enrollment_id=enrollment.pk,
        over_cap=node.over_cap or "skip",
    )
    label = f"{node.type} {node.template!r}"
    return Move(
        "ask",
        ask=request,
        then=lambda message: _sent(node, message, f"{label} (message #{message.pk})"),
    )


def _send_context(enrollment: Enrollment) -> dict[str, Any]:
    context = enrollment.context if isinstance(enrollment.context, dict) else {}
    return {
        "event": context.get("event"),
        "journey": {"slug": enrollment.journey.slug, "name": enrollment.journey.name},
    }


def _sent(node: Any, message: Message, label: str) -> Move:
    """Where a send node goes once `message_send` has decided."""
    if message.status in SENT_STATUSES:
        return go(node.next, "sent", f"sent: {label}", message)
    if message.status == Message.Status.DEFERRED:
        until = when(message.send_after) if message.send_after else "later"
        why = message.reason.removeprefix("deferred: ")
        detail = f"deferred until {until}" + (f": {why}" if why else "") + f"; {label}"
        return go(node.next, "deferred", detail, message)
    if message.status == Message.Status.SUPPRESSED:
        reason = message.reason or "suppressed"
        outcome = "skipped" if reason.startswith("skipped") else "suppressed"
        return go(node.next, outcome, reason, message)
    if message.status == Message.Status.FAILED:
        error = message.error or "no reason given"
        return end(Enrollment.State.FAILED, "failed", f"{label} failed: {error}", message)
    # bounced, complained, unknown: the message of an earlier run of this visit.
    return go(node.next, message.status, f"{message.get_status_display()}: {label}", message)


def _nps_survey(run: Run) -> Move:
    """Invite the customer to the survey (apps/surveys): an invitation, and
    its message sent with the eleven score links as `links.nps`. A customer
    surveyed within NPS_RESURVEY_AFTER_DAYS is skipped, the step saying when
    they were; otherwise the message's fate moves the enrollment as a send
    node's does."""
    from apps.surveys.services import UnknownSurvey, survey_invite

    node, enrollment = run.node, run.enrollment
    if is_stale(enrollment, now=run.now):
        return _skip_stale(run)
    if enrollment.is_holdout:
        return go(node.next, "holdout", "holdout: not surveyed")
    run.open_step("sending")
    try:
        invited = survey_invite(
            customer=enrollment.customer,
            survey=node.survey,
            channel=node.channel,
            idempotency_key=run.key,
            now=run.now,
            context=_send_context(enrollment),
            journey=enrollment.journey.slug,
            node_id=node.id,
            enrollment_id=enrollment.pk,
        )
    except (UnknownSurvey, ValueError) as exc:
        return end(Enrollment.State.FAILED, "failed", f"nps_survey {node.survey!r}: {exc}")
    if invited.message is None:
        return go(node.next, "skipped", invited.skipped)
    message = invited.message
    label = f"NPS survey {node.survey!r} by {node.channel} (message #{message.pk})"
    return _sent(node, message, label)


def _wait(run: Run) -> Move:
    node = run.node
    started = run.step.started_at if run.step else run.now
    until = started + node.duration.timedelta
    if run.now >= until:
        return go(node.next, "waited", f"waited {span(node.duration.timedelta)}")
    return wait(until, "waiting", f"waiting {span(node.duration.timedelta)}, until {when(until)}")


def next_local_time(
    after: datetime, zone: ZoneInfo, at: str, weekdays: Sequence[str] | None
) -> datetime:
    """The first moment at or after `after` that is `at` (HH:MM) on one of
    `weekdays` in `zone` (UTC, aware). A time skipped by a daylight-saving
    change is taken with the offset before the change."""
    hour, minute = (int(part) for part in at.split(":"))
    local = after.astimezone(zone)
    for days in range(8):
        day = local.date() + timedelta(days=days)
        if weekdays and WEEKDAYS[day.weekday()] not in weekdays:
            continue
        candidate = datetime.combine(day, time(hour, minute), tzinfo=zone).astimezone(UTC)
        if candidate >= after:
            return candidate
    raise ValueError(f"no {at} on {weekdays} within a week")  # weekdays is never empty


def _wait_until(run: Run) -> Move:
    node = run.node
    zone, note = customer_zone(run.enrollment.customer)
    started = run.step.started_at if run.step else run.now
    until = next_local_time(started, zone, node.time, node.weekdays)
    days = f" on {', '.join(node.weekdays)}" if node.weekdays else ""
    suffix = f"; {note}" if note else ""
    if run.now >= until:
        return go(
            node.next, "waited", f"waited until {node.time}{days}, {when(until, zone)}{suffix}"
        )
    return wait(until, "waiting", f"waiting until {node.time}{days}: {when(until, zone)}{suffix}")


def _event_arrived(run: Run, since: datetime) -> Event | None:
    node = run.node
    events = Event.objects.filter(
        customer_id=run.enrollment.customer_id,
        name=node.event,
        occurred_at__gte=since,
        occurred_at__lte=run.now,
    ).order_by("occurred_at", "pk")
    for event in events.iterator(chunk_size=100):
        if properties_match(event.properties, node.where):
            return event
    return None


def _wait_for_event(run: Run) -> Move:
    node = run.node
    started = run.step.started_at if run.step else run.now
    deadline = started + node.timeout.timedelta
    where = f" with {node.where}" if node.where else ""
    event = _event_arrived(run, started)
    if event is not None:
        return go(
            node.yes,
            "yes",
            f"yes: {node.event}{where} arrived at {when(event.occurred_at)}",
        )
    if run.now >= deadline:
        return go(
            node.no,
            "no",
            f"no: no {node.event}{where} within {span(node.timeout.timedelta)}",
        )
    return wait(deadline, "waiting", f"waiting for {node.event}{where} until {when(deadline)}")


def _branch(run: Run) -> Move:
    """Asks its condition with the chunk's other enrollments at this node."""
    node, enrollment = run.node, run.enrollment
    words = describe_condition(node.condition)
    check = Check(
        node.condition,
        (enrollment.journey_version_id, node.id),
        enrollment.pk,
        enrollment.customer_id,
    )

    def then(yes: bool) -> Move:
        if yes:
            return go(node.yes, "yes", f"branch yes because {words}")
        return go(node.no, "no", f"branch no because not: {words}")

    return Move("ask", ask=check, then=then)


def split_branch(enrollment_id: int, node_id: str, weights: Sequence[int]) -> int:
    """The branch index for this enrollment: stable, in proportion to weights."""
    digest = hashlib.blake2b(f"{enrollment_id}:{node_id}".encode(), digest_size=8).digest()
    point = int.from_bytes(digest, "big") % sum(weights)
    for index, weight in enumerate(weights):
        if point < weight:
            return index
        point -= weight
    raise AssertionError("unreachable")


def _split(run: Run) -> Move:
    weights = [branch.weight for branch in run.node.branches]
    index = split_branch(run.enrollment.pk, run.node.id, weights)
    return go(
        run.node.branches[index].next,
        f"branch {index + 1}",
        f"split: branch {index + 1} of {len(weights)} (weight {weights[index]} of {sum(weights)})",
    )


def _update_traits(run: Run) -> Move:
    node = run.node
    customer = run.enrollment.customer
    try:
        IdentifyIn(userId=customer.external_id, traits=dict(node.traits))
    except ValueError as exc:
        return end(Enrollment.State.FAILED, "failed", f"update_traits refused: {exc}")
    run.open_step("updating")
    traits = dict(customer.traits or {})
    for key, value in node.traits.items():
        if value is None:
            traits.pop(key, None)
        else:
            traits[key] = value
    customer.traits = traits
    changed = [c for c in CONTACT_FIELDS if c in node.traits]
    for column in changed:
        setattr(customer, column, node.traits[column] or "")
    customer_save(customer, changed=changed)
    shown = ", ".join(
        f"removed {k}" if v is None else f"{k} = {v!r}" for k, v in sorted(node.traits.items())
    )
    return go(node.next, "updated", f"traits: {shown}")


def _webhook(run: Run) -> Move:
    node = run.node
    if run.enrollment.is_holdout:
        return go(node.next, "holdout", "holdout: not called")
    step = run.step
    if step is not None and step.finished_at is not None:
        # The call's outcome, recorded after it was made (webhooks.calls_make).
        if step.outcome == "failed" and node.on_failure == "fail":
            return end(Enrollment.State.FAILED, "failed", step.detail)
        return go(node.next, step.outcome, step.detail)
    run.open_step("calling", f"POST {node.url}")
    run.unit.pending.append(webhooks.pending_call(run))
    return Move("hold")


def _exit(run: Run) -> Move:
    return end(Enrollment.State.COMPLETED, "completed", "reached the exit")


HANDLERS: dict[str, Callable[[Run], Move]] = {
    "email": _send,
    "sms": _send,
    "nps_survey": _nps_survey,
    "wait": _wait,
    "wait_until": _wait_until,
    "wait_for_event": _wait_for_event,
    "branch": _branch,
    "split": _split,
    "update_traits": _update_traits,
    "webhook": _webhook,
    "exit": _exit,
}
