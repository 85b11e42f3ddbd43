"""Which customers an incremental refresh re-evaluates.

Between a segment's refresh at `t0` and the next at `t1`, a customer's
membership can change for two reasons only:

1. **Its data changed**: it was created, its traits changed, or events were
   stored for it. Every such write stamps `Customer.touched_seq` (see the touch
   stamps in apps/customers/services.py), so these are the customers stamped at
   or above the watermark the previous refresh recorded.
2. **Time passed**: a time-relative part of the condition flipped with no new
   data. Each such part has *edges*, instants relative to now at which its
   truth can change: "no login for 14 days" changes when the last login
   crosses now - 14 days, "renewal within 30 days" when the renewal time
   crosses now or now + 30 days, "usage down by half over 14 days" when an
   event crosses now, now - 14 or now - 28 days. The customers whose data
   crossed an edge while the edge moved from `t0 + offset` to `t1 + offset`
   are found by index range scans (Event by name and time, EventStat by name
   and last_at, a date trait by an expression index). A date trait of an
   account (`{"account": {"trait": "renewal_at", "op": "within_next", …}}`)
   has edges too: the members of the accounts whose date crossed one, found
   by reading the accounts (far fewer than customers).

An account's traits changing is a change of its members' data: the `group`
call that changes them stamps every member (apps/customers/services/
accounts.py), as it stamps a customer who joins an account.

The union of both is the candidate set. Only the candidates are tested against
the condition and diffed against their own open memberships: everyone else
keeps the membership the previous refresh gave them, which is still right.
Nested dynamic segments are compiled inline, so their edges are the outer
segment's too; a static segment's list is covered by its `list_version` in
the digest (an upload makes the next refresh of every dependant a full one).
"""

import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, connection
from django.db.models import Q

from apps.customers.models import Account, AccountMembership, Customer, Event, EventStat

from .conditions.parsing import parse
from .conditions.traits_sql import trait_time_index_name, trait_time_sql
from .conditions.tree import (
    NPS_EVENT,
    AccountMatch,
    All,
    AnyOf,
    Condition,
    EventCount,
    EventDrop,
    EventRecency,
    Not,
    NpsCategory,
    SegmentRef,
    TraitCompare,
    TraitDate,
)
from .conditions.validation import segment_refs

logger = logging.getLogger(__name__)

# The name the candidate set has inside the refresh's SQL.
SCOPE = "tenure_scope"


@dataclass
class Edges:
    """Where time alone can change a condition's outcome, as (name, offset from
    now) pairs: Event.occurred_at, EventStat.last_at, or a date trait crossing
    now + offset."""

    event_times: set[tuple[str, timedelta]] = field(default_factory=set)
    last_times: set[tuple[str, timedelta]] = field(default_factory=set)
    trait_times: set[tuple[str, timedelta]] = field(default_factory=set)
    account_trait_times: set[tuple[str, timedelta]] = field(default_factory=set)

    @property
    def traits(self) -> set[str]:
        return {trait for trait, _ in self.trait_times}


class Unbounded(Exception):
    """A condition whose changes over time cannot be bounded: refreshed in full."""


def time_edges(condition: Condition, lookup: Callable[[str], Any]) -> Edges:
    """The edges of a (validated) condition, nested dynamic segments included.
    Raises Unbounded for a node it cannot bound (none of the language's
    segment conditions today; `since_enrolled` is for journeys only)."""
    edges = Edges()
    _collect(condition, lookup, edges)
    return edges


def _collect(c: Condition, lookup, edges: Edges, *, account: bool = False) -> None:
    """`account`: inside an `{"account": …}`, whose date traits are the
    account's."""
    zero = timedelta(0)
    if isinstance(c, All | AnyOf):
        for item in c.items:
            _collect(item, lookup, edges, account=account)
    elif isinstance(c, Not):
        _collect(c.item, lookup, edges, account=account)
    elif isinstance(c, AccountMatch):
        _collect(c.item, lookup, edges, account=True)
    elif isinstance(c, TraitCompare):
        pass  # compares with a fixed value: time does not move it
    elif isinstance(c, TraitDate):
        days = timedelta(days=c.days)
        offsets = {
            "within_next": (zero, days),
            "within_last": (-days, zero),
            "before_days_ago": (-days,),
            "after_days_ago": (-days,),
        }[c.op]
        times = edges.account_trait_times if account else edges.trait_times
        times |= {(c.trait, offset) for offset in offsets}
    elif isinstance(c, EventRecency):
        _window(edges, c.event, c.days)
    elif isinstance(c, EventCount):
        if c.value == 0:
            pass  # always true (count_gte 0) or always false
        elif c.within_days:
            _window(edges, c.event, c.within_days)
        else:
            # All time up to now: only events reaching now (dated in the future
            # when they were stored) change it without a new write.
            edges.event_times.add((c.event, zero))
    elif isinstance(c, EventDrop):
        span = timedelta(days=c.days)
        edges.event_times |= {(c.event, zero), (c.event, -span), (c.event, -2 * span)}
    elif isinstance(c, NpsCategory):
        # The latest answer (an nps_responded event): a new one stamps the
        # customer; time moves it only by an answer dated later coming due, or
        # the latest leaving the window.
        if c.within_days:
            _window(edges, NPS_EVENT, c.within_days)
        else:
            edges.event_times.add((NPS_EVENT, zero))
    elif isinstance(c, SegmentRef):
        segment = lookup(c.segment)
        if segment is not None and segment.definition:
            _collect(parse(segment.definition), lookup, edges)
        # A static segment's list changes only by upload: see the digest.
    else:
        raise Unbounded(f"{type(c).__name__} conditions")


def _window(edges: Edges, event: str, days: int) -> None:
    """The window (now - days, now]: an event enters at now, leaves at now -
    days. EventStat.last_at too, for customers whose old events were purged
    while their stat row stays."""
    span = timedelta(days=days)
    edges.event_times |= {(event, timedelta(0)), (event, -span)}
    edges.last_times.add((event, -span))


def definition_digest(definition: Any, lookup: Callable[[str], Any]) -> str:
    """A fingerprint of everything a segment's members depend on besides the
    customers' data and the time: its definition, the definitions of the
    dynamic segments it nests, and the list version of the static ones. When
    it differs from the one the open memberships were computed with, the
    refresh is a full one."""
    refs: dict[str, Any] = {}
    pending = [definition]
    while pending:
        for slug in _referenced(pending.pop()):
            if slug in refs:
                continue
            segment = lookup(slug)
            if segment is None:
                refs[slug] = None
            elif segment.definition:
                refs[slug] = segment.definition
                pending.append(segment.definition)
            else:
                refs[slug] = {"static list version": segment.list_version}
    text = json.dumps({"definition": definition, "segments": refs}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _referenced(definition: Any) -> Iterable[str]:
    """The slugs of the segments a (valid) definition names."""
    return (ref.segment for ref, _ in segment_refs(parse(definition), ""))


# --- the candidate set --------------------------------------------------------------


def candidates_sql(
    edges: Edges, *, watermark: int, since: datetime, until: datetime
) -> tuple[str, list]:
    """SQL selecting the ids of the customers that may have changed membership
    between a refresh at `since` (which recorded `watermark`) and one at
    `until`: those stamped since, and those whose data crossed an edge."""
    touched = Customer.objects.filter(touched_seq__gte=watermark).values("id")
    parts = [touched.query.sql_with_params()]
    if until > since:
        for name, offsets in _by_name(edges.event_times).items():
            crossed = _crossed("occurred_at", offsets, since, until)
            events = Event.objects.filter(crossed, name=name).values("customer_id")
            parts.append(events.query.sql_with_params())
        for name, offsets in _by_name(edges.last_times).items():
            crossed = _crossed("last_at", offsets, since, until)
            stats = EventStat.objects.filter(crossed, name=name).values("customer_id")
            parts.append(stats.query.sql_with_params())
        for trait, offsets in _by_name(edges.trait_times).items():
            parts.append(_trait_crossed(trait, offsets, since, until))
        for trait, offsets in _by_name(edges.account_trait_times).items():
            parts.append(_account_trait_crossed(trait, offsets, since, until))
    sql = " UNION ".join(f"({part})" for part, _ in parts)
    return sql, [p for _, params in parts for p in params]


def _by_name(pairs: set[tuple[str, timedelta]]) -> dict[str, list[timedelta]]:
    grouped: dict[str, list[timedelta]] = defaultdict(list)
    for name, offset in sorted(pairs):
        grouped[name].append(offset)
    return grouped


def _crossed(column: str, offsets: list[timedelta], since: datetime, until: datetime) -> Q:
    """The time column in (since + offset, until + offset] for some offset:
    inside the window at one refresh and outside at the other."""
    q = Q()
    for offset in offsets:
        q |= Q(**{f"{column}__gt": since + offset, f"{column}__lte": until + offset})
    return q


def _trait_crossed(
    trait: str, offsets: list[timedelta], since: datetime, until: datetime
) -> tuple[str, list]:
    """Customers whose date trait lies in [since + offset, until + offset] for
    some offset (closed: a superset of those whose comparison flipped, strict
    or not), read from the trait's expression index (see
    `ensure_trait_time_index`)."""
    expression = trait_time_sql(trait)
    ranges = " OR ".join([f"{expression} BETWEEN %s AND %s"] * len(offsets))
    params = [bound for offset in offsets for bound in (since + offset, until + offset)]
    return f"SELECT id FROM {Customer._meta.db_table} WHERE {ranges}", params  # noqa: S608


def _account_trait_crossed(
    trait: str, offsets: list[timedelta], since: datetime, until: datetime
) -> tuple[str, list]:
    """The members of the accounts whose date trait lies in [since + offset,
    until + offset] for some offset (as `_trait_crossed`, on the accounts'
    traits: there is no index, accounts are few beside customers)."""
    expression = trait_time_sql(trait, column="a.traits")
    ranges = " OR ".join([f"{expression} BETWEEN %s AND %s"] * len(offsets))
    params = [bound for offset in offsets for bound in (since + offset, until + offset)]
    sql = (
        f"SELECT m.customer_id FROM {AccountMembership._meta.db_table} AS m "  # noqa: S608
        f"JOIN {Account._meta.db_table} AS a ON a.id = m.account_id WHERE {ranges}"
    )
    return sql, params


# --- an expression index per date trait ----------------------------------------------


def ensure_trait_time_index(trait: str) -> None:
    """Create the expression index of a date trait when it is missing (or left
    invalid by a build that failed), concurrently, so ingest is not blocked.
    Only outside a transaction (CREATE INDEX CONCURRENTLY cannot run in one):
    inside one, it is left for the next refresh that runs outside. Without the
    index the refresh is as exact, the candidate search just reads every
    customer."""
    if connection.in_atomic_block:
        return
    name = trait_time_index_name(trait)
    table = Customer._meta.db_table
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT i.indisvalid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid "
                "WHERE c.relname = %s",
                [name],
            )
            row = cursor.fetchone()
            if row is not None and row[0]:
                return
            if row is not None:
                cursor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            logger.info("creating the time index of trait %r (%s)", trait, name)
            cursor.execute(
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} "
                f"ON {table} (({trait_time_sql(trait)}))"
            )
    except DatabaseError:
        # Another process building it at the same moment, most likely: the
        # refresh goes on without it.
        logger.warning("could not create the time index of trait %r", trait, exc_info=True)
