"""Telling machines from people. Mail security gateways fetch every link and
image of an incoming email (some with HEAD, some within seconds of delivery,
many with a tell-tale user agent), and Apple Mail Privacy Protection loads
every image whether or not anyone reads the mail. None of that is a person
engaging, so it must never start journeys or meet goals."""

from datetime import datetime

from django.conf import settings


def scanner_agent(user_agent: str) -> str | None:
    """The configured scanner marker found in `user_agent`, or None."""
    lowered = (user_agent or "").lower()
    for marker in settings.TRACKING_SCANNER_USER_AGENTS:
        if marker and marker.lower() in lowered:
            return marker
    return None


def request_machine_reason(*, method: str, user_agent: str) -> str:
    """Why a pixel or redirect request looks like a machine, or "" when it does
    not (decided at request time, from the request alone)."""
    if method == "HEAD":
        return "HEAD request"
    if not user_agent:
        return "no user agent"
    marker = scanner_agent(user_agent)
    if marker is not None:
        return f"scanner user agent ({marker})"
    return ""


def click_too_soon(*, clicked_at: datetime, delivered_at: datetime | None) -> str:
    """Why a click looks like a machine's because it came too soon after the
    message reached the inbox (delivery, else sending), or ""."""
    if delivered_at is None:
        return ""
    limit = settings.TRACKING_MACHINE_CLICK_SECONDS
    seconds = (clicked_at - delivered_at).total_seconds()
    if seconds < limit:
        return f"clicked {max(seconds, 0):.0f}s after delivery (under {limit}s)"
    return ""
