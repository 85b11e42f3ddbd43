"""The local default: nothing leaves the machine. A message "sent" here gets a
console id and one log line; the Message rows themselves (provider "console")
are the outbox the admin shows, so a newcomer reads every message there."""

import logging
import uuid

from apps.messaging.models import Channel, Message

from .base import Provider, require_body

logger = logging.getLogger("tenure.outbox")


class ConsoleProvider(Provider):
    name = "console"

    def send(self, message: Message) -> str:
        require_body(self.name, message)
        provider_id = f"console-{uuid.uuid4().hex}"
        what = message.subject if message.channel == Channel.EMAIL else message.text
        logger.info(
            "outbox: %s #%s to %s: %s",
            message.channel,
            message.pk,
            message.to_address,
            " ".join(what.split())[:80],
        )
        return provider_id
