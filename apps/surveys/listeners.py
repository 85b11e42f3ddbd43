"""Surveys on the registries of the apps below it (they never import surveys):

- messaging's render context hook: `links.nps` in every render, preview
  links unless a survey step passes its invitation's own;
- tracking's inbound SMS hook: a texted score (or the comment after it) is
  the answer to the sender's open SMS survey.
"""

from collections.abc import Sequence
from datetime import datetime

from . import links, services


def take_nps_reply(*, inbound, customer_ids: Sequence[int], now: datetime):
    """Tracking's inbound SMS listener: None passes the text on (it is then
    stored as free text); a reply marks it as taken by surveys."""
    from apps.tracking.hooks import InboundReply

    text = services.sms_reply_take(body=inbound.body, customer_ids=customer_ids, now=now)
    return None if text is None else InboundReply(text=text)


def register() -> None:
    from apps.messaging import render_hooks
    from apps.tracking import hooks as tracking_hooks

    render_hooks.on_context(links.nps_context)
    tracking_hooks.on_inbound_sms(take_nps_reply)
