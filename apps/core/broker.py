"""Whether the broker lost what it held: tasks published to a Redis broker
live in its memory, and a restart without persistence (or a flush, or a
failover to an empty replica) takes them away without an error anywhere.

The broker keeps an epoch beside the queues: a random token under one key,
set when missing. A broker that keeps its data (a Redis restarted with
persistence) keeps the token with the queues; one that lost its data gets a
new token from the next look. Each sweeper that republishes lost work
records in the database the token it last saw (`BrokerEpoch`): a different
token means what it published before is gone, and it republishes at once
instead of after its republish-after bound. A first look (a new install)
knows of no loss.
"""

import logging
import secrets
from datetime import datetime

from .models import BrokerEpoch

logger = logging.getLogger(__name__)

EPOCH_KEY = "tenure:broker-epoch"


def broker_epoch() -> str | None:
    """The broker's token (made now if it has none); None for brokers that
    keep messages on disk (the filesystem transport) and when the broker
    cannot be reached (publishing would fail anyway; the next look tells)."""
    from config.celery import app  # the Celery app is configured from settings

    try:
        with app.pool.acquire(block=True, timeout=5) as conn:
            if conn.transport.driver_type != "redis":
                return None
            client = conn.default_channel.client
            client.set(EPOCH_KEY, secrets.token_hex(16), nx=True)
            token = client.get(EPOCH_KEY)
    except Exception as exc:
        logger.warning("broker: could not read its epoch: %s", exc)
        return None
    return token.decode() if isinstance(token, bytes) else token


def broker_lost_data(name: str, *, now: datetime) -> bool:
    """True when the broker's epoch changed since the sweeper `name` last
    looked: it lost its data in between. Overlapping looks may both say
    True; a republication twice is harmless to every sweeper."""
    token = broker_epoch()
    if token is None:
        return False
    seen = BrokerEpoch.objects.filter(name=name).values_list("token", flat=True).first()
    if seen == token:
        return False
    BrokerEpoch.objects.update_or_create(name=name, defaults={"token": token, "seen_at": now})
    if seen is None:
        return False
    logger.warning("broker: its epoch changed (it lost its data); %s republishes at once", name)
    return True
