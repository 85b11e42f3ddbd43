"""Click tracking and the open pixel, applied to an email's HTML once it is
rendered: every http(s) link is replaced by `/t/c/<token>` and stored with the
message (the redirect goes only to the stored URL), and a 1x1 image
`/t/o/<token>` is added before `</body>`.

Messaging renders and never imports tracking: `register()` (called from
`TrackingConfig.ready`) adds `track_email` to messaging's post-render hooks.

Links left as they are: non-web schemes (mailto:, tel:, #anchors), Tenure's
own pages (unsubscribe, preferences, NPS: the one-click unsubscribe must stay
a direct https link, and a scanner following our own pages through the
redirect would only add noise), and any `<a>` marked `data-notrack` or
SendGrid's `clicktracking="off"`.
"""

import html as htmllib
import re

from django.conf import settings

from .tokens import click_token, open_token

# An <a ...> start tag, and the href attribute inside it (any quoting).
_A_TAG = re.compile(r"<a\b[^>]*>", re.IGNORECASE)
_HREF = re.compile(
    r"""(\shref\s*=\s*)(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""", re.IGNORECASE | re.DOTALL
)
_NO_TRACK = re.compile(r"""\sdata-notrack\b|\sclicktracking\s*=\s*["']?off""", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_WEB = ("http://", "https://")


def click_url(message_id: int, position: int) -> str:
    return f"{settings.PUBLIC_BASE_URL}/t/c/{click_token(message_id, position)}"


def open_url(message_id: int) -> str:
    return f"{settings.PUBLIC_BASE_URL}/t/o/{open_token(message_id)}"


def _own_prefixes() -> tuple[str, ...]:
    base = settings.PUBLIC_BASE_URL
    host = base.split("://", 1)[-1]
    return (f"http://{host}/", f"https://{host}/")


def _tracked(url: str, own: tuple[str, ...]) -> bool:
    lowered = url.lower()
    return lowered.startswith(_WEB) and not lowered.startswith(own)


def rewrite_links(html: str, *, message_id: int) -> tuple[str, list[str]]:
    """The HTML with its web links replaced by click-tracking URLs, and the
    original URLs in position order (a URL that appears twice has one
    position). Attribute values are HTML: `&amp;` in an href is `&` in the
    stored URL."""
    links: list[str] = []
    positions: dict[str, int] = {}
    own = _own_prefixes()

    def tag(match: re.Match) -> str:
        text = match.group(0)
        if _NO_TRACK.search(text):
            return text
        href = _HREF.search(text)
        if href is None:
            return text
        raw = next(v for v in href.groups()[1:] if v is not None)
        url = htmllib.unescape(raw).strip()
        if not _tracked(url, own):
            return text
        position = positions.get(url)
        if position is None:
            position = positions[url] = len(links)
            links.append(url)
        replaced = f'{href.group(1)}"{click_url(message_id, position)}"'
        return text[: href.start()] + replaced + text[href.end() :]

    return _A_TAG.sub(tag, html), links


def insert_open_pixel(html: str, *, message_id: int) -> str:
    """The HTML with the open pixel before its (last) `</body>`, or at the end."""
    pixel = (
        f'<img src="{open_url(message_id)}" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0;" />'
    )
    ends = list(_BODY_END.finditer(html))
    if not ends:
        return html + pixel
    at = ends[-1].start()
    return html[:at] + pixel + html[at:]


def track_email(*, message, html: str) -> str:
    """The post-render hook: for a stored email message, rewrite its links
    (storing them) and add the open pixel. Anything else passes unchanged."""
    return track_emails(messages=[message], htmls=[html])[0]


def track_emails(*, messages, htmls: list[str]) -> list[str]:
    """`track_email` for a batch of sends: every link stored in one insert."""
    from .services.hits import tracked_links_store_many

    if not settings.TRACKING_ENABLED:
        return htmls
    tracked, links = [], {}
    for message, html in zip(messages, htmls, strict=True):
        if message.channel != "email" or not html or not message.pk:
            tracked.append(html)
            continue
        html, links[message.pk] = rewrite_links(html, message_id=message.pk)
        tracked.append(insert_open_pixel(html, message_id=message.pk))
    tracked_links_store_many(links)
    return tracked


track_email.many = track_emails


def register() -> None:
    from apps.messaging import render_hooks

    render_hooks.on_render(track_email)
