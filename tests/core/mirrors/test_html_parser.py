"""The html.parser mirror (apps/core/mirrors/html_parser.py) still mirrors
the html.parser it was written against, and reads HTML into the events
html.parser gives."""

import _markupbase
import html.parser
import platform
import random
from html.parser import HTMLParser

import pytest

from apps.core.mirrors.html_parser import read_html
from tests.core.mirrors.upstream import changed

P = html.parser.HTMLParser
B = _markupbase.ParserBase
UPSTREAM = {
    "HTMLParser.goahead": P.goahead,
    "HTMLParser.parse_starttag": P.parse_starttag,
    "HTMLParser.check_for_whole_start_tag": P.check_for_whole_start_tag,
    "HTMLParser.parse_endtag": P.parse_endtag,
    "HTMLParser.parse_html_declaration": P.parse_html_declaration,
    "HTMLParser.parse_bogus_comment": P.parse_bogus_comment,
    "HTMLParser.parse_pi": P.parse_pi,
    "HTMLParser.set_cdata_mode": P.set_cdata_mode,
    "HTMLParser.close": P.close,
    "ParserBase.parse_comment": B.parse_comment,
    "ParserBase.parse_declaration": B.parse_declaration,
    "ParserBase.parse_marked_section": B.parse_marked_section,
    "ParserBase._scan_name": B._scan_name,
    **{
        f"html.parser.{name}": getattr(html.parser, name)
        for name in (
            "interesting_normal",
            "incomplete",
            "starttagopen",
            "piclose",
            "commentclose",
            "tagfind_tolerant",
            "attrfind_tolerant",
            "locatestarttagend_tolerant",
            "endendtag",
            "endtagfind",
        )
    },
    "_markupbase._declname_match": _markupbase._declname_match,
    "_markupbase._markedsectionclose": _markupbase._markedsectionclose,
    "_markupbase._msmarkedsectionclose": _markupbase._msmarkedsectionclose,
}
# The html.parser mirrored, by Python version (the one it was written against).
RECORDED = {
    "3.11.7": {
        "HTMLParser.goahead": "482555522333534e",
        "HTMLParser.parse_starttag": "243e1b824078db92",
        "HTMLParser.check_for_whole_start_tag": "47aa87ac4b7ea393",
        "HTMLParser.parse_endtag": "b035acffd6ed02f6",
        "HTMLParser.parse_html_declaration": "8849106dbbd1350b",
        "HTMLParser.parse_bogus_comment": "ef1b74f9160817e6",
        "HTMLParser.parse_pi": "69fb2719a954c2b7",
        "HTMLParser.set_cdata_mode": "9df0fd31e1a76bdb",
        "HTMLParser.close": "9b868725c1af619a",
        "ParserBase.parse_comment": "54e6f0f5e7916a05",
        "ParserBase.parse_declaration": "d4e2d8d5d7f3eec9",
        "ParserBase.parse_marked_section": "9dbf738da49458d8",
        "ParserBase._scan_name": "58e0b9c9e1082b62",
        "html.parser.interesting_normal": "ea581c7f5394d908",
        "html.parser.incomplete": "919d6ba1f6bcfa45",
        "html.parser.starttagopen": "457d774c48203bca",
        "html.parser.piclose": "75564cef7721bd02",
        "html.parser.commentclose": "38c47d1d215ccae3",
        "html.parser.tagfind_tolerant": "54259ef245ffc3a6",
        "html.parser.attrfind_tolerant": "040d8ffa304efffd",
        "html.parser.locatestarttagend_tolerant": "983f762e4100bdfa",
        "html.parser.endendtag": "75564cef7721bd02",
        "html.parser.endtagfind": "1a685be2ca34779d",
        "_markupbase._declname_match": "4a95a1937977ad40",
        "_markupbase._markedsectionclose": "26e5e14db78f9640",
        "_markupbase._msmarkedsectionclose": "495799d8cd32adb9",
    },
}


def test_the_html_parser_mirrored_is_this_pythons():
    version = platform.python_version()
    recorded = RECORDED.get(version) or RECORDED["3.11.7"]
    assert changed(UPSTREAM, recorded) == [], (
        f"Python {version}'s html.parser differs from the one the mirror reads HTML as "
        "(3.11.7's): the derived text parts keep 3.11.7's reading. Check "
        "tests/messaging/test_html_to_text.py against this parser; if the mirror still "
        "reads as it does, record its fingerprints here for this version."
    )


class Recorder:
    """The mirror's handler, recording its events."""

    attributes_for = frozenset(("a", "img"))

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def start(self, tag, attributes):
        self.events.append(("start", tag, attributes))

    def startend(self, tag, attributes):
        self.events.append(("startend", tag, attributes))

    def end(self, tag):
        self.events.append(("end", tag))

    def data(self, data):
        self.events.append(("data", data))


class UpstreamRecorder(HTMLParser):
    """html.parser's events in the same shape (attributes as the mirror
    gives them: for <a> and <img> only, the last of a repeated name kept)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.events: list[tuple] = []

    def _attributes(self, tag, attrs):
        return dict(attrs) if tag in Recorder.attributes_for else {}

    def handle_starttag(self, tag, attrs):
        self.events.append(("start", tag, self._attributes(tag, attrs)))

    def handle_startendtag(self, tag, attrs):
        self.events.append(("startend", tag, self._attributes(tag, attrs)))

    def handle_endtag(self, tag):
        self.events.append(("end", tag))

    def handle_data(self, data):
        self.events.append(("data", data))


def joined(events: list[tuple]) -> list[tuple]:
    """Adjacent text joined (html.parser and the mirror cut it differently)."""
    out: list[tuple] = []
    for event in events:
        if event[0] == "data" and out and out[-1][0] == "data":
            out[-1] = ("data", out[-1][1] + event[1])
        elif event != ("data", ""):
            out.append(event)
    return out


def mirrored(html: str) -> list[tuple]:
    recorder = Recorder()
    read_html(html, recorder)
    return joined(recorder.events)


def upstream(html: str) -> list[tuple]:
    parser = UpstreamRecorder()
    parser.feed(html)
    parser.close()
    return joined(parser.events)


SAMPLES = [
    "<html><head><title>T</title><style>p{color:red}</style></head><body>"
    "<p>Hi <b>Ada</b> &amp; co,</p><a href='https://x.example/?a=1&amp;b=2'>go</a>"
    '<img src=x alt="A &lt;logo&gt;"/><br/><ul><li>one<li>two</ul></body></html>',
    "<!DOCTYPE html><!-- a comment --><p class=x>text</p><?php echo 1 ?>",
    "<table><tr><td>a</td><td>b</td></tr></table><pre>  kept\n  as is</pre>",
    "<script>if (a < b) { x = '</p>' }</script><p>after</p>",
    "<a href=unquoted title='it''s'>x</a><a/>y<p/>",
    "<![if !mso]><p>outlook</p><![endif]><![CDATA[ data ]]>",
    "<p>a <b",  # unfinished markup at the end
    "a < b and c <d",
    "<p>an unclosed <!-- comment",
    "</>stray end</p  ><P>UPPER</P>",
]


@pytest.mark.parametrize("html", SAMPLES)
def test_the_mirror_gives_the_events_html_parser_gives(html):
    assert mirrored(html) == upstream(html)


def test_random_markup_gives_the_events_html_parser_gives():
    rng = random.Random(16)
    pieces = [
        "<",
        ">",
        "/",
        "p",
        "a",
        "href=",
        "'x'",
        '"y"',
        "=",
        "!",
        "-",
        "--",
        "?",
        "[",
        "]",
        "&amp;",
        "&",
        "text",
        "br",
        "img",
        "alt",
        "script",
        "style",
    ]
    pieces += [" ", "\n"]
    for _ in range(3000):
        html = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 30)))
        if "<![" in html:
            continue  # html.parser raises on an unknown <![ (the mirror drops it)
        assert mirrored(html) == upstream(html), html
