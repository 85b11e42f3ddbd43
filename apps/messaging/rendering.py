"""Message templates: Jinja2 in a sandbox, rendered against a documented,
plain-data context (docs/templates.md).

Marketers write these templates, so they are treated as untrusted code:

- Jinja2's `ImmutableSandboxedEnvironment`: no attribute starting with `_`
  (`__class__`, `__globals__`, `cycler.__init__`), no mutation of the context,
  ranges bounded. An attempt fails the render at once with a `SecurityError`
  naming the attribute (it is never silently rendered as empty).
- Bounded (apps/messaging/sandbox.py): a render that runs too long, loops
  too much or builds too much fails with the limit and its setting named.
- The context holds plain data only (dicts, lists, strings, numbers, times):
  `customer` is a dict built from the row, never the model, so no template can
  reach the ORM, a manager or the settings.
- `StrictUndefined`: a variable the customer does not have fails the render
  with its name (`customer.plan is undefined`) unless the template says what
  to do instead (`{{ customer.plan | default("your plan") }}`).
- HTML is autoescaped; subject, preheader, text and SMS bodies are not (they
  are not HTML).

Compliance (RELIABILITY.md 18): marketing email must show the company's postal
address and the unsubscribe link, in both its HTML and its text part. A
template without them is refused when saved (`template_check`, used by
`Template.clean()` and so by the admin) and, should one reach a send anyway, at
render time.
"""

import html as html_lib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from jinja2 import (
    ChainableUndefined,
    StrictUndefined,
    TemplateSyntaxError,
    Undefined,
    meta,
    pass_context,
)
from jinja2 import Template as JinjaTemplate
from jinja2.exceptions import SecurityError, UndefinedError

from apps.customers.models import CONTACT_FIELDS, Customer, Event

from . import links, render_hooks, sandbox
from .models import Category, Channel, Message, Template

# The top-level names a template may use (docs/templates.md). Callers may add
# more through `context`, other apps through `render_hooks.on_context` (surveys
# adds `links.nps`).
CONTEXT_NAMES = frozenset({"customer", "event", "journey", "message", "links", "company", "now"})

# Parts of a template, in the order they are rendered, with whether they are HTML.
EMAIL_PARTS = (("subject", False), ("preheader", False), ("html", True), ("text", False))
SMS_PARTS = (("body", False),)


class TemplateRenderError(Exception):
    """A template could not be rendered; the message says where and why, in
    words a marketer can act on (`html: line 3: customer.plan is undefined`)."""


@dataclass(frozen=True)
class Rendered:
    subject: str = ""
    preheader: str = ""
    html: str = ""  # with the preheader as hidden text at the top of the body
    text: str = ""  # the email's text part: the template's, or derived from the HTML
    body: str = ""  # SMS


# --- the sandbox -------------------------------------------------------------


class _Namespace(dict):
    """A plain dict that knows its path in the context, so a missing key is
    reported as `customer.plan is undefined` rather than Jinja's
    `'dict object' has no attribute 'plan'`."""

    __slots__ = ("path",)

    def __init__(self, data: Mapping, path: str) -> None:
        super().__init__(data)
        self.path = path


_HINT = "{path} is undefined (use {{{{ {path} | default(...) }}}} if it may be missing)"


class _Sandbox(sandbox.BoundedSandbox):
    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        # Fail at once, even under `is defined` or `default`: an attempt to
        # reach Python internals is an error to fix, never an empty string.
        raise SecurityError(
            f"access to attribute {attribute!r} of a {type(obj).__name__} is not allowed "
            "in templates"
        )

    def _named(self, obj: Any, name: Any, value: Any) -> Any:
        if isinstance(value, Undefined) and isinstance(obj, _Namespace):
            path = f"{obj.path}.{name}"
            return self.undefined(hint=_HINT.format(path=path), obj=obj, name=name)
        return value

    def getattr(self, obj: Any, attribute: str) -> Any:
        if attribute.startswith("_"):
            # Even where no such attribute exists: probing is refused loudly.
            self.unsafe_undefined(obj, attribute)
        return self._named(obj, attribute, super().getattr(obj, attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        return self._named(obj, argument, super().getitem(obj, argument))


class _PreviewUndefined(ChainableUndefined):
    """For `template_check`'s sample render: a trait the sample customer lacks
    renders as empty, so the check looks at the template, not the sample."""


@pass_context
def _datetime_filter(ctx, value: Any, format: str = "%B %d, %Y") -> str:
    """`{{ customer.renewal_at | datetime("%d %B") }}`: an ISO-8601 text or a
    time, shown in the customer's zone (UTC if it has none)."""
    if isinstance(value, Undefined):
        return str(value)  # StrictUndefined raises, naming the variable
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"datetime: {value!r} is not an ISO-8601 time") from None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.strftime(format)
    if not isinstance(value, datetime):
        raise ValueError(f"datetime: expected a time, got {type(value).__name__}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    customer = ctx.get("customer")
    zone = customer.get("timezone") if isinstance(customer, dict) else ""
    try:
        value = value.astimezone(ZoneInfo(zone)) if zone else value.astimezone(UTC)
    except (ValueError, KeyError):  # an unknown zone: show UTC
        value = value.astimezone(UTC)
    return value.strftime(format)


def _make_env(*, autoescape: bool, undefined: type[Undefined]) -> _Sandbox:
    env = _Sandbox(autoescape=autoescape, undefined=undefined, keep_trailing_newline=True)
    env.globals.pop("lipsum", None)  # a function object marketers do not need
    env.add_filter("datetime", _datetime_filter)
    return env


_ENVS = {
    (html, strict): _make_env(
        autoescape=html, undefined=StrictUndefined if strict else _PreviewUndefined
    )
    for html in (True, False)
    for strict in (True, False)
}


@lru_cache(maxsize=1024)
def _compile(source: str, html: bool, strict: bool) -> JinjaTemplate:
    """Compiled once per source text: a journey renders the same template for
    every customer. Raises TemplateSyntaxError."""
    return _ENVS[(html, strict)].from_string(source)


# --- the context -------------------------------------------------------------


_SCALARS = (str, bool, int, float, Decimal, date, type(None))

# How deep the context's data may nest. Stored traits and event properties
# came from JSON that older versions took at any depth: a customer's traits
# nested 900 levels deep overflowed Python's stack here and took the whole
# send batch down (issue 15). Deeper data fails that customer's message
# alone, naming the trait; no template needs more than a handful of levels.
MAX_CONTEXT_DEPTH = 64


def _plain(value: Any, path: str, depth: int = 0) -> Any:
    """A copy of `value` made of plain data only, dicts named by their path.
    Anything else (a model, a queryset, a function) is refused: that is how
    templates are kept away from the ORM and the settings."""
    # Scalars are taken as they are without a call (or their path, which is
    # only for names and errors): a context has dozens, on every render.
    if isinstance(value, _SCALARS):
        return value
    if depth >= MAX_CONTEXT_DEPTH:
        raise TemplateRenderError(
            f"{_top(path)}: data nested more than {MAX_CONTEXT_DEPTH} levels deep "
            "cannot be given to a template"
        )
    if isinstance(value, Mapping):
        return _Namespace(
            {
                str(k): v if isinstance(v, _SCALARS) else _plain(v, f"{path}.{k}", depth + 1)
                for k, v in value.items()
            },
            path,
        )
    if isinstance(value, list | tuple):
        return [
            v if isinstance(v, _SCALARS) else _plain(v, f"{path}[{i}]", depth + 1)
            for i, v in enumerate(value)
        ]
    if isinstance(value, Event):
        return _plain(_event_data(value), path, depth)
    raise TypeError(
        f"{path}: a {type(value).__name__} cannot be given to a template; pass plain data "
        "(dicts, lists, strings, numbers, times)"
    )


def _top(path: str) -> str:
    """`customer.tree` of `customer.tree.x.x[0].x`: the name a marketer knows."""
    return ".".join(path.split("[", 1)[0].split(".")[:2])


def _event_data(event: Event) -> dict:
    return {"name": event.name, "properties": event.properties, "occurred_at": event.occurred_at}


def customer_data(customer: Customer) -> dict:
    """What a template sees of a customer: every trait, then the contact
    columns and the external id (the columns win over a trait of the same
    name: they are the validated values)."""
    data = dict(customer.traits or {})
    data.update({field: getattr(customer, field) for field in CONTACT_FIELDS})
    data["external_id"] = customer.external_id
    return data


def render_context(
    template: Template,
    *,
    customer: Customer,
    now: datetime,
    message: Message | None = None,
    context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The documented context (docs/templates.md), as plain data."""
    stored = message is not None and message.pk is not None
    base: dict[str, Any] = {
        "customer": customer_data(customer),
        "company": {
            "name": settings.COMPANY_NAME,
            "postal_address": settings.COMPANY_POSTAL_ADDRESS,
        },
        "links": {
            "unsubscribe": links.unsubscribe_url(message if stored else None),
            "preferences": links.preferences_url(message if stored else customer),
        },
        "message": {
            "id": message.pk if stored else None,
            "channel": template.channel,
            "category": template.category,
            "topic": template.topic,
            "template": template.slug,
        },
        "journey": {
            "slug": message.journey if message is not None else "",
            "node_id": message.node_id if message is not None else "",
        },
        "now": now,
    }
    # What other apps add (surveys: links.nps), then what the caller passed.
    added = render_hooks.context_additions(template=template, customer=customer, message=message)
    for key, value in [*added.items(), *(context or {}).items()]:
        if isinstance(base.get(key), dict) and isinstance(value, Mapping):
            base[key] = {**base[key], **value}  # e.g. more links, the journey's name
        else:
            base[key] = value
    return {key: _plain(value, key) for key, value in base.items()}


# --- rendering ---------------------------------------------------------------


def _template_line(exc: BaseException) -> int | None:
    """The template line an error was raised on: Jinja rewrites tracebacks so
    template frames carry the template's own line numbers."""
    if isinstance(exc, TemplateSyntaxError):
        return exc.lineno
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _describe(part: str, exc: BaseException) -> str:
    line = _template_line(exc)
    where = f"{part}: line {line}" if line else part
    if isinstance(exc, UndefinedError | SecurityError | TemplateSyntaxError):
        detail = exc.message or str(exc)
    else:
        detail = f"{type(exc).__name__}: {exc}"
    return f"{where}: {detail}"


def _render_part(part: str, source: str, context: dict, *, html: bool, strict: bool = True) -> str:
    if not source:
        return ""
    try:
        return sandbox.render(_compile(source, html, strict), context)
    except Exception as exc:  # template code is the marketer's: any error is theirs
        raise TemplateRenderError(_describe(part, exc)) from exc


def render(
    template: Template,
    *,
    customer: Customer,
    now: datetime,
    message: Message | None = None,
    context: Mapping[str, Any] | None = None,
) -> Rendered:
    """Render every part of `template` for `customer`. Pass the stored
    `message` so its links carry its id (without one they are preview links).
    Raises TemplateRenderError naming the part, the line and the problem."""
    data = render_context(template, customer=customer, now=now, message=message, context=context)
    rendered = _render_all(template, data, strict=True)
    if template.channel == Channel.EMAIL and template.category == Category.MARKETING:
        problems = _compliance_problems(rendered, data["links"]["unsubscribe"])
        if problems:
            raise TemplateRenderError("; ".join(problems))
    return rendered


def _render_all(template: Template, data: dict, *, strict: bool) -> Rendered:
    with sandbox.budget():  # one for all of the message's parts
        return _render_parts(template, data, strict=strict)


def _render_parts(template: Template, data: dict, *, strict: bool) -> Rendered:
    if template.channel == Channel.SMS:
        return Rendered(body=_render_part("body", template.body, data, html=False, strict=strict))
    subject = _render_part("subject", template.subject, data, html=False, strict=strict)
    preheader = _render_part("preheader", template.preheader, data, html=False, strict=strict)
    html = _render_part("html", template.html, data, html=True, strict=strict)
    text = _render_part("text", template.text, data, html=False, strict=strict)
    if not template.text.strip() and html:
        text = html_to_text(html)
    return Rendered(
        # A header: one line, whatever the template's line breaks.
        subject=" ".join(subject.split()),
        preheader=" ".join(preheader.split()),
        html=with_preheader(html, " ".join(preheader.split())),
        text=text.strip() + "\n" if text.strip() else "",
    )


def _compliance_problems(rendered: Rendered, unsubscribe: str) -> list[str]:
    address = settings.COMPANY_POSTAL_ADDRESS.strip()
    if not address:
        return ["marketing email needs a postal address: COMPANY_POSTAL_ADDRESS is not set"]
    parts = [("HTML", rendered.html, True), ("text", rendered.text, False)]
    problems = []
    for what, needle, variable in (
        ("the unsubscribe link", unsubscribe, "links.unsubscribe"),
        ("the company's postal address", address, "company.postal_address"),
    ):
        missing = [name for name, content, is_html in parts
                   if content and not _contains(content, needle, is_html)]  # fmt: skip
        if missing:
            problems.append(
                f"marketing email must contain {what} ({{{{ {variable} }}}}) "
                f"in its {' and '.join(missing)} part{'s' if len(missing) > 1 else ''}"
            )
    return problems


def _contains(content: str, needle: str, is_html: bool) -> bool:
    if needle in content:
        return True
    return is_html and html_lib.escape(needle) in content


PREHEADER_HTML = (
    '<div style="display:none;font-size:1px;line-height:1px;max-height:0;max-width:0;'
    'opacity:0;overflow:hidden;mso-hide:all;" aria-hidden="true">{}</div>'
)
_BODY_TAG = re.compile(r"<body\b[^>]*>", re.IGNORECASE)


def with_preheader(html: str, preheader: str) -> str:
    """The preheader as hidden text at the top of the body, where mail
    clients pick up the inbox preview line."""
    if not html or not preheader:
        return html
    hidden = PREHEADER_HTML.format(html_lib.escape(preheader))
    match = _BODY_TAG.search(html)
    if match is None:
        return hidden + html
    return html[: match.end()] + hidden + html[match.end() :]


# --- checks at save ----------------------------------------------------------


def template_problems(template: Template) -> list[tuple[str, str]]:
    """(field, problem) for everything that would keep `template` from
    rendering or from being compliant; field "" for the template as a whole."""
    problems: list[tuple[str, str]] = []
    if template.channel == Channel.SMS:
        parts = SMS_PARTS
        if not template.body.strip():
            problems.append(("body", "an SMS template needs a body"))
    elif template.channel == Channel.EMAIL:
        parts = EMAIL_PARTS
        if not template.subject.strip():
            problems.append(("subject", "an email needs a subject"))
        if not template.html.strip() and not template.text.strip():
            problems.append(("html", "an email needs an HTML or a text part"))
    else:
        return [("channel", f"unknown channel {template.channel!r}")]
    if template.category not in Category.values:
        problems.append(("category", f"unknown category {template.category!r}"))

    syntax_ok = True
    for part, html in parts:
        source = getattr(template, part)
        if not source:
            continue
        try:
            _compile(source, html, True)
        except TemplateSyntaxError as exc:
            syntax_ok = False
            problems.append((part, _describe(part, exc).removeprefix(f"{part}: ")))
            continue
        unknown = sorted(
            meta.find_undeclared_variables(_ENVS[(html, True)].parse(source))
            - CONTEXT_NAMES
            - set(_ENVS[(html, True)].globals)
        )
        if unknown:
            names = ", ".join(sorted(CONTEXT_NAMES))
            problems.append(
                (part, f"unknown variable {', '.join(unknown)} (templates can use {names})")
            )
    if syntax_ok:
        problems += _sample_problems(template)
    return problems


def _sample_customer() -> Customer:
    return Customer(
        pk=0,
        external_id="sample",
        email="sample@example.com",
        phone="+15555550100",
        timezone="UTC",
        traits={"first_name": "Sam", "last_name": "Sample"},
    )


def _sample_problems(template: Template) -> list[tuple[str, str]]:
    """Render with a sample customer (missing traits render empty) to find
    sandbox violations and, for marketing email, the compliance footer."""
    message = Message(pk=0, customer_id=0, channel=template.channel)
    data = render_context(
        template, customer=_sample_customer(), now=datetime.now(UTC), message=message
    )
    try:
        rendered = _render_all(template, data, strict=False)
    except TemplateRenderError as exc:
        if isinstance(exc.__cause__, SecurityError):
            part, _, detail = str(exc).partition(": ")
            return [(part, detail)]
        # Some other failure on made-up data (a filter given an empty trait):
        # it says nothing about real customers, so judge the source instead.
        return _source_compliance(template)
    if template.channel == Channel.EMAIL and template.category == Category.MARKETING:
        return [("", p) for p in _compliance_problems(rendered, data["links"]["unsubscribe"])]
    return []


def _source_compliance(template: Template) -> list[tuple[str, str]]:
    if template.channel != Channel.EMAIL or template.category != Category.MARKETING:
        return []
    problems = []
    for what, variable, literal in (
        ("the unsubscribe link", "links.unsubscribe", None),
        ("the company's postal address", "company.postal_address",
         settings.COMPANY_POSTAL_ADDRESS),
    ):  # fmt: skip
        missing = [
            label
            for part, label in (("html", "HTML"), ("text", "text"))
            if getattr(template, part)
            and variable not in getattr(template, part)
            and not (literal and literal in getattr(template, part))
        ]
        if missing:
            problems.append(
                ("", f"marketing email must contain {what} ({{{{ {variable} }}}}) "
                     f"in its {' and '.join(missing)} part{'s' if len(missing) > 1 else ''}")
            )  # fmt: skip
    return problems


def template_check(template: Template) -> list[str]:
    """Problems that keep `template` from being saved, as sentences naming the
    part (`html: line 3: unexpected '}'`). Empty when it is fine."""
    return [f"{field}: {problem}" if field else problem for field, problem in
            template_problems(template)]  # fmt: skip


# --- SMS segments ------------------------------------------------------------

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Characters of the extension table: sent as ESC + char, two septets each.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")


def sms_segments(text: str) -> tuple[str, int]:
    """(encoding, segments) of an SMS body. GSM-7 when every character is in
    the GSM 03.38 alphabet (extension characters take two septets): 160 in one
    segment, 153 per segment when split. Otherwise UCS-2, counted in UTF-16
    code units (an emoji takes two): 70 in one, 67 per segment when split. A
    split never cuts an escape sequence or a surrogate pair in two."""
    if not text:
        return "GSM-7", 0
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text):
        units = [2 if ch in GSM7_EXTENSION else 1 for ch in text]
        return "GSM-7", _segments(units, single=160, multi=153)
    units = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return "UCS-2", _segments(units, single=70, multi=67)


def _segments(units: list[int], *, single: int, multi: int) -> int:
    if sum(units) <= single:
        return 1
    segments, used = 1, 0
    for size in units:
        if used + size > multi:
            segments += 1
            used = 0
        used += size
    return segments


# --- HTML to text ------------------------------------------------------------

_BLOCK = frozenset(
    ("address", "article", "aside", "blockquote", "center", "dd", "div", "dl", "dt",
     "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
     "header", "main", "nav", "p", "section", "table", "tbody", "thead", "tfoot", "tr")
)  # fmt: skip
_SKIP = frozenset(("head", "script", "style", "title", "template", "noscript"))
_WS = re.compile(r"\s+")
_BLANK_LINES = re.compile(r"\n{3,}")


class _TextMaker:
    """Readable plain text from an email's HTML: paragraphs separated by a
    blank line, list items as `- item` (or `1. item`), links as
    `text (url)`, images by their alt text, scripts and styles dropped.
    `_read_html` gives it the document's tags and text."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.breaks = 0  # newlines owed before the next text
        self.skip = 0
        self.pre = 0
        self.lists: list[list] = []  # [kind, counter]
        self.anchors: list[tuple[int, str]] = []  # (position in out, href)

    # output -----------------------------------------------------------------
    def _break(self, n: int) -> None:
        self.breaks = max(self.breaks, n)

    def _write(self, text: str, *, indent: str = "") -> None:
        """Append text; at the start of a line, leading spaces go (HTML
        whitespace) and `indent` (a list bullet's) is put in their place."""
        if not text:
            return
        line_start = not self.out or self.out[-1].endswith("\n")
        if self.breaks:
            if self.out:
                self.out.append("\n" * self.breaks)
            self.breaks = 0
            line_start = True
        if line_start and not self.pre:
            text = indent + text.lstrip(" ")
        elif text.startswith(" ") and self.out and self.out[-1].endswith(" "):
            text = text[1:]  # (`out` is empty in a <pre> at the very start)
        if text.strip(" ") or not line_start:
            self.out.append(text)

    # the document -----------------------------------------------------------
    def start(self, tag: str, attributes: dict[str, str | None]) -> None:
        """A start tag; `attributes` are read for <a> and <img> only."""
        if tag in _SKIP:
            self.skip += 1
            return
        if self.skip:
            return
        if tag in _BLOCK:
            self._break(2 if tag not in ("div", "tr", "dt", "dd") else 1)
        elif tag == "br":
            self.out.append("\n")
            self.breaks = 0
        elif tag == "hr":
            self._break(2)
            self._write("-" * 20)
            self._break(2)
        elif tag == "pre":
            self._break(2)
            self.pre += 1
        elif tag in ("ul", "ol"):
            self._break(2 if not self.lists else 1)
            self.lists.append([tag, 0])
        elif tag == "li":
            self._break(1)
            depth = max(len(self.lists) - 1, 0)
            if self.lists and self.lists[-1][0] == "ol":
                self.lists[-1][1] += 1
                bullet = f"{self.lists[-1][1]}. "
            else:
                bullet = "- "
            self._write(bullet, indent="  " * depth)
        elif tag in ("td", "th"):
            self._write(" ")
        elif tag == "img":
            alt = (attributes.get("alt") or "").strip()
            if alt:
                self._write(alt)
        elif tag == "a":
            self.anchors.append((len(self.out), (attributes.get("href") or "").strip()))

    def end(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(self.skip - 1, 0)
            return
        if self.skip:
            return
        if tag in _BLOCK:
            self._break(2 if tag not in ("div", "tr", "dt", "dd") else 1)
        elif tag == "pre":
            self.pre = max(self.pre - 1, 0)
            self._break(2)
        elif tag in ("ul", "ol"):
            if self.lists:
                self.lists.pop()
            self._break(2 if not self.lists else 1)
        elif tag == "a" and self.anchors:
            start, href = self.anchors.pop()
            label = _WS.sub(" ", "".join(self.out[start:])).strip()
            target = href.removeprefix("mailto:")
            if not href or href.startswith(("#", "javascript:")):
                return
            if not label:
                self._write(target)
            elif label != target and label != href:
                self._write(f" ({target})")

    def data(self, data: str) -> None:
        if self.skip:
            return
        self._write(data if self.pre else _WS.sub(" ", data))

    def text(self) -> str:
        lines = [line.rstrip() for line in "".join(self.out).split("\n")]
        return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


# How Python 3.11's html.parser reads HTML, whose reading of malformed HTML
# (a stray `<`, unquoted or unclosed attributes, an unclosed comment) the
# derived text parts were made with and keep: its patterns, without its line
# counting, its method per construct and the attributes of every tag. Text,
# tags, comments and the doctype are one match of _TOKEN each; anything else
# at a `<` goes the parser's longer way (_odd_markup).
_TAG_NAME = r"([a-zA-Z][^\t\n\r\f />\x00]*)(?:\s|/(?!>))*"
# An attribute: its name, then `=` and its value (quoted or bare) if it has one.
_ATTRIBUTE = (
    r"""((?<=['"\s/])[^\s/>][^\s/=>]*)(\s*=+\s*('[^']*'|"[^"]*"|(?!['"])[^>\s]*))?"""
    r"""(?:\s|/(?!>))*"""
)
_ATTRIBUTE_UNCAPTURED = (
    r"""(?:(?<=['"\s/])[^\s/>][^\s/=>]*)(?:\s*=+\s*(?:'[^']*'|"[^"]*"|(?!['"])[^>\s]*))?"""
    r"""(?:\s|/(?!>))*"""
)
_TOKEN = re.compile(
    r"([^<]+)"  # 1: text
    # 2, 3, 4: a start tag, its attributes (each as the parser's loop takes
    # them: atomic, never given back) and its `/` if it closes itself
    rf"|<(?>{_TAG_NAME})((?:(?>{_ATTRIBUTE_UNCAPTURED}))*+)"
    r"\s*(/?)>"
    r"|</\s*([a-zA-Z][-.a-zA-Z0-9:_]*)\s*>"  # 5: an end tag
    r"|<!--.*?--\s*>|(?i:<!doctype)[^>]*>",  # a comment, the doctype
    re.DOTALL,
).match
# Where a start tag's name and attributes end, the parser's way
# (locatestarttagend_tolerant): the one place it differs from _TOKEN's.
_TAG_END = re.compile(
    r"""<[a-zA-Z][^\t\n\r\f />\x00]*(?:[\s/]*(?:(?<=['"\s/])[^\s/>][^\s/=>]*"""
    r"""(?:\s*=+\s*(?:'[^']*'|"[^"]*"|(?!['"])[^>\s]*)\s*)?(?:\s|/(?!>))*)*)?\s*"""
).match
_TAG_NAME_MATCH = re.compile(_TAG_NAME).match
_TAG_AND_ATTRIBUTES_MATCH = re.compile(f"{_TAG_NAME}(?:{_ATTRIBUTE})*").match
_ATTRIBUTE_MATCH = re.compile(_ATTRIBUTE).match
_END_TAG_MATCH = re.compile(r"</\s*([a-zA-Z][-.a-zA-Z0-9:_]*)\s*>").match
_COMMENT_END = re.compile(r"--\s*>").search
_DECLARATION_NAME = re.compile(r"[a-zA-Z][-_.a-zA-Z0-9]*\s*").match
_SECTION_END = re.compile(r"]\s*]\s*>").search  # <![CDATA[ … ]]>
_CONDITIONAL_END = re.compile(r"]\s*>").search  # <![if !mso]>, <![endif]>
_RAW_TEXT_END = {tag: re.compile(rf"</\s*{tag}\s*>", re.IGNORECASE).search
                 for tag in ("script", "style")}  # fmt: skip
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# After a start tag's attributes, what makes the parser take it as unfinished.
_UNFINISHED_TAG = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ=/")
_NO_ATTRIBUTES: dict[str, str | None] = {}


def _attributes(html: str, start: int, end: int) -> dict[str, str | None]:
    """The attributes of a start tag, from `start` (after its name) to `end`."""
    attributes: dict[str, str | None] = {}
    while start < end and (attribute := _ATTRIBUTE_MATCH(html, start)) is not None:
        key, assigned, value = attribute.group(1, 2, 3)
        if not assigned:
            value = None
        elif value[:1] == "'" == value[-1:] or value[:1] == '"' == value[-1:]:
            value = value[1:-1]
        attributes[key.lower()] = html_lib.unescape(value) if value else value
        start = attribute.end()
    return attributes


def _read_html(html: str, maker: _TextMaker) -> None:
    """Give `maker` the tags and text of `html`, as html.parser would."""
    start, end, data, unescape = maker.start, maker.end, maker.data, html_lib.unescape
    n = len(html)
    i = 0
    raw_text_end = None  # in a <script> or <style>: the search for its end tag
    while i < n:
        if raw_text_end is not None:
            found = raw_text_end(html, i)
            if found is None:
                return  # the rest belongs to the unclosed script
            if i < found.start():
                data(html[i : found.start()])
            end(_END_TAG_MATCH(html, found.start()).group(1).lower())
            i, raw_text_end = found.end(), None
            continue
        token = _TOKEN(html, i)
        if token is None:
            i, raw_text_end = _odd_markup(html, i, maker)
            continue
        kind = token.lastindex
        if kind == 1:
            data(unescape(token.group(1)))
        elif kind == 4:
            tag = token.group(2).lower()
            if tag == "a" or tag == "img":
                start(tag, _attributes(html, token.start(3), token.end(3)))
            else:
                start(tag, _NO_ATTRIBUTES)
            if token.group(4):
                if tag == "a":
                    end(tag)
            else:
                raw_text_end = _RAW_TEXT_END.get(tag)
        elif kind == 5:
            end(token.group(5).lower())
        i = token.end()


def _odd_markup(html: str, i: int, maker: _TextMaker) -> tuple[int, Any]:
    """Read the markup at `i` that _TOKEN does not take, as html.parser does:
    where it ends, and the search for the end of a script or style it opens."""
    after = html[i + 1 : i + 2]
    if after in _LETTERS:
        k = _TAG_END(html, i).end()
        follows = html[k : k + 1]
        if follows == "/":
            k = k + 2 if html.startswith("/>", k) else -1
        elif follows == ">":
            k += 1
        elif not follows or follows in _UNFINISHED_TAG:
            k = -1
        if k >= 0:
            name = _TAG_NAME_MATCH(html, i + 1)
            tag = name.group(1).lower()
            if tag == "a" or tag == "img":
                attributes = _attributes(html, name.end(), k)
            else:
                attributes = _NO_ATTRIBUTES
            close = html[_TAG_AND_ATTRIBUTES_MATCH(html, i + 1).end() : k].strip()
            if close == ">":
                maker.start(tag, attributes)
                return k, _RAW_TEXT_END.get(tag)
            if close == "/>":
                maker.start(tag, attributes)
                if tag == "a":
                    maker.end(tag)
            else:  # not a tag after all
                maker.data(html[i:k])
            return k, None
    elif after == "/":
        gt = html.find(">", i + 1)
        if gt >= 0:
            tag = _END_TAG_MATCH(html, i) or _TAG_NAME_MATCH(html, i + 2)
            if tag is not None:  # else `</>` or a bogus comment: dropped
                maker.end(tag.group(1).lower())
            return gt + 1, None
    elif after in ("!", "?"):
        k = _markup_end(html, i)
        if k >= 0:
            return k, None
    elif after:
        maker.data("<")
        return i + 1, None
    # Unfinished markup is text, up to its first `>` (or the next `<`).
    k = html.find(">", i + 1)
    if k < 0:
        k = html.find("<", i + 1)
        k = i + 1 if k < 0 else k
    else:
        k += 1
    maker.data(html_lib.unescape(html[i:k]))
    return k, None


def _markup_end(html: str, i: int) -> int:
    """Where the `<!…>` or `<?…>` at `i` ends, or -1 if it is unfinished
    (then it is text). Comments, declarations and processing instructions
    are dropped."""
    if html.startswith("<!--", i):
        found = _COMMENT_END(html, i + 4)
        return found.end() if found else -1
    if html.startswith("<?", i):
        end = html.find(">", i + 2)
        return end + 1 if end >= 0 else -1
    if html.startswith("<![", i):
        if i + 3 == len(html):
            return -1
        name = _DECLARATION_NAME(html, i + 3)
        if name is not None:
            if name.end() == len(html):
                return -1
            keyword = name.group().strip().lower()
            if keyword in ("temp", "cdata", "ignore", "include", "rcdata"):
                found = _SECTION_END(html, i + 3)
                return found.end() if found else -1
            if keyword in ("if", "else", "endif"):
                found = _CONDITIONAL_END(html, i + 3)
                return found.end() if found else -1
        # Any other `<![`: html.parser raised (and the send failed); it is
        # dropped up to its `>`, as a browser drops it.
    # <!doctype …> and any other <!…>
    end = html.find(">", i + (9 if html[i : i + 9].lower() == "<!doctype" else 2))
    return end + 1 if end >= 0 else -1


def html_to_text(html: str) -> str:
    """The plain-text part derived from an email's HTML (see _TextMaker)."""
    maker = _TextMaker()
    _read_html(html, maker)
    return maker.text()
