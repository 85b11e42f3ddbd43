"""Bounds on a template's render: time, loop work and size (issue 15).

Jinja2's sandbox keeps templates away from Python's internals, not from the
machine's time and memory: in the attack run a loop of 10**10 steps held a
web worker 30 s until it was killed, and `{{ 'A' * 100000000 }}` built
100 MB. Here every render gets a budget (`budget()`), and the sandbox counts
against it:

- steps: each iteration of a `{% for %}` loop (nested loops multiply, so the
  count is for the whole render, not per loop) and each call (macros,
  methods, `range`...) count one; past TEMPLATE_MAX_STEPS the render stops.
- time: the same counting hooks look at the clock; past TEMPLATE_MAX_RENDER_S
  the render stops. (Signals cannot interrupt a render in a thread; a check
  where the work happens can.)
- size: what a single operation may build is checked before it is built
  when it can grow without bound from small inputs (`*` on strings and
  lists, `**`, `%` and `format` widths and repeats, `center`, `indent`,
  `join`, `replace`, `batch`...), and after it for everything else (`+`,
  `~`, every filter's and call's result): none may exceed
  TEMPLATE_MAX_OUTPUT_CHARS. What a render produces in all (values and the
  buffers of macros and `{% set %}` blocks) is bounded by ten times that,
  so a loop cannot keep building big values; a part's output is streamed
  and stops once over TEMPLATE_MAX_OUTPUT_CHARS.

An over-limit render raises `TemplateLimitError` (a `SecurityError`, so the
save-time check reports it too), naming the limit and its setting.

Cost: a normal template pays only for its loops (a generator step each) and
calls (a counter and a clock read); text and `{{ variable }}` output pay
nothing but the streaming of the part's chunks. Measured on a journey's
email template: see the commit that added this module.

UPSTREAM MIRROR: `_BoundedCodeGenerator` changes three methods of Jinja2's
code generator (`buffer`, `visit_For`, `visit_Concat`) and `call`/
`call_binop` of the sandbox, written against Jinja2 3.1.6. The sources they
rely on are pinned by hashes in `UPSTREAM` and checked by
tests/messaging/test_template_limits.py: when Jinja2 changes these, that
test fails and this module is to be read against the new source.
"""

import functools
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from contextvars import ContextVar
from itertools import islice
from typing import Any

from django.conf import settings
from jinja2 import Template, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

# The Jinja2 sources this module mirrors or relies on, as of Jinja2 3.1.6:
# the first 16 hex digits of the sha256 of `inspect.getsource` (a test checks
# them). What each is relied on for:
UPSTREAM = {
    # buffers are made here (overridden: ours count what is written)
    "jinja2.compiler.CodeGenerator.buffer": "40a2b99f2f69acf0",
    # writes its iterable with self.visit(node.iter) (ours wraps it)
    "jinja2.compiler.CodeGenerator.visit_For": "d4f9a74e3bdffca6",
    # writes one expression (ours wraps it in environment.checked)
    "jinja2.compiler.CodeGenerator.visit_Concat": "be4721533d19611d",
    # writes to buffers only through .append and .extend
    "jinja2.compiler.CodeGenerator.visit_Output": "c6adf91f7665468f",
    # every call goes through environment.call in a sandbox
    "jinja2.compiler.CodeGenerator.visit_Call": "f851b3bf5364bdfe",
    # the dispatch our `visit` wraps
    "jinja2.compiler.CodeGenerator.visit": "8aa072212db8e8d4",
    "jinja2.sandbox.SandboxedEnvironment.call": "dec31de35df6b71a",
    "jinja2.sandbox.SandboxedEnvironment.call_binop": "393f399d5581f8e2",
    # str.format comes to `call` wrapped, with the method as __wrapped__
    "jinja2.sandbox.SandboxedEnvironment.wrap_str_format": "8b8bf2a9a0b9d0e0",
    # intercepted operators are never folded into constants at compile time
    "jinja2.nodes.BinExpr.as_const": "3517cc943e4e7d7b",
    # filters are folded at compile time unless they raise (ours do when too big)
    "jinja2.nodes._FilterTestCommon.as_const": "69e000cc27c3fcf5",
}

# Bits an integer may have (about 20,000 decimal digits, more than Python
# will print: its int-to-str limit is 4,300 digits). Multiplying numbers of
# millions of bits takes seconds in one C call no clock check can stop.
MAX_INT_BITS = 65_536
# How many times TEMPLATE_MAX_OUTPUT_CHARS a render may produce in all.
PRODUCED_FACTOR = 10


class TemplateLimitError(SecurityError):
    """A render went over one of the bounds; the message names the setting."""


class Budget:
    """The work one render may still do (see the module docstring)."""

    __slots__ = (
        "deadline",
        "max_chars",
        "max_produced",
        "max_render_s",
        "max_steps",
        "produced",
        "steps",
    )  # fmt: skip

    def __init__(self) -> None:
        self.steps = 0
        self.max_steps = settings.TEMPLATE_MAX_STEPS
        self.max_render_s = settings.TEMPLATE_MAX_RENDER_S
        self.deadline = time.monotonic() + self.max_render_s
        self.max_chars = settings.TEMPLATE_MAX_OUTPUT_CHARS
        self.produced = 0
        self.max_produced = self.max_chars * PRODUCED_FACTOR

    def step(self) -> None:
        self.steps += 1
        if self.steps > self.max_steps:
            raise TemplateLimitError(
                f"the template did more than {self.max_steps:,} loop steps and calls "
                "(TEMPLATE_MAX_STEPS)"
            )
        if time.monotonic() > self.deadline:
            self.late()

    def late(self) -> None:
        raise TemplateLimitError(
            f"the template took longer than {self.max_render_s:g} s to render "
            "(TEMPLATE_MAX_RENDER_S)"
        )

    def produce(self, n: int) -> None:
        self.produced += n
        if self.produced > self.max_produced:
            raise TemplateLimitError(
                f"the template built more than {self.max_produced:,} characters in all "
                f"({PRODUCED_FACTOR} x TEMPLATE_MAX_OUTPUT_CHARS)"
            )
        if time.monotonic() > self.deadline:
            self.late()

    def iterate(self, iterable: Iterable) -> Iterator:
        for item in iterable:
            self.step()
            yield item


_BUDGET: ContextVar[Budget | None] = ContextVar("template_budget", default=None)


class budget:
    """The budget of one render (all parts of one message share it). A
    class, not @contextmanager: that costs a microsecond a render."""

    __slots__ = ("token",)

    def __enter__(self) -> Budget:
        current = Budget()
        self.token = _BUDGET.set(current)
        return current

    def __exit__(self, *exc: object) -> None:
        _BUDGET.reset(self.token)


def _max_chars() -> int:
    current = _BUDGET.get()
    return current.max_chars if current is not None else settings.TEMPLATE_MAX_OUTPUT_CHARS


def _too_big(what: str, size: int) -> None:
    limit = _max_chars()
    if size > limit:
        raise TemplateLimitError(
            f"{what} would be {size:,} characters long, more than {limit:,} "
            "(TEMPLATE_MAX_OUTPUT_CHARS)"
        )


_CONTAINERS = (list, tuple, dict, set, frozenset)


def weight(value: Any, limit: int) -> int:
    """How long `value` is when written out, roughly: characters of its
    strings plus one per item, counting a list that holds the same list many
    times as many times (`[[0] * 10**5] * 10**5` is short in memory and ten
    billion when printed). The walk stops once past `limit`."""
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            total += len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, _CONTAINERS):
            total += len(item)
            stack.extend(item)
        else:
            total += 1
    return total


def checked(value: Any, what: str = "a value") -> Any:
    """`value` if it is within the size bounds (counted as produced)."""
    if isinstance(value, str):
        size = len(value)
    elif isinstance(value, _CONTAINERS):
        size = weight(value, _max_chars())
    elif isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise TemplateLimitError(f"{what}: a number of more than {MAX_INT_BITS:,} bits")
    else:
        return value
    _too_big(what, size)
    current = _BUDGET.get()
    if current is not None:
        current.produce(size)
    return value


# Chunks of output read at once: their sizes are summed in C (a check per
# chunk cost a third of a typical email's render); bounded so that what
# goes past the limit before it is seen stays a few megabytes.
_CHUNKS_AT_ONCE = 8


def render(template: Template, context: Mapping[str, Any]) -> str:
    """`template` rendered with `context`, its output refused once over the
    limit (Jinja2's own render joins it all first). Errors are raised as
    Template.render raises them (with the template's line numbers)."""
    limit, size, out = _max_chars(), 0, []
    chunks = template.root_render_func(template.new_context(context))
    try:
        while batch := list(islice(chunks, _CHUNKS_AT_ONCE)):
            size += sum(map(len, batch))
            if size > limit:
                raise TemplateLimitError(
                    f"the output is longer than {limit:,} characters (TEMPLATE_MAX_OUTPUT_CHARS)"
                )
            out += batch
    except Exception:
        chunks.close()
        template.environment.handle_exception()
    return "".join(out)


# --- estimates of what an operation would build, before it is built ---------

_DIGITS = re.compile(r"\d+")
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(\d*)(?:\.(\d*))?")
_FORMATTER = string.Formatter()


def _size(value: Any) -> int:
    return len(value) if isinstance(value, Sized) and not isinstance(value, Mapping) else 16


def _widths(fmt: str, what: str) -> None:
    """Refuse a format string that asks for a width or precision over the
    limit (`{:>999999999}`, `%.999999999f`); digits elsewhere are text."""
    limit = _max_chars()
    if "%" in fmt:
        for width, precision in _PERCENT_SPEC.findall(fmt):
            for digits in (width, precision):
                if digits and (len(digits) > 18 or int(digits) > limit):
                    _too_big(what, int(digits[:19]))
    if "{" in fmt:
        try:
            specs = [spec for _, _, spec, _ in _FORMATTER.parse(fmt) if spec]
        except ValueError:  # not a valid format: str.format will say so
            return
        for spec in specs:
            for digits in _DIGITS.findall(spec):
                if len(digits) > 18 or int(digits) > limit:
                    _too_big(what, int(digits[:19]))


def _values(args: Any) -> list:
    if isinstance(args, Mapping):
        return list(args.values())
    if isinstance(args, tuple | list):
        return list(args)
    return [args]


def _nested_spec(fmt: str) -> bool:
    """Whether a `str.format` string takes a width from its arguments."""
    try:
        return any(spec and "{" in spec for _, _, spec, _ in _FORMATTER.parse(fmt))
    except ValueError:  # not a valid format: str.format will say so
        return False


def _format_estimate(fmt: str, values: list, what: str) -> None:
    """`%` and `str.format`: every field may repeat the biggest argument."""
    _widths(fmt, what)
    fields = fmt.count("%") + fmt.count("{")
    biggest = max((_size(v) for v in values), default=0)
    _too_big(what, len(fmt) + fields * biggest)
    # Widths given as arguments (`%*d`, `{:{w}}`): as big as the number asks.
    limit = _max_chars()
    big = [v for v in values if isinstance(v, int) and not isinstance(v, bool) and v > limit]
    if big and ("*" in fmt or _nested_spec(fmt)):
        _too_big(what, big[0])


def _repeat_estimate(left: Any, right: Any) -> None:
    for seq, n in ((left, right), (right, left)):
        if isinstance(seq, str) and isinstance(n, int):
            _too_big("a repeated value", len(seq) * max(n, 0))
        elif isinstance(seq, list | tuple) and isinstance(n, int):
            _too_big("a repeated value", weight(seq, _max_chars()) * max(n, 0))
    if (isinstance(left, int) and isinstance(right, int)
            and left.bit_length() + right.bit_length() > MAX_INT_BITS):  # fmt: skip
        raise TemplateLimitError(f"a product of more than {MAX_INT_BITS:,} bits")


def _power_estimate(left: Any, right: Any) -> None:
    if (isinstance(left, int) and isinstance(right, int) and right > 0
            and max(left.bit_length(), 1) * right > MAX_INT_BITS):  # fmt: skip
        raise TemplateLimitError(f"a power of more than {MAX_INT_BITS:,} bits")


def _join_estimate(sep: Any, items: list) -> None:
    _too_big(
        "a join",
        len(str(sep)) * len(items) + sum(len(x) for x in items if isinstance(x, str)),
    )


def _replace_estimate(s: Any, old: Any, new: Any, count: Any = None) -> None:
    s, old, new = str(s), str(old), str(new)
    n = s.count(old) if old else len(s) + 1
    if isinstance(count, int) and count >= 0:
        n = min(n, count)
    _too_big("a replace", len(s) + n * max(len(new) - len(old), 0))


def _width_estimate(what: str, s: Any, width: Any) -> None:
    if isinstance(width, int):
        _too_big(what, max(len(str(s)), width))


# Filters whose result can be far bigger than their inputs: the estimate of
# what they would build, from the arguments they are given (after any
# context/environment argument).
def _filter_center(value: Any, width: Any = 80, *_: Any, **__: Any) -> None:
    _width_estimate("center", value, width)


def _filter_indent(s: Any, width: Any = 4, *_: Any, **__: Any) -> None:
    per_line = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    text = str(s)
    _too_big("indent", len(text) + per_line * (text.count("\n") + 1))


def _filter_wordwrap(s: Any, width: Any = 79, _b: Any = True, wrapstring: Any = None,
                     *_: Any, **kwargs: Any) -> None:  # fmt: skip
    wrapstring = kwargs.get("wrapstring", wrapstring)
    _too_big("wordwrap", len(str(s)) * (1 + len(str(wrapstring or "\n"))))


def _filter_count(what: str) -> Callable[..., None]:
    def estimate(value: Any, n: Any = 0, fill_with: Any = None, **kwargs: Any) -> None:
        n = kwargs.get("linecount", kwargs.get("slices", n))
        fill_with = kwargs.get("fill_with", fill_with)
        if isinstance(n, int):
            _too_big(what, n * max(weight(fill_with, _max_chars()), 1))

    return estimate


def _filter_replace(s: Any, old: Any = "", new: Any = "", count: Any = None) -> None:
    _replace_estimate(s, old, new, count)


def _filter_format(value: Any, *args: Any, **kwargs: Any) -> None:
    _format_estimate(str(value), _values(kwargs or args), "format")


def _filter_sum(iterable: Any, attribute: Any = None, start: Any = 0) -> None:
    if not isinstance(start, int | float) or isinstance(start, bool):
        raise TemplateLimitError("sum: only numbers can be summed in templates")


def _filter_tojson(value: Any, indent: Any = None) -> None:
    if isinstance(indent, int) and indent > 16:
        raise TemplateLimitError("tojson: an indent of more than 16")


_ESTIMATES: dict[str, Callable[..., None]] = {
    "center": _filter_center,
    "indent": _filter_indent,
    "wordwrap": _filter_wordwrap,
    "batch": _filter_count("batch"),
    "slice": _filter_count("slice"),
    "replace": _filter_replace,
    "format": _filter_format,
    "sum": _filter_sum,
    "tojson": _filter_tojson,
}


# Jinja2's filters whose result is at most a few times the size of what they
# are given and that take no size to build to: left as they are (a wrapper
# is a tenth of a microsecond a call). Any other filter, one added later
# included, has its result checked.
UNCHECKED_FILTERS = frozenset(
    ("abs", "attr", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first",
     "float", "forceescape", "groupby", "int", "items", "last", "length", "list", "lower", "map",
     "max", "min", "random", "reject", "rejectattr", "reverse", "round", "safe", "select",
     "selectattr", "sort", "string", "striptags", "title", "trim", "truncate", "unique", "upper",
     "urlencode", "wordcount", "filesizeformat")
)  # fmt: skip


def _bounded_filter(name: str, func: Callable) -> Callable:
    """`func` with its result checked, and what it would build estimated
    first where it can be far bigger than its inputs."""
    if name in UNCHECKED_FILTERS:
        return func
    skip = 1 if hasattr(func, "jinja_pass_arg") else 0
    estimate = _ESTIMATES.get(name)

    if name == "join":

        @functools.wraps(func)
        def bounded_join(*args: Any, **kwargs: Any) -> Any:
            args = list(args)
            items = args[skip] = list(args[skip])
            sep = args[skip + 1] if len(args) > skip + 1 else kwargs.get("d", "")
            _join_estimate(sep, items)
            return checked(func(*args, **kwargs), "join")

        return bounded_join

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        if estimate is not None:
            estimate(*args[skip:], **kwargs)
        return checked(func(*args, **kwargs), name)

    return bounded


# str methods that can build far more than their inputs, and their estimates.
def _str_method(method: Any) -> tuple[str, str] | None:
    target = getattr(method, "__wrapped__", method)  # the sandbox wraps str.format
    owner = getattr(target, "__self__", None)
    if isinstance(owner, str):
        return owner, target.__name__
    return None


def _str_call_estimate(s: str, name: str, args: tuple, kwargs: dict) -> tuple:
    if name in ("center", "ljust", "rjust", "zfill") and args:
        _width_estimate(name, s, args[0])
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(size, int):
            _too_big(name, len(s) + s.count("\t") * size)
    elif name == "join" and args:
        items = list(args[0])
        _join_estimate(s, items)
        args = (items, *args[1:])
    elif name == "replace" and len(args) >= 2:
        _replace_estimate(s, *args[:3])
    elif name == "translate" and args and isinstance(args[0], Mapping):
        biggest = max((_size(v) for v in args[0].values()), default=1)
        _too_big(name, len(s) * max(biggest, 1))
    elif name in ("format", "format_map"):
        _format_estimate(s, _values(args[0] if name == "format_map" and args else
                                    [*args, *kwargs.values()]), name)  # fmt: skip
    return args


# --- the environment and its code generator ----------------------------------


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja2's code generator with the loops counted, `~` results checked
    and the buffers of macros and `{% set %}` blocks counted (UPSTREAM
    MIRROR: see the module docstring)."""

    def buffer(self, frame: Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.output_buffer()")

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        # Jinja2 allows no new node types: the iterable is marked by identity
        # and wrapped where it is written (`visit`).
        self._counted = getattr(self, "_counted", set()) | {id(node.iter)}
        super().visit_For(node, frame)

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        if id(node) not in getattr(self, "_counted", ()):
            return super().visit(node, *args, **kwargs)
        self.write("environment.steps(")
        super().visit(node, *args, **kwargs)
        self.write(")")
        return None

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.checked(")
        super().visit_Concat(node, frame)
        self.write(")")


class _OutputBuffer(list):
    """A macro's or `{% set %}` block's output, counted as it is written."""

    __slots__ = ()

    def append(self, item: str) -> None:
        current = _BUDGET.get()
        if current is not None:
            current.produce(len(item))
        list.append(self, item)

    def extend(self, items: Iterable[str]) -> None:
        items = tuple(items)
        current = _BUDGET.get()
        if current is not None:
            current.produce(sum(map(len, items)))
        list.extend(self, items)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with the budget's bounds (module docstring)."""

    code_generator_class = _BoundedCodeGenerator
    # Intercepted, these are also never folded into constants when a
    # template is compiled (Jinja2 evaluates constant expressions then).
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}
        self.output_buffer = _OutputBuffer
        self.checked = checked

    def add_filter(self, name: str, func: Callable) -> None:
        self.filters[name] = _bounded_filter(name, func)

    @staticmethod
    def steps(iterable: Iterable) -> Iterable:
        current = _BUDGET.get()
        return iterable if current is None else current.iterate(iterable)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        current = _BUDGET.get()
        if current is not None:
            current.step()
        method = _str_method(__obj)
        if method is not None:
            args = _str_call_estimate(*method, args, kwargs)
        return checked(super().call(__context, __obj, *args, **kwargs), "a call's result")

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _repeat_estimate(left, right)
        elif operator == "**":
            _power_estimate(left, right)
        elif operator == "%" and isinstance(left, str):
            _format_estimate(left, _values(right), "a % format")
        return checked(super().call_binop(context, operator, left, right), f"{operator!r}")
