"""Refreshing dynamic segments: the member set as of `now`, written through
memberships.py, and the hook told once, after commit, with the id lists.
Refreshes of one segment never overlap: each holds a lease on the segment's
row, claimed by compare-and-set.

Most refreshes are incremental (incremental.py): only the customers whose data
changed since the previous refresh, or whose data time has carried across an
edge of the condition, are evaluated and diffed. A full refresh (everyone)
runs the first time, after the definition changed, when the incremental one
cannot be trusted, and every SEGMENT_FULL_REFRESH_EVERY_S as a safety net.
"""

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q

from apps.customers.models import Customer
from apps.customers.services import touch_stamping_ok, touch_watermark

from .. import hooks
from ..conditions import Condition, ConditionError, parse, segment_queryset, validate_definition
from ..conditions.validation import segment_lookup
from ..incremental import (
    SCOPE,
    Edges,
    Unbounded,
    candidates_sql,
    definition_digest,
    ensure_trait_time_index,
    time_edges,
)
from ..models import Segment
from .memberships import apply_member_set
from .snapshots import snapshot_sizes

logger = logging.getLogger(__name__)

# Longer than the refresh task's hard time limit (CELERY_TASK_TIME_LIMIT, 300 s):
# a lease outlives its refresh only when the process holding it died, and then
# the segment waits at most this long before another refresh takes over.
REFRESH_LEASE = timedelta(minutes=10)
# Past this many customers changed since the previous refresh, testing them
# one by one costs more than evaluating everyone at once: a full refresh.
INCREMENTAL_MAX_CHANGED = 100_000


@dataclass
class RefreshResult:
    slug: str
    entered_ids: list[int] = field(default_factory=list)
    exited_ids: list[int] = field(default_factory=list)
    member_count: int = 0
    ms: int = 0
    skipped: str = ""  # why this refresh did not run
    error: str = ""  # why it failed (also in Segment.last_error)
    full_reason: str = ""  # why everyone was evaluated; empty: incremental
    candidates: int | None = None  # incremental: the customers evaluated

    @property
    def mode(self) -> str:
        return "full" if self.full_reason else "incremental"

    @property
    def ok(self) -> bool:
        return not self.skipped and not self.error


class LeaseLost(RuntimeError):
    """Another refresh took the segment's lease over (ours had expired)."""


def segments_refresh_all(*, now: datetime, full: bool = False) -> list[RefreshResult]:
    """Refresh every active dynamic segment (all in full with `full`), one
    after the other in this process; one failing does not stop the others.
    Also records today's size of the active static segments, so every
    segment's growth chart has a point per day (see `snapshot_sizes`)."""
    results = [segment_refresh(segment, now=now, full=full) for segment in _refreshable()]
    _snapshot_static(now=now)
    return results


def segments_refresh_publish(*, now: datetime, publish: Callable[[int], Any]) -> list[int]:
    """What beat's task does every minute: `publish` one refresh per active
    dynamic segment (its id), for the worker's processes to run side by side,
    and record today's size of the active static segments. The slowest
    segments (by their last refresh) go first, so that the last to finish
    starts early. Returns the ids, in the order published."""
    ids = list(
        _refreshable()
        .order_by(F("refresh_ms").desc(nulls_last=True), "slug")
        .values_list("pk", flat=True)
    )
    for pk in ids:
        publish(pk)
    _snapshot_static(now=now)
    return ids


def segment_refresh_by_id(segment_id: int, *, now: datetime) -> RefreshResult | None:
    """Refresh one segment published by `segments_refresh_publish`, if it is
    still an active dynamic segment (None when it was deleted, paused or made
    static since)."""
    segment = _refreshable().filter(pk=segment_id).first()
    return segment_refresh(segment, now=now) if segment is not None else None


def _refreshable():
    return Segment.objects.filter(is_active=True, kind=Segment.Kind.DYNAMIC).order_by("slug")


def _snapshot_static(*, now: datetime) -> None:
    static = Segment.objects.filter(is_active=True, kind=Segment.Kind.STATIC)
    snapshot_sizes({s.pk: s.member_count for s in static.only("pk", "member_count")}, now=now)


def segment_refresh(segment: Segment, *, now: datetime, full: bool = False) -> RefreshResult:
    """Bring a dynamic segment's open memberships in line with its definition
    as of `now`: incrementally when it can (see the module docstring), in full
    otherwise or with `full`. Never raises for a bad definition or a database
    error: the error is logged, kept in `last_error` and returned."""
    if segment.kind != Segment.Kind.DYNAMIC:
        raise ValueError(f"{segment.slug}: a static segment is uploaded, not refreshed")
    token = _lease_claim(segment.pk, now=now)
    if token is None:
        reason = (
            "another refresh of this segment is running"
            if Segment.objects.filter(pk=segment.pk).exists()
            else "the segment no longer exists"
        )
        logger.info("segment %s: refresh skipped: %s", segment.slug, reason)
        return RefreshResult(segment.slug, member_count=segment.member_count, skipped=reason)

    started = time.monotonic()
    try:
        prepare_indexes(segment)
        with transaction.atomic():
            _give_refresh_memory()
            # The state as it is now, not as it was when `segment` was loaded.
            segment.refresh_from_db(fields=_STATE_FIELDS)
            condition = validate_definition(segment.definition, slug=segment.slug)
            # Read before anything is evaluated: every change stamped below it
            # is visible to what follows (services.touch_watermark).
            watermark = touch_watermark()
            lookup = segment_lookup()
            digest = definition_digest(segment.definition, lookup)
            full_reason = "asked for" if full else ""
            edges = None
            if not full_reason:
                full_reason, edges = _incremental_or_why_not(
                    segment, condition, digest=digest, now=now, lookup=lookup
                )
            if full_reason:
                members = segment_queryset(segment.definition, now=now)
                scope = None
            else:
                scope = candidates_sql(
                    edges,
                    watermark=segment.refresh_watermark,
                    since=segment.refreshed_at,
                    until=now,
                )
                among = f"SELECT id FROM {SCOPE}"  # noqa: S608 - our own name
                members = segment_queryset(segment.definition, now=now, among=among)
            entered, exited, count, candidates = apply_member_set(
                segment.pk,
                members.order_by().values("id").query.sql_with_params(),
                now=now,
                close_others=True,
                scope=scope,
                members_before=segment.member_count,
            )
            ms = round((time.monotonic() - started) * 1000)
            # The fence: the results are kept only if the lease is still ours.
            held = Segment.objects.filter(pk=segment.pk, refresh_lease_token=token).update(
                member_count=count,
                refreshed_at=now,
                refresh_ms=ms,
                last_error="",
                refresh_lease_until=None,
                refresh_lease_token="",
                refresh_watermark=watermark,
                refresh_digest=digest,
                full_refreshed_at=now if full_reason else F("full_refreshed_at"),
            )
            if not held:
                raise LeaseLost("the refresh took longer than its lease and was taken over")
            snapshot_sizes({segment.pk: count}, now=now)
            segment.member_count, segment.refreshed_at, segment.refresh_ms = count, now, ms
            segment.last_error = ""
            segment.refresh_watermark, segment.refresh_digest = watermark, digest
            if full_reason:
                segment.full_refreshed_at = now
            if entered or exited:
                transaction.on_commit(partial(hooks.notify, segment, entered, exited, now))
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, ConditionError):
            logger.error("segment %s: refresh failed: %s", segment.slug, error)
        else:
            logger.exception("segment %s: refresh failed: %s", segment.slug, error)
        Segment.objects.filter(pk=segment.pk, refresh_lease_token=token).update(
            last_error=error, refresh_lease_until=None, refresh_lease_token=""
        )
        segment.last_error = error
        ms = round((time.monotonic() - started) * 1000)
        return RefreshResult(segment.slug, member_count=segment.member_count, ms=ms, error=error)

    if full_reason:
        logger.info("segment %s: full refresh (%s), %d ms", segment.slug, full_reason, ms)
    return RefreshResult(
        segment.slug,
        entered,
        exited,
        member_count=count,
        ms=ms,
        full_reason=full_reason,
        candidates=candidates,
    )


_STATE_FIELDS = [
    "definition",
    "member_count",
    "refreshed_at",
    "refresh_watermark",
    "refresh_digest",
    "full_refreshed_at",
]


def _incremental_or_why_not(
    segment: Segment, condition: Condition, *, digest: str, now: datetime, lookup
) -> tuple[str, Edges | None]:
    """Whether the open memberships are a base an incremental refresh can
    start from: ("", the condition's time edges) when they are, else (why not,
    None)."""
    every = timedelta(seconds=settings.SEGMENT_FULL_REFRESH_EVERY_S)
    if segment.refresh_watermark is None or segment.refreshed_at is None:
        return "first refresh", None
    if digest != segment.refresh_digest:
        return "the definition changed", None
    if now < segment.refreshed_at:
        return "now is before the previous refresh", None
    if segment.full_refreshed_at is None or now - segment.full_refreshed_at >= every:
        return "periodic full refresh", None
    try:
        edges = time_edges(condition, lookup)
    except Unbounded as exc:
        return f"cannot bound the changes of {exc}", None
    if not touch_stamping_ok():
        logger.warning("the customers' touch stamping triggers are missing: full refreshes only")
        return "the customers' touch stamping triggers are missing", None
    changed = Customer.objects.filter(touched_seq__gte=segment.refresh_watermark)
    if changed[INCREMENTAL_MAX_CHANGED : INCREMENTAL_MAX_CHANGED + 1].exists():
        return f"over {INCREMENTAL_MAX_CHANGED:,} customers changed", None
    return "", edges


def prepare_indexes(segment: Segment) -> None:
    """Outside the refresh's transaction: the expression indexes of the date
    traits the definition tests (incremental.ensure_trait_time_index). A
    definition that does not parse is left for the refresh to report."""
    try:
        edges = time_edges(parse(segment.definition), segment_lookup())
    except (ConditionError, Unbounded):
        return
    for trait in sorted(edges.traits):
        ensure_trait_time_index(trait)


def _give_refresh_memory() -> None:
    """Room for hashing a million customer ids (this transaction only): with
    the default 4 MB a hashed IN/NOT IN subplan falls back to re-running its
    subquery for every customer. And no JIT compilation: the refresh's
    statements are estimated expensive enough to trigger it, and compiling
    them costs 100 ms or more, more than an incremental refresh takes, and
    gains little on a full one."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('work_mem', %s, true), set_config('jit', 'off', true)",
            [settings.SEGMENT_REFRESH_WORK_MEM],
        )


def _lease_claim(segment_id: int, *, now: datetime) -> str | None:
    """Claim the segment's refresh lease: a compare-and-set that changes the
    row only when no lease is held or it has expired, so of any number of
    concurrent claims exactly one gets it (PostgreSQL re-checks the condition
    after waiting for a competing update).
    Returns the lease's token, or None when another refresh holds it."""
    token = secrets.token_hex(16)
    claimed = (
        Segment.objects.filter(pk=segment_id)
        .filter(Q(refresh_lease_until__isnull=True) | Q(refresh_lease_until__lte=now))
        .update(refresh_lease_until=now + REFRESH_LEASE, refresh_lease_token=token)
    )
    return token if claimed == 1 else None
