"""In memory, for tests: every message sent lands in `outbox` (this module's
list) with what a real provider would have received, headers included.
Tests empty it with `outbox.clear()`."""

import uuid
from dataclasses import dataclass, field

from apps.messaging.models import Message

from .base import Provider, list_unsubscribe_headers, require_body


@dataclass(frozen=True)
class Sent:
    message_id: int
    provider_message_id: str
    channel: str
    to: str
    from_address: str
    subject: str
    text: str
    html: str
    headers: dict[str, str] = field(default_factory=dict)


outbox: list[Sent] = []


class LocmemProvider(Provider):
    name = "locmem"

    def send(self, message: Message) -> str:
        require_body(self.name, message)
        provider_id = f"locmem-{uuid.uuid4().hex}"
        outbox.append(
            Sent(
                message_id=message.pk,
                provider_message_id=provider_id,
                channel=message.channel,
                to=message.to_address,
                from_address=message.from_address,
                subject=message.subject,
                text=message.text,
                html=message.html,
                headers=list_unsubscribe_headers(message),
            )
        )
        return provider_id
