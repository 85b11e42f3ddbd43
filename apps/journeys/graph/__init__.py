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

The package:
- `values.py`: the small typed values a file is made of (ids, slugs, names,
  times, URLs, durations) and `JourneyError`;
- `schema.py`: the typed models: triggers, re-entry, the node types
  (`NODE_CLASSES`) and `JourneyDefinition`;
- `checks.py`: `parse_journey` and what it refuses beyond the models (graph
  shape, references, data no file may hold), the error messages that name a
  field, and the canonical form.
What reads or runs a parsed definition (the engine, the builder, import and
export, version migration) lives elsewhere.
"""

from .checks import (
    FREE_FORM,
    TOP_FIELDS,
    TYPE_WORDS,
    canonical_journey,
    data_problems,
    parse_journey,
    text_problem,
)
from .schema import (
    NODE_CLASSES,
    NODE_TYPES,
    SEND_TYPES,
    TRIGGER_TYPES,
    WAIT_TYPES,
    BranchNode,
    DateTraitTrigger,
    EmailNode,
    EventTrigger,
    ExitNode,
    JourneyDefinition,
    Node,
    NpsSurveyNode,
    Reentry,
    ScheduleTrigger,
    SegmentTrigger,
    SmsNode,
    SplitBranch,
    SplitNode,
    Trigger,
    UpdateTraitsNode,
    WaitForEventNode,
    WaitNode,
    WaitUntilNode,
    WebhookNode,
    Where,
    cron_fields,
)
from .values import (
    CRON_FIELDS,
    HHMM_RE,
    MAX_DEPTH,
    MAX_DURATION,
    MAX_NODE_ID,
    NODE_ID_RE,
    SECRET_NAME_RE,
    SLUG_RE,
    TRAIT_RE,
    WEEKDAYS,
    Duration,
    EventName,
    JourneyError,
    Name,
    NodeId,
    Scalar,
    Slug,
    TraitName,
    Ui,
)

__all__ = [
    "CRON_FIELDS",
    "FREE_FORM",
    "HHMM_RE",
    "MAX_DEPTH",
    "MAX_DURATION",
    "MAX_NODE_ID",
    "NODE_CLASSES",
    "NODE_ID_RE",
    "NODE_TYPES",
    "SECRET_NAME_RE",
    "SEND_TYPES",
    "SLUG_RE",
    "TOP_FIELDS",
    "TRAIT_RE",
    "TRIGGER_TYPES",
    "TYPE_WORDS",
    "WAIT_TYPES",
    "WEEKDAYS",
    "BranchNode",
    "DateTraitTrigger",
    "Duration",
    "EmailNode",
    "EventName",
    "EventTrigger",
    "ExitNode",
    "JourneyDefinition",
    "JourneyError",
    "Name",
    "Node",
    "NodeId",
    "NpsSurveyNode",
    "Reentry",
    "Scalar",
    "ScheduleTrigger",
    "SegmentTrigger",
    "Slug",
    "SmsNode",
    "SplitBranch",
    "SplitNode",
    "TraitName",
    "Trigger",
    "Ui",
    "UpdateTraitsNode",
    "WaitForEventNode",
    "WaitNode",
    "WaitUntilNode",
    "WebhookNode",
    "Where",
    "canonical_journey",
    "cron_fields",
    "data_problems",
    "parse_journey",
    "text_problem",
]
