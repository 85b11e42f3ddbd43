"""The condition language (DESIGN.md): parse, validate and compile to SQL.

A definition is parsed into typed, immutable nodes; any problem is refused
with a message naming the path of the bad node (`all[2].any[0]: unknown op
'eqq'`). A valid tree compiles to one boolean SQL expression over `Customer`,
evaluated as of a given `now` (events after `now` do not count), so a segment
is one query and a branch or goal tests one customer with the same SQL.

Semantics:
- Trait comparisons are JSON-type aware: a number compares with numbers, a
  string with strings (an ISO-8601 date string compares as a time with trait
  strings that are ISO-8601 times), a boolean with booleans. A trait that is
  absent or null never matches a comparison (not even `ne` or `not_in`) and
  never raises; `not` of such a comparison does match.
- `contains` is a case-sensitive substring of a string trait, or an element of
  an array trait.
- `since`/`not_since` read `EventStat` (one row per customer and event) and
  only touch `Event` for customers with events after `now` (backtests).
- Trait names are letters, digits, `_` and `-`.
- `{"nps": "promoter|passive|detractor", "within_days": 90}` reads the
  customer's latest `nps_responded` event as of `now` (surveys record one per
  answer and per change of it, with its `category`): it matches when that
  latest answer is of the category, and (with `within_days`) was given in the
  last `within_days` days. The events, not the survey tables, so segments
  never depend on the app above them and backtests see answers as of then.

- `{"account": C}` is true when any of the customer's accounts (Segment's
  `group` call) satisfies C, a trait condition or an all/any/not tree of
  them, tested on the account's traits with the same trait predicates.
- Only known customers (identified, not merged into another) ever match a
  segment or a branch: `segment_queryset` and `customer_matches` say so.

One operator beyond DESIGN.md's list, for "usage down by half":
`{"event": E, "op": "dropped_by", "percent": 50, "days": 14}` matches when the
count of E in the last `days` is at most (100 - percent)% of the count in the
`days` before, and that earlier count was not zero.

The package, in the order a definition goes through it: `tree` (the typed
nodes and operators), `parsing` (JSON to tree, errors naming the path),
`validation` (the segments a tree names exist, no cycles), `compiler` (tree to
a Q over Customer), `traits_sql` (trait predicates in PostgreSQL's jsonb), and
`examples` (the editor's library). What other apps use is imported here.
"""

from .compiler import compile_condition, customer_matches, segment_queryset
from .examples import EXAMPLES
from .parsing import parse
from .traits_sql import TraitTimeBetween
from .tree import (
    COMPARE_OPS,
    COUNT_OPS,
    DATE_OPS,
    NPS_CATEGORIES,
    NPS_EVENT,
    PRESENCE_OPS,
    RECENCY_OPS,
    TREND_OPS,
    Condition,
    ConditionError,
)
from .validation import validate_definition

__all__ = [
    "COMPARE_OPS",
    "COUNT_OPS",
    "DATE_OPS",
    "EXAMPLES",
    "NPS_CATEGORIES",
    "NPS_EVENT",
    "PRESENCE_OPS",
    "RECENCY_OPS",
    "TREND_OPS",
    "Condition",
    "ConditionError",
    "TraitTimeBetween",
    "compile_condition",
    "customer_matches",
    "parse",
    "segment_queryset",
    "validate_definition",
]
