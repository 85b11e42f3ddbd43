"""Who is in a journey: starting enrollments, and ending them early.

Every trigger enrolls through `enrollments_start` (many customers) or
`enrollment_start` (one): a single INSERT … SELECT over the given customer ids
that applies the journey's re-entry policy in SQL and leans on the partial
unique index (one active enrollment per customer and journey) with
`ON CONFLICT DO NOTHING`. Two triggers racing for one customer make one
enrollment, and a million ids are one statement, not a million queries.

Holdout: a hash of the journey's slug and the customer's id puts the same
customers in the holdout every time, whoever else enrolls with them. Holdout
enrollments travel the graph like the others, so their conversion is measured,
but their send nodes send nothing.

Endings: a goal met converts an enrollment (`enrollments_check_goals`, and
the engine on every advance), leaving the trigger's segment exits it when the
journey says so (`enrollments_exit_for_segment`). Both are compare-and-set
updates of active rows only, and both leave a step saying why.
"""

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import OuterRef, Q, Subquery
from django.db.models.expressions import RawSQL

from apps.core.bulk import chunks
from apps.customers.models import Customer, known_sql
from apps.segments.conditions import compile_condition, customer_matches, validate_definition

from .graph import JourneyDefinition, JourneyError, parse_journey
from .models import Enrollment, EnrollmentStep, Journey, JourneyVersion

logger = logging.getLogger(__name__)

# Steps that are not nodes of the graph: why an enrollment ended early.
GOAL_STEP = "(goal)"
SEGMENT_EXIT_STEP = "(segment exit)"
# A merged profile's enrollments end with this reason, at this step.
MERGED_REASON = "merged"
MERGED_STEP = "(merged)"
# Holdout buckets: percent * 100, so a bucket is a hundredth of a percent.
HOLDOUT_BUCKETS = 10_000
# Enrollments in one statement above which PostgreSQL gets JOURNEY_ENROLL_WORK_MEM.
BIG_ENROLLMENT = 10_000
# Every journey that may still have active enrollments the engine advances.
RUNNING = (Journey.Status.LIVE, Journey.Status.PAUSED)


# --- definitions --------------------------------------------------------------------


class Definitions:
    """Parsed definitions of versions, for one unit of work (a tick, a chunk, a
    trigger check). Versions are immutable, so within one unit a version is
    parsed once; nothing is cached across units, so a test database reusing an
    id never sees a stale graph."""

    def __init__(self) -> None:
        self._parsed: dict[int, JourneyDefinition | JourneyError] = {}

    def get(self, version: JourneyVersion) -> JourneyDefinition:
        """The version's definition; JourneyError when the stored data no
        longer parses (written by an older Tenure, say)."""
        found = self._parsed.get(version.pk)
        if found is None:
            try:
                found = parse_journey(version.definition, check_refs=False)
            except JourneyError as exc:
                found = exc
            self._parsed[version.pk] = found
        if isinstance(found, JourneyError):
            raise found
        return found

    def find(self, version: JourneyVersion) -> JourneyDefinition | None:
        """The definition, or None (logged) when it does not parse: for the
        triggers, which skip such a version instead of failing a whole check."""
        try:
            return self.get(version)
        except JourneyError as exc:
            logger.error("journey version %s does not parse: %s", version, exc)
            return None


def live_journeys(definitions: Definitions) -> list[tuple[Journey, JourneyDefinition]]:
    """Live journeys with their live version's definition (those that parse)."""
    found = []
    journeys = Journey.objects.filter(status=Journey.Status.LIVE, live_version__isnull=False)
    for journey in journeys.select_related("live_version").order_by("pk"):
        definition = definitions.find(journey.live_version)
        if definition is not None:
            found.append((journey, definition))
    return found


# --- holdout ---------------------------------------------------------------------------


def holdout_bucket(journey_slug: str, customer_id: int) -> int:
    """0 … 9,999, stable for a journey and customer."""
    digest = hashlib.blake2b(f"{journey_slug}:{customer_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % HOLDOUT_BUCKETS


def in_holdout(journey_slug: str, customer_id: int, percent: float) -> bool:
    return percent > 0 and holdout_bucket(journey_slug, customer_id) < percent * 100


# --- starting -------------------------------------------------------------------------


def enrollment_start(
    *,
    journey: Journey,
    customer_id: int,
    now: datetime,
    context: dict[str, Any] | None = None,
    version: JourneyVersion | None = None,
) -> Enrollment | None:
    """Enroll one customer in the journey's live version (or `version`), at its
    start node, due now. None when the re-entry policy refuses or the customer
    is already active in this journey."""
    rows = _insert(
        journey=journey,
        version=version,
        customer_ids=[customer_id],
        now=now,
        context=context or {},
        contexts=None,
        returning=True,
    )
    return Enrollment.objects.get(pk=rows[0][0]) if rows else None


def enrollments_start(
    *,
    journey: Journey,
    customer_ids: Iterable[int],
    now: datetime,
    context: dict[str, Any] | None = None,
    contexts: dict[int, dict[str, Any]] | None = None,
    version: JourneyVersion | None = None,
    returning: bool = False,
):
    """Enroll many customers in one statement; returns how many were enrolled
    (the others were refused by re-entry or are already active), or with
    `returning` the ids of the customers enrolled. `contexts` adds a
    customer's own context (the event that triggered it) to the shared
    `context`."""
    rows = _insert(
        journey=journey,
        version=version,
        customer_ids=customer_ids,
        now=now,
        context=context or {},
        contexts=contexts,
        returning=returning,
    )
    return [customer for _, customer in rows] if returning else rows


def _insert(
    *,
    journey: Journey,
    version: JourneyVersion | None,
    customer_ids: Iterable[int],
    now: datetime,
    context: dict[str, Any],
    contexts: dict[int, dict[str, Any]] | None,
    returning: bool,
):
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    if version is None:
        if journey.status != Journey.Status.LIVE or journey.live_version_id is None:
            raise ValueError(
                f"journey {journey.slug!r} is {journey.status}: only live journeys enroll"
            )
        version = journey.live_version
    definition = Definitions().get(version)
    ids = sorted(set(customer_ids))
    if not ids:
        return [] if returning else 0
    percent = definition.holdout_percent
    holdout = [in_holdout(journey.slug, i, percent) for i in ids] if percent else None
    per_customer = (
        [json.dumps({**context, **contexts[i]}) if i in contexts else None for i in ids]
        if contexts
        else None
    )
    reentry_sql, reentry_params = _reentry_clause(definition, journey, now)
    enrollment, customer = Enrollment._meta.db_table, Customer._meta.db_table
    source = "unnest(%s::bigint[], %s::boolean[], %s::text[]) AS s(customer_id, holdout, ctx)"
    # A shared context is parsed once, not once per row.
    ctx = "COALESCE(s.ctx::jsonb, %s::jsonb)" if per_customer else "%s::jsonb"
    sql = (
        f"INSERT INTO {enrollment} (journey_id, journey_version_id, customer_id, state, "  # noqa: S608
        "current_node, next_run_at, entered_at, context, is_holdout, lease_token, exit_reason) "
        f"SELECT %s, %s, s.customer_id, 'active', %s, %s, %s, {ctx}, "
        "COALESCE(s.holdout, FALSE), '', '' "
        f"FROM {source} JOIN {customer} AS c ON c.id = s.customer_id "
        # Anonymous visitors and merged profiles are never enrolled: they
        # cannot be messaged, and a merged profile's data is its customer's.
        f"WHERE {known_sql('c')} AND {reentry_sql} ORDER BY s.customer_id "
        "ON CONFLICT (journey_id, customer_id) WHERE state = 'active' DO NOTHING"
        + (" RETURNING id, customer_id" if returning else "")
    )
    params = [
        journey.pk,
        version.pk,
        definition.start,
        now,
        now,
        json.dumps(context),
        ids,
        holdout,
        per_customer,
        *reentry_params,
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        if len(ids) > BIG_ENROLLMENT:
            # Room to sort and anti-join a million ids in memory (this transaction only).
            cursor.execute(
                "SELECT set_config('work_mem', %s, true)", [settings.JOURNEY_ENROLL_WORK_MEM]
            )
        cursor.execute(sql, params)
        if returning:
            return cursor.fetchall()
        return max(cursor.rowcount, 0)


def _reentry_clause(
    definition: JourneyDefinition, journey: Journey, now: datetime
) -> tuple[str, list]:
    """SQL over the staged customer `s`: may this customer enter again? (Being
    active already is left to the unique index.)"""
    policy = definition.reentry
    table = Enrollment._meta.db_table
    earlier = (
        f"SELECT 1 FROM {table} AS e WHERE e.journey_id = %s AND e.customer_id = s.customer_id"  # noqa: S608
    )
    if policy.policy == "never":
        return f"NOT EXISTS ({earlier})", [journey.pk]
    if policy.policy == "after":
        since = now - timedelta(days=policy.days)
        return f"NOT EXISTS ({earlier} AND e.entered_at >= %s)", [journey.pk, since]
    return "1 = 1", []


def properties_match(properties: Any, where: dict[str, Any] | None) -> bool:
    """Whether an event's properties have every `where` property → value
    (JSON-typed: true is not 1, "1" is not 1; null matches a missing one)."""
    if not where:
        return True
    if not isinstance(properties, dict):
        return False
    for key, expected in where.items():
        actual = properties.get(key)
        if isinstance(actual, bool) != isinstance(expected, bool):
            return False
        if isinstance(actual, str) != isinstance(expected, str):
            return False
        if actual != expected:
            return False
    return True


def event_context(event) -> dict[str, Any]:
    """What an enrollment keeps of the event that triggered it (and templates see)."""
    return {
        "id": event.pk,
        "name": event.name,
        "properties": event.properties,
        "occurred_at": event.occurred_at.isoformat(),
    }


# --- ending ----------------------------------------------------------------------------


def ids_subquery(ids: Sequence[int]) -> RawSQL:
    """`SELECT` of the given integers, for `field__in=`: one parameter however
    many ids."""
    return RawSQL("SELECT unnest(%s::bigint[])", [list(ids)])


def enrollment_finish(
    enrollment: Enrollment,
    *,
    state: str,
    reason: str,
    now: datetime,
    step: str | None = None,
    outcome: str = "",
    also: dict[str, Any] | None = None,
) -> bool:
    """End an active enrollment (compare-and-set: only if it is still active)
    and, with `step`, record a step of that name saying why; `also` sets more
    fields in the same UPDATE. Returns whether it was still active."""
    ended = Enrollment.objects.filter(pk=enrollment.pk, state=Enrollment.State.ACTIVE).update(
        state=state,
        finished_at=now,
        next_run_at=None,
        exit_reason=reason[:300],
        lease_until=None,
        lease_token="",
        **(also or {}),
    )
    if ended and step:
        EnrollmentStep.objects.create(
            enrollment_id=enrollment.pk,
            node_id=step,
            visit=1,
            started_at=now,
            finished_at=now,
            outcome=outcome or state,
            detail=reason,
        )
    if ended:
        enrollment.state, enrollment.finished_at, enrollment.next_run_at = state, now, None
        enrollment.exit_reason = reason[:300]
    return bool(ended)


def goal_reached(definition: JourneyDefinition, enrollment: Enrollment, *, now: datetime) -> bool:
    """Whether the journey has a goal and this enrollment's customer meets it."""
    if not definition.goal:
        return False
    return customer_matches(
        definition.goal, enrollment.customer_id, now=now, enrolled_at=enrollment.entered_at
    )


def goals_reached(
    enrollments: Sequence[Enrollment], definitions: Definitions, *, now: datetime
) -> set[int]:
    """The ids of these (active) enrollments whose customer meets their
    journey's goal: `goal_reached` for many, one query per version with a
    goal, each enrollment's own start time standing for "since enrolled"."""
    groups: dict[int, tuple[JourneyDefinition, list[tuple[int, int]]]] = {}
    for enrollment in enrollments:
        definition = definitions.get(enrollment.journey_version)
        if definition.goal:
            group = groups.setdefault(enrollment.journey_version_id, (definition, []))[1]
            group.append((enrollment.pk, enrollment.customer_id))
    met: set[int] = set()
    for definition, group in groups.values():
        met |= enrollments_matching(definition.goal, group, now=now)
    return met


def enrollments_matching(
    condition: Any, enrollments: Sequence[tuple[int, int]], *, now: datetime
) -> set[int]:
    """Of these enrollments, given as (enrollment id, customer id) with one
    enrollment per customer (those of one journey), the ids of those whose
    customer meets the condition now, in one query; "since enrolled" is
    since each enrollment's own start."""
    if not enrollments:
        return set()
    parsed = validate_definition(condition, context="journey")
    by_customer = dict((customer, pk) for pk, customer in enrollments)
    if len(by_customer) != len(enrollments):
        raise ValueError("enrollments_matching: one enrollment per customer")
    entered = Enrollment.objects.filter(
        customer_id=OuterRef("pk"), pk__in=ids_subquery([pk for pk, _ in enrollments])
    ).values("entered_at")[:1]
    matching = (
        Customer.objects.filter(pk__in=ids_subquery(list(by_customer)))
        .annotate(enrolled_at=Subquery(entered))
        .filter(
            compile_condition(
                parsed, now=now, enrolled_at=OuterRef("enrolled_at"), one_customer=True
            )
        )
    )
    return {by_customer[pk] for pk in matching.values_list("pk", flat=True)}


def goal_reason(definition: JourneyDefinition) -> str:
    return f"goal met: {describe_condition(definition.goal)}"


def enrollments_check_goals(*, customer_ids: Sequence[int], now: datetime) -> int:
    """Convert the active enrollments of these customers (whose data just
    changed) whose journey's goal they now meet. Returns how many converted."""
    converted = 0
    definitions = Definitions()
    for chunk in chunks(sorted(set(customer_ids))):
        active = (
            Enrollment.objects.filter(
                state=Enrollment.State.ACTIVE,
                customer_id__in=ids_subquery(chunk),
                journey__status__in=RUNNING,
            )
            .select_related("journey_version")
            .order_by("pk")
        )
        usable = [e for e in active if definitions.find(e.journey_version) is not None]
        met = goals_reached(usable, definitions, now=now)
        for enrollment in usable:
            if enrollment.pk not in met:
                continue
            with transaction.atomic():
                converted += enrollment_finish(
                    enrollment,
                    state=Enrollment.State.CONVERTED,
                    reason=goal_reason(definitions.get(enrollment.journey_version)),
                    now=now,
                    step=GOAL_STEP,
                )
    return converted


def _versions_exiting_on(segment_slug: str, definitions: Definitions) -> list[int]:
    """Versions of running journeys triggered by this segment whose
    definition asks to exit customers who leave it."""
    found = []
    versions = JourneyVersion.objects.filter(journey__status__in=RUNNING).filter(
        Q(definition__trigger__segment=segment_slug)
    )
    for version in versions.order_by("pk"):
        definition = definitions.find(version)
        if definition and definition.exit_on_segment_exit and definition.segment == segment_slug:
            found.append(version.pk)
    return found


def enrollments_exit_for_segment(
    *, segment_slug: str, customer_ids: Sequence[int], now: datetime
) -> int:
    """End, as exited, the active enrollments of these customers (who just
    left the segment) in journeys triggered by it that exit on leaving it.
    Set-based: one UPDATE … RETURNING and one bulk insert of steps."""
    if not customer_ids:
        return 0
    version_ids = _versions_exiting_on(segment_slug, Definitions())
    if not version_ids:
        return 0
    return _exit_active(
        where="journey_version_id = ANY(%s::bigint[]) AND customer_id = ANY(%s::bigint[])",
        params=[version_ids, sorted(set(customer_ids))],
        reason=f"left the segment {segment_slug!r}",
        step=SEGMENT_EXIT_STEP,
        now=now,
    )


def enrollments_exit_merged(*, pairs: Sequence[tuple[int, int]], now: datetime) -> int:
    """End, as exited with the reason `merged`, the active enrollments of
    profiles merged into another customer (registered on the customers'
    merge hook: it runs in the merging transaction). The customer they became
    carries on in its own enrollments."""
    return _exit_active(
        where="customer_id = ANY(%s::bigint[])",
        params=[sorted({source for source, _ in pairs})],
        reason=MERGED_REASON,
        step=MERGED_STEP,
        now=now,
    )


def _exit_active(*, where: str, params: list, reason: str, step: str, now: datetime) -> int:
    """End as exited the active enrollments `where` selects, recording a step
    for each: one UPDATE … RETURNING and one bulk insert of steps."""
    table = Enrollment._meta.db_table
    sql = (
        f"UPDATE {table} SET state = %s, finished_at = %s, next_run_at = NULL, "  # noqa: S608
        "exit_reason = %s, lease_until = NULL, lease_token = '' "
        f"WHERE state = 'active' AND {where} RETURNING id"
    )
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(sql, [Enrollment.State.EXITED, now, reason, *params])
            ended = [row[0] for row in cursor.fetchall()]
        EnrollmentStep.objects.bulk_create(
            [
                EnrollmentStep(
                    enrollment_id=pk,
                    node_id=step,
                    visit=1,
                    started_at=now,
                    finished_at=now,
                    outcome=Enrollment.State.EXITED,
                    detail=reason,
                )
                for pk in ended
            ],
            batch_size=5_000,
            ignore_conflicts=True,
        )
    return len(ended)


# --- words -----------------------------------------------------------------------------

_COMPARE_WORDS = {
    "eq": "is",
    "ne": "is not",
    "gt": ">",
    "gte": "≥",
    "lt": "<",
    "lte": "≤",
    "contains": "contains",
    "in": "is one of",
    "not_in": "is none of",
}
_DATE_WORDS = {
    "within_next": "within the next {days} days",
    "within_last": "within the last {days} days",
    "before_days_ago": "more than {days} days ago",
    "after_days_ago": "less than {days} days ago",
}


def describe_condition(condition: Any) -> str:
    """A condition in words, for the reasons steps record ("branch yes because
    plan is 'pro'"). Anything unexpected is shown as its JSON."""
    try:
        return _describe(condition, top=True)
    except (KeyError, TypeError, AttributeError):
        return json.dumps(condition, sort_keys=True)


def _describe(c: dict, *, top: bool = False) -> str:
    if "all" in c or "any" in c:
        word = " and " if "all" in c else " or "
        text = word.join(_describe(item) for item in c.get("all") or c.get("any"))
        return text if top else f"({text})"
    if "not" in c:
        return f"not {_describe(c['not'])}"
    if "trait" in c:
        trait, op = c["trait"], c["op"]
        if op == "exists":
            return f"{trait} is set"
        if op == "not_exists":
            return f"{trait} is not set"
        if op in _DATE_WORDS:
            return f"{trait} {_DATE_WORDS[op].format(days=c['days'])}"
        value = c["value"]
        shown = ", ".join(map(repr, value)) if isinstance(value, list) else repr(value)
        return f"{trait} {_COMPARE_WORDS[op]} {shown}"
    if "event" in c:
        event, op = c["event"], c["op"]
        if op == "since_enrolled":
            return f"{event} since enrolling"
        if op == "since":
            return f"{event} in the last {c['days']} days"
        if op == "not_since":
            return f"no {event} in the last {c['days']} days"
        if op == "dropped_by":
            return f"{event} down {c['percent']}% over {c['days']} days"
        window = f" in the last {c['within_days']} days" if c.get("within_days") else ""
        least = "at least" if op == "count_gte" else "fewer than"
        return f"{least} {c['value']} {event} events{window}"
    if "segment" in c:
        return f"in the segment {c['segment']!r}"
    if "nps" in c:
        window = f" in the last {c['within_days']} days" if c.get("within_days") else ""
        return f"latest NPS answer{window} is {c['nps']}"
    if "account" in c:
        return f"an account where {_describe(c['account'], top=True)}"
    return json.dumps(c, sort_keys=True)
