"""The engine: claiming due enrollments and moving them through their graph.

- `tick.py`: the beat's tick wakes enrollments whose awaited event arrived,
  claims what is due (`FOR UPDATE SKIP LOCKED` and a lease) and publishes
  the claims in chunks to workers;
- `advance.py`: a worker advances a chunk in one transaction, its
  enrollments walking their graphs side by side, their sends and branch
  conditions answered for all at once, their writes made in bulk;
- `visit.py`: what a node visit is given (`Run`) and decides (`Move`), and
  what the chunk gathers (`Unit`);
- `nodes.py`: the node handlers, one per node type.

The time and wording helpers the handlers use (zones, the next local time,
a moment or a span in words) live in `apps/journeys/times.py`.

Its entry points, for the tasks, the triggers, the backtest and the tests:
"""

from .advance import AdvanceResult, enrollment_fail, enrollments_advance
from .nodes import split_branch
from .tick import TickResult, engine_tick, wake_waiting

__all__ = [
    "AdvanceResult",
    "TickResult",
    "engine_tick",
    "enrollment_fail",
    "enrollments_advance",
    "split_branch",
    "wake_waiting",
]
