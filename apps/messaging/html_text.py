"""The plain-text part derived from an email's HTML, when its template has
no text part of its own: readable text, paragraphs, lists and links kept.

The HTML is read as Python 3.11's html.parser reads it (the text parts sent
so far were made so), by the mirror in apps/core/mirrors/html_parser.py.
"""

import re

from apps.core.mirrors.html_parser import read_html

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
    `read_html` gives it the document's tags and text."""

    attributes_for = frozenset(("a", "img"))  # the tags whose attributes it reads

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

    def startend(self, tag: str, attributes: dict[str, str | None]) -> None:
        """A self-closing tag (`<br/>`): a start, and the end of an `<a/>`."""
        self.start(tag, attributes)
        if tag == "a":
            self.end(tag)

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


def html_to_text(html: str) -> str:
    """The plain-text part derived from an email's HTML (see _TextMaker)."""
    maker = _TextMaker()
    read_html(html, maker)
    return maker.text()
