"""The survey's links: `/nps/<token>?score=N`, one per score from 0 to 10.

A token is 128 random bits stored with its invitation (not a signed id): the
page looks it up by its unique index, and an invitation's links stop taking
answers at its `expires_at`. The URLs use `PUBLIC_BASE_URL` as configured
(tracking leaves Tenure's own pages unwrapped, so a click goes straight here).

Templates get the eleven URLs as `links.nps` (a list: `links.nps[9]` is the
9). A survey step passes its invitation's; any other render (the editor's
preview, a test send, the template check) gets preview links, which show the
survey page as a preview and record nothing. Messaging asks for them through
its context hook (`render_hooks.on_context`), never importing surveys.
"""

import functools
import re
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from django.conf import settings

SCORES = range(11)
# What a token can look like (token_urlsafe's alphabet).
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SLUG_RE = re.compile(r"^[-a-zA-Z0-9_]{1,100}$")
PREVIEW_TOKEN = "preview"  # noqa: S105 (a placeholder, not a secret)


def new_token() -> str:
    return secrets.token_urlsafe(16)


def survey_url(token: str) -> str:
    return f"{settings.PUBLIC_BASE_URL}/nps/{token}"


def score_urls(token: str) -> list[str]:
    """The eleven answer links of an invitation, indexed by score."""
    base = survey_url(token)
    return [f"{base}?score={score}" for score in SCORES]


def preview_urls(template_slug: str = "") -> list[str]:
    """Links for a render that has no invitation: the page shows the survey
    whose template this is, as a preview."""
    return list(_preview_urls(survey_url(PREVIEW_TOKEN), template_slug))


@functools.lru_cache(maxsize=1024)
def _preview_urls(base: str, template_slug: str) -> tuple[str, ...]:
    # Every email render asks for them, whether or not its template shows
    # them: encoding eleven query strings cost ~10% of a send's CPU, for an
    # answer that depends only on the page's URL and the slug.
    extra = {"template": template_slug} if template_slug else {}
    return tuple(f"{base}?{urlencode({'score': score, **extra})}" for score in SCORES)


def nps_context(*, template, customer, message) -> Mapping[str, Any]:
    """Messaging's context hook: preview survey links for every render. A
    survey step's own links, passed in the send's context, replace them."""
    return {"links": {"nps": preview_urls(getattr(template, "slug", "") or "")}}
