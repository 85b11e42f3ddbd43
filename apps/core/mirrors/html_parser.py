"""A mirror of Python's html.parser, for the text part derived from an
email's HTML (apps/messaging/html_text.py).

Mirrors: `html.parser.HTMLParser` of CPython 3.11.7 (before the 2025
security releases 3.11.13 / 3.12.11 / 3.13.4, which changed how unfinished
markup, comments and script/style ends are read): its `goahead`,
`parse_starttag`, `check_for_whole_start_tag`, `parse_endtag`,
`parse_html_declaration`, `parse_bogus_comment`, `parse_pi`,
`set_cdata_mode`, the module's patterns (`tagfind_tolerant`,
`attrfind_tolerant`, `locatestarttagend_tolerant`, `endtagfind`,
`endendtag`, `commentclose`, ...) and `_markupbase.ParserBase`'s
`parse_comment`, `parse_declaration`, `parse_marked_section` and
`_scan_name`. The text parts Tenure has sent were made with that reading of
malformed HTML (a stray `<`, unquoted or unclosed attributes, an unclosed
comment), and this keeps it byte for byte: the same text over the demo
templates, a malformed-HTML corpus and 700,000 random documents
(tests/messaging/test_html_to_text.py compares with html.parser itself).
tests/core/mirrors/test_html_parser.py fails when those upstream pieces
change.

What it saves (tests/core/mirrors/measure_html_parser.py: CPU, the
messaging benchmark's renewal email, whose text part is derived; measured
2026-12-07 on the shared 2-core machine, load ~3, two runs): the text part
112-117 us with html.parser, 60-61 us with the mirror (46-48% saved); the
whole email render 282-301 us -> 216-230 us, 23-24% of the render. Kept.

The handler interface is html.parser's, renamed: `start(tag, attributes)`,
`startend(tag, attributes)` (a self-closing tag), `end(tag)`, `data(text)`,
and `attributes_for`, the tags whose attributes the handler reads (the
others get none: parsing every tag's attributes was a third of the cost).
Unlike HTMLParser, an unknown `<![...>` does not raise (it is dropped up to
its `>`, as a browser drops it).
"""

import html as html_lib
import re
from typing import Any, Protocol


class Handler(Protocol):
    attributes_for: frozenset[str]

    def start(self, tag: str, attributes: dict[str, str | None]) -> None: ...

    def startend(self, tag: str, attributes: dict[str, str | None]) -> None: ...

    def end(self, tag: str) -> None: ...

    def data(self, data: str) -> None: ...


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


def read_html(html: str, handler: Handler) -> None:
    """Give `handler` the tags and text of `html`, as html.parser would give
    an HTMLParser's handle_starttag, handle_startendtag, handle_endtag and
    handle_data (with convert_charrefs=True, after close())."""
    start, end, data, unescape = handler.start, handler.end, handler.data, html_lib.unescape
    startend, wanted = handler.startend, handler.attributes_for
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
            i, raw_text_end = _odd_markup(html, i, handler)
            continue
        kind = token.lastindex
        if kind == 1:
            data(unescape(token.group(1)))
        elif kind == 4:
            tag = token.group(2).lower()
            if tag in wanted:
                attributes = _attributes(html, token.start(3), token.end(3))
            else:
                attributes = _NO_ATTRIBUTES
            if token.group(4):
                startend(tag, attributes)
            else:
                start(tag, attributes)
                raw_text_end = _RAW_TEXT_END.get(tag)
        elif kind == 5:
            end(token.group(5).lower())
        i = token.end()


def _odd_markup(html: str, i: int, handler: Handler) -> tuple[int, Any]:
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
            if tag in handler.attributes_for:
                attributes = _attributes(html, name.end(), k)
            else:
                attributes = _NO_ATTRIBUTES
            close = html[_TAG_AND_ATTRIBUTES_MATCH(html, i + 1).end() : k].strip()
            if close == ">":
                handler.start(tag, attributes)
                return k, _RAW_TEXT_END.get(tag)
            if close == "/>":
                handler.startend(tag, attributes)
            else:  # not a tag after all
                handler.data(html[i:k])
            return k, None
    elif after == "/":
        gt = html.find(">", i + 1)
        if gt >= 0:
            tag = _END_TAG_MATCH(html, i) or _TAG_NAME_MATCH(html, i + 2)
            if tag is not None:  # else `</>` or a bogus comment: dropped
                handler.end(tag.group(1).lower())
            return gt + 1, None
    elif after in ("!", "?"):
        k = _markup_end(html, i)
        if k >= 0:
            return k, None
    elif after:
        handler.data("<")
        return i + 1, None
    # Unfinished markup is text, up to its first `>` (or the next `<`).
    k = html.find(">", i + 1)
    if k < 0:
        k = html.find("<", i + 1)
        k = i + 1 if k < 0 else k
    else:
        k += 1
    handler.data(html_lib.unescape(html[i:k]))
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
