"""Deliverability: what happened to the messages sent in a window, per
channel and per template, a person's engagement kept apart from machines'."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Value

from apps.messaging.models import Message, Suppression
from apps.tracking.models import Engagement

from .windows import check_window, percent


@dataclass(frozen=True)
class DeliverabilityRow:
    channel: str
    template: str  # slug; "" in the per-channel rows or for a deleted template
    sent: int
    delivered: int
    bounced: int
    complained: int
    unsubscribed: int
    opened: int  # by a person
    clicked: int  # by a person
    machine_opened: int
    machine_clicked: int

    @property
    def delivery_rate(self) -> float | None:
        return percent(self.delivered, self.sent)

    @property
    def bounce_rate(self) -> float | None:
        return percent(self.bounced, self.sent)

    @property
    def complaint_rate(self) -> float | None:
        return percent(self.complained, self.sent)

    @property
    def unsubscribe_rate(self) -> float | None:
        return percent(self.unsubscribed, self.sent)

    @property
    def open_rate(self) -> float | None:
        return percent(self.opened, self.delivered)

    @property
    def click_rate(self) -> float | None:
        return percent(self.clicked, self.delivered)


def _engaged(kinds: list[str], *, machine: bool | None = None) -> Exists:
    qs = Engagement.objects.filter(message=OuterRef("pk"), kind__in=kinds)
    if machine is not None:
        qs = qs.filter(machine=machine)
    return Exists(qs)


def sent_messages(*, start: datetime, end: datetime) -> QuerySet[Message]:
    """Messages handed to a provider in [start, end) (test sends left out)."""
    return Message.objects.filter(is_test=False, sent_at__gte=start, sent_at__lt=end)


def _deliverability_counts() -> dict:
    S, K = Message.Status, Engagement.Kind
    window = timedelta(days=settings.ANALYTICS_UNSUBSCRIBE_WINDOW_DAYS)
    unsubscribed_after = Suppression.objects.filter(
        reason=Suppression.Reason.UNSUBSCRIBE,
        channel=OuterRef("channel"),
        address=OuterRef("to_address"),
        created_at__gte=OuterRef("sent_at"),
        created_at__lt=OuterRef("sent_at") + Value(window),
    )
    flags = {
        "delivered": Q(delivered_at__isnull=False)
        | Q(status__in=[S.DELIVERED, S.OPENED, S.CLICKED, S.COMPLAINED]),
        "bounced": Q(status=S.BOUNCED) | Q(_engaged([K.BOUNCE, K.DROPPED])),
        "complained": Q(status=S.COMPLAINED) | Q(_engaged([K.COMPLAINT])),
        "unsubscribed": Q(_engaged([K.UNSUBSCRIBE])) | Q(Exists(unsubscribed_after)),
        "opened": Q(_engaged([K.OPEN], machine=False)),
        "clicked": Q(_engaged([K.CLICK], machine=False)),
        "machine_opened": Q(_engaged([K.OPEN], machine=True)),
        "machine_clicked": Q(_engaged([K.CLICK], machine=True)),
    }
    counts = {"sent": Count("id")}
    counts.update({name: Count("id", filter=flag) for name, flag in flags.items()})
    return counts


def deliverability(
    *, start: datetime, end: datetime
) -> tuple[list[DeliverabilityRow], list[DeliverabilityRow]]:
    """Per channel and per (channel, template): what happened to the
    messages sent in the window. Two grouped queries."""
    check_window(start, end)
    qs = sent_messages(start=start, end=end)
    counts = _deliverability_counts()
    by_channel = [
        DeliverabilityRow(template="", **row)
        for row in qs.values("channel").annotate(**counts).order_by("channel")
    ]
    by_template = [
        DeliverabilityRow(template=row.pop("template__slug") or "", **row)
        for row in qs.values("channel", "template__slug")
        .annotate(**counts)
        .order_by("channel", "template__slug")
    ]
    return by_channel, by_template
