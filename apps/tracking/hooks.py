"""Who may take an inbound SMS before it is stored as free text: a plain
registry of functions (tracking never imports the apps that register here).

Keywords come first (STOP-type, START/YES/UNSTOP, HELP are never offered to
listeners). Any other text is offered to each listener in turn; the first
that returns a reply handles it, and the message is stored as a `reply`
marked with that listener's name. A listener returns None to pass. This is
where an NPS survey takes "reply with a number from 0 to 10":

    @on_inbound_sms
    def take_nps_score(*, inbound, customer_ids, now) -> InboundReply | None:
        score = parse_score(inbound.body)
        if score is None or not open_invitation(customer_ids): return None
        ...record the response...
        return InboundReply(text="Thanks for your answer!")

A listener runs inside the webhook's transaction: if it raises, the whole
inbound message is rolled back and Twilio retries it, so it must be quick and
must not call out to the network.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .models import InboundSms


@dataclass(frozen=True)
class InboundReply:
    """A listener's answer: `text` is sent back as the TwiML reply ("" sends
    nothing back)."""

    text: str = ""


class InboundSmsListener(Protocol):
    def __call__(
        self, *, inbound: "InboundSms", customer_ids: Sequence[int], now: datetime
    ) -> InboundReply | None: ...


_listeners: list[InboundSmsListener] = []


def on_inbound_sms(fn: InboundSmsListener) -> InboundSmsListener:
    """Register `fn` (usable as a decorator); registering twice is a no-op."""
    if fn not in _listeners:
        _listeners.append(fn)
    return fn


def remove_listener(fn: InboundSmsListener) -> None:
    if fn in _listeners:
        _listeners.remove(fn)


def offer(
    *, inbound: "InboundSms", customer_ids: Sequence[int], now: datetime
) -> tuple[str, InboundReply] | None:
    """The first listener that takes the message (its name and reply), or None."""
    for listener in list(_listeners):
        reply = listener(inbound=inbound, customer_ids=customer_ids, now=now)
        if reply is not None:
            return getattr(listener, "__qualname__", repr(listener)), reply
    return None
