"""Consent traits on identify, turned into consent ledger records.

The product may say what a customer agreed to as traits of an identify call
(or an import line, or the demo data):

    {"userId": "u-1", "traits": {"sms_opt_in": true, "email_opt_in": false}}

`sms_opt_in` / `email_opt_in`: true grants the channel, false revokes it
(booleans, or the words true/false, yes/no, 1/0). Any other value is ignored.

A record is written when a trait's value *changes*: when it differs from what
the last record made from that trait said (or there is none yet). Repeating a
trait in every identify call writes nothing; and a trait the product keeps
sending unchanged never overrides what the customer did since through another
path (replied STOP, used the preference centre). The ledger keeps which trait
and value each record came from (`wording`), which is also how the last
trait-made record is found.

Registered with `apps.customers.hooks` in MessagingConfig.ready(); it runs once
per committed ingest call, on all sources ("api" → identify, "import", "demo").
"""

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Q

from apps.customers.models import Customer

from .consent import consent_record
from .models import Channel, ConsentRecord

logger = logging.getLogger(__name__)

CONSENT_TRAITS = {"sms_opt_in": Channel.SMS, "email_opt_in": Channel.EMAIL}
SOURCES = {
    "api": ConsentRecord.Source.IDENTIFY,
    "import": ConsentRecord.Source.IMPORT,
    "demo": ConsentRecord.Source.DEMO,
}
WORDING_PREFIX = "identify trait "  # + "sms_opt_in=true"
CHUNK = 1000

_TRUE = {"true", "yes", "1", "y", "on"}
_FALSE = {"false", "no", "0", "n", "off"}


def trait_status(value: Any) -> str | None:
    """granted / revoked for a consent trait's value, None if it says neither."""
    if isinstance(value, bool):
        return ConsentRecord.Status.GRANTED if value else ConsentRecord.Status.REVOKED
    if isinstance(value, int) and value in (0, 1):
        return ConsentRecord.Status.GRANTED if value else ConsentRecord.Status.REVOKED
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return ConsentRecord.Status.GRANTED
        if word in _FALSE:
            return ConsentRecord.Status.REVOKED
    return None


def wording(trait: str, status: str) -> str:
    value = "true" if status == ConsentRecord.Status.GRANTED else "false"
    return f"{WORDING_PREFIX}{trait}={value}"


def consent_from_traits(
    *, event_ids: Sequence[int], changed_customer_ids: Sequence[int], now: datetime, source: str
) -> None:
    """The ingest listener (see the module docstring)."""
    ids = list(changed_customer_ids)
    for start in range(0, len(ids), CHUNK):
        consent_traits_apply(ids[start : start + CHUNK], now=now, source=source)


@transaction.atomic
def consent_traits_apply(customer_ids: Sequence[int], *, now: datetime, source: str) -> int:
    """Write the ledger records the consent traits of these customers call
    for; returns how many. Grants are inserted in bulk (a demo or an import
    brings thousands); revocations go through `consent_record`, which also
    cancels the messages waiting for the customer."""
    has_trait = Q()
    for trait in CONSENT_TRAITS:
        has_trait |= Q(traits__has_key=trait)
    customers = list(
        Customer.objects.filter(pk__in=list(customer_ids))
        .filter(has_trait)
        .values_list("pk", "traits")
    )
    if not customers:
        return 0
    # The last record each trait made, per customer and channel.
    last: dict[tuple[int, str], str] = {}
    made = (
        ConsentRecord.objects.filter(
            customer_id__in=[pk for pk, _ in customers],
            topic="",
            wording__startswith=WORDING_PREFIX,
        )
        .order_by("customer_id", "channel", "-recorded_at", "-id")
        .values_list("customer_id", "channel", "status")
    )
    for customer_id, channel, status in made:
        last.setdefault((customer_id, channel), status)

    record_source = SOURCES.get(source, ConsentRecord.Source.IDENTIFY)
    grants: list[ConsentRecord] = []
    revocations: list[tuple[int, str, str]] = []
    for customer_id, traits in customers:
        for trait, channel in CONSENT_TRAITS.items():
            if trait not in traits:
                continue
            status = trait_status(traits[trait])
            if status is None:
                logger.info(
                    "customer %s: consent trait %s=%r is not true or false; ignored",
                    customer_id,
                    trait,
                    traits[trait],
                )
                continue
            if last.get((customer_id, channel)) == status:
                continue  # the trait has not changed since its last record
            if status == ConsentRecord.Status.GRANTED:
                grants.append(
                    ConsentRecord(
                        customer_id=customer_id,
                        channel=channel,
                        topic="",
                        status=status,
                        source=record_source,
                        wording=wording(trait, status),
                        recorded_at=now,
                    )
                )
            else:
                revocations.append((customer_id, channel, trait))
    ConsentRecord.objects.bulk_create(grants, batch_size=1000)
    for customer_id, channel, trait in revocations:
        consent_record(
            customer=customer_id,
            channel=channel,
            status=ConsentRecord.Status.REVOKED,
            source=record_source,
            recorded_at=now,
            wording=wording(trait, ConsentRecord.Status.REVOKED),
        )
    return len(grants) + len(revocations)
