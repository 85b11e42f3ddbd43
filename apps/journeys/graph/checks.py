"""Parsing a journey file: everything it refuses, with messages that name
the field, and its canonical form (apps/journeys/graph/__init__.py
describes the file)."""

from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import ValidationError

from .schema import (
    NODE_CLASSES,
    NODE_TYPES,
    TRIGGER_TYPES,
    WAIT_TYPES,
    BranchNode,
    EmailNode,
    JourneyDefinition,
    NpsSurveyNode,
    SmsNode,
    WebhookNode,
    _Node,
)
from .values import MAX_DEPTH, NODE_ID_RE, JourneyError

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
        from ..webhook_hosts import url_problem

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
