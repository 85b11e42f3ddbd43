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

Beside it: the text part derived from the HTML (html_text.py) and the SMS
segment count (sms_segments.py).
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
from .accounts_context import ACCOUNT_NAMES, SAMPLE_ACCOUNT, accounts_context
from .html_text import html_to_text
from .models import Category, Channel, Message, Template

# The top-level names a template may use (docs/templates.md). Callers may add
# more through `context`, other apps through `render_hooks.on_context` (surveys
# adds `links.nps`).
CONTEXT_NAMES = frozenset(
    {"customer", "account", "accounts", "event", "journey", "message", "links", "company", "now"}
)

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
    if uses_accounts(template) and not set(context or {}) >= ACCOUNT_NAMES:
        base.update(accounts_context(customer))
    # What other apps add (surveys: links.nps), then what the caller passed.
    added = render_hooks.context_additions(template=template, customer=customer, message=message)
    for key, value in [*added.items(), *(context or {}).items()]:
        if isinstance(base.get(key), dict) and isinstance(value, Mapping):
            base[key] = {**base[key], **value}  # e.g. more links, the journey's name
        else:
            base[key] = value
    return {key: _plain(value, key) for key, value in base.items()}


def uses_accounts(template: Template) -> bool:
    """Whether the template names `account` or `accounts` (read only then)."""
    parts = SMS_PARTS if template.channel == Channel.SMS else EMAIL_PARTS
    return any(
        _names_used(source, html) & ACCOUNT_NAMES
        for part, html in parts
        if (source := getattr(template, part))
    )


@lru_cache(maxsize=1024)
def _names_used(source: str, html: bool) -> frozenset[str]:
    try:
        return frozenset(meta.find_undeclared_variables(_ENVS[(html, True)].parse(source)))
    except TemplateSyntaxError:
        return frozenset()  # it fails to render anyway, saying why


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
        template,
        customer=_sample_customer(),
        now=datetime.now(UTC),
        message=message,
        context={"account": SAMPLE_ACCOUNT, "accounts": [SAMPLE_ACCOUNT]},
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
