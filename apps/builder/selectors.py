"""Reads for the builder: a journey as the canvas loads it, its live counts
per node, the customers behind one of those counts, and a template's
rendered preview.

Counts are over every version of the journey: node ids name the same step
across versions (a publish that moves customers maps old ids to new ones),
so "sent at `welcome`" means the same thing before and after an edit.
"""

import copy
import time
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django.core.cache import cache
from django.db.models import Count, Q
from django.urls import reverse

from apps.customers.models import Customer
from apps.journeys import selectors as journey_selectors
from apps.journeys.models import Enrollment, EnrollmentStep, Journey
from apps.messaging.models import Message, Template

METRICS = ("entered", "waiting", "sent", "delivered", "opened", "clicked", "converted")
# Message metrics: the timestamp each is counted by (set the first time the
# message reaches that state; a click also stamps the open).
MESSAGE_METRICS = {
    "sent": "sent_at",
    "delivered": "delivered_at",
    "opened": "opened_at",
    "clicked": "clicked_at",
}
CUSTOMERS_SHOWN = 50
# Live counts that took at least this long to count are cached (live_counts).
COUNTS_CACHED_FROM_S = 0.25
# What the time shown beside each customer is, per metric.
AT_LABELS = {
    "entered": "reached the node",
    "waiting": "next step due",
    "sent": "sent",
    "delivered": "delivered",
    "opened": "opened",
    "clicked": "clicked",
    "converted": "reached the node",
}


# --- the journey as the canvas loads it -------------------------------------------------


def journey_state(journey: Journey, *, can_change: bool) -> dict[str, Any]:
    """The journey's status, versions, draft and live file, where its active
    enrollments are (for the publish form's mapping), and what the user may do."""
    live = journey.live_version.definition if journey.live_version_id else None
    draft = journey.draft or (copy.deepcopy(live) if live else None)
    versions = [
        {
            "number": v.number,
            "published_at": v.published_at.isoformat(),
            "published_by": v.published_by.get_username() if v.published_by else "",
        }
        for v in journey.versions.select_related("published_by").order_by("-number")
    ]
    return {
        "journey": {
            "id": journey.pk,
            "slug": journey.slug,
            "name": journey.name,
            "description": journey.description,
            "status": journey.status,
            "status_label": journey.get_status_display(),
            "live_version": journey.live_version.number if journey.live_version_id else None,
            "paused_at": journey.paused_at.isoformat() if journey.paused_at else None,
            "updated_at": journey.updated_at.isoformat() if journey.updated_at else None,
            "admin_url": reverse("admin:journeys_journey_change", args=[journey.pk]),
            "versions": versions,
        },
        "draft": draft,
        "live": live,
        "draft_is_live": bool(live) and draft == live,
        "in_flight": journey_selectors.active_enrollments_by_node(journey),
        "can_change": can_change,
    }


def journey_list() -> list[dict[str, Any]]:
    return [
        {
            "slug": j.slug,
            "name": j.name,
            "status": j.status,
            "status_label": j.get_status_display(),
            "live_version": j.live_version.number if j.live_version_id else None,
            "active": j.active_count,
            "url": reverse("builder:canvas", args=[j.slug]),
        }
        for j in journey_selectors.journeys_for_admin().order_by("name")
    ]


# --- live counts --------------------------------------------------------------------------


def node_counts(journey: Journey) -> dict[str, dict[str, int]]:
    """Per node id: entered (enrollments that reached it), waiting (active
    enrollments there now), sent, delivered, opened and clicked (its
    messages, tests excluded), converted (enrollments that reached it and
    then met the goal). Six grouped queries whatever the journey's size."""
    counts: dict[str, dict[str, int]] = {}

    def put(node: str, metric: str, n: int) -> None:
        counts.setdefault(node, dict.fromkeys(METRICS, 0))[metric] = n

    # One pass over the journey's first visits counts both (the costly part:
    # every step of the journey, joined to its enrollment).
    first_visits = (
        EnrollmentStep.objects.filter(enrollment__journey=journey, visit=1)
        .order_by()
        .values_list("node_id")
        .annotate(
            n=Count("id"),
            converted=Count("id", filter=Q(enrollment__state=Enrollment.State.CONVERTED)),
        )
    )
    for node, n, converted in first_visits:
        put(node, "entered", n)
        put(node, "converted", converted)
    waiting = (
        Enrollment.objects.filter(journey=journey, state=Enrollment.State.ACTIVE)
        .exclude(current_node="")
        .order_by()
        .values_list("current_node")
        .annotate(n=Count("id"))
    )
    for node, n in waiting:
        put(node, "waiting", n)
    messages = (
        Message.objects.filter(journey=journey.slug, is_test=False)
        .exclude(node_id="")
        .order_by()
        .values("node_id")
        .annotate(**{metric: Count(field) for metric, field in MESSAGE_METRICS.items()})
    )
    for row in messages:
        for metric in MESSAGE_METRICS:
            put(row["node_id"], metric, row[metric])
    return counts


def live_counts(journey: Journey, *, now: datetime) -> dict[str, Any]:
    """`node_counts` and `journey_totals` as of `now`, for the canvas, which
    asks again every few seconds while it is open.

    Counting costs time in proportion to the journey's history (about 1.7 s
    at 200,000 enrollments and 1.2 million steps on PostgreSQL), so a count
    that took long is kept in the shared cache for a while (twenty times what
    it cost, between 5 and 60 s) and every open canvas reads that; a cheap
    count (a small or new journey) is never cached, so it is always current.
    `as_of` says when the numbers were counted."""
    key = f"tenure:builder:counts:{journey.pk}"
    cached = cache.get(key)
    if cached is not None:
        return {**cached, "cached": True}
    started = time.monotonic()
    result = {
        "as_of": now.isoformat(),
        "metrics": list(METRICS),
        "nodes": node_counts(journey),
        "totals": journey_totals(journey),
    }
    cost = time.monotonic() - started
    if cost >= COUNTS_CACHED_FROM_S:
        cache.set(key, result, min(60, max(5, round(20 * cost))))
    return {**result, "cached": False}


def journey_totals(journey: Journey) -> dict[str, int]:
    """Enrollments by state, and how many were held out."""
    rows = (
        Enrollment.objects.filter(journey=journey)
        .order_by()
        .values_list("state")
        .annotate(n=Count("id"))
    )
    totals = {state: 0 for state in Enrollment.State.values}
    totals.update(dict(rows))
    totals["enrolled"] = sum(totals[s] for s in Enrollment.State.values)
    totals["held_out"] = Enrollment.objects.filter(journey=journey, is_holdout=True).count()
    return totals


def node_customers(
    journey: Journey, node_id: str, metric: str, *, limit: int = CUSTOMERS_SHOWN
) -> dict[str, Any]:
    """The customers behind one count on the canvas (newest first, `limit`
    of them), each linked to their admin page, with a link to the admin's
    full list where the admin can filter to exactly these rows."""
    if metric not in METRICS:
        raise ValueError(f"metric: must be one of {', '.join(METRICS)} (got {metric!r})")
    admin_url = ""
    if metric in MESSAGE_METRICS:
        field = MESSAGE_METRICS[metric]
        messages = Message.objects.filter(
            journey=journey.slug, node_id=node_id, is_test=False, **{f"{field}__isnull": False}
        )
        rows = [
            _row(m.customer, at=getattr(m, field), enrollment_id=m.enrollment_id, message=m)
            for m in messages.select_related("customer").order_by(f"-{field}", "-id")[:limit]
        ]
        total = messages.count()
        query = {"journey": journey.slug, "node_id": node_id, f"{field}__isnull": "False"}
        admin_url = reverse("admin:messaging_message_changelist") + "?" + urlencode(query)
    elif metric == "waiting":
        enrollments = Enrollment.objects.filter(
            journey=journey, state=Enrollment.State.ACTIVE, current_node=node_id
        )
        rows = [
            _row(e.customer, at=e.next_run_at, enrollment=e)
            for e in enrollments.select_related("customer").order_by("next_run_at", "id")[:limit]
        ]
        total = enrollments.count()
        query = {
            "journey__id__exact": journey.pk,
            "state__exact": "active",
            "current_node": node_id,
        }
        admin_url = reverse("admin:journeys_enrollment_changelist") + "?" + urlencode(query)
    else:
        steps = EnrollmentStep.objects.filter(enrollment__journey=journey, node_id=node_id, visit=1)
        if metric == "converted":
            steps = steps.filter(enrollment__state=Enrollment.State.CONVERTED)
        rows = [
            _row(s.enrollment.customer, at=s.started_at, enrollment=s.enrollment)
            for s in steps.select_related("enrollment__customer").order_by("-started_at", "-id")[
                :limit
            ]
        ]
        total = steps.count()
    return {
        "node": node_id,
        "metric": metric,
        "at_label": AT_LABELS[metric],
        "total": total,
        "shown": len(rows),
        "rows": rows,
        "admin_url": admin_url,
    }


def _row(
    customer: Customer,
    *,
    at: datetime | None,
    enrollment: Enrollment | None = None,
    enrollment_id: int | None = None,
    message: Message | None = None,
) -> dict[str, Any]:
    enrollment_id = enrollment.pk if enrollment is not None else enrollment_id
    return {
        "customer_id": customer.pk,
        "external_id": customer.external_id,
        "email": customer.email,
        "phone": customer.phone,
        "at": at.isoformat() if at else None,
        "state": enrollment.state if enrollment is not None else "",
        "current_node": enrollment.current_node if enrollment is not None else "",
        "customer_url": reverse("admin:customers_customer_change", args=[customer.pk]),
        "enrollment_url": reverse("admin:journeys_enrollment_change", args=[enrollment_id])
        if enrollment_id
        else "",
        "message_url": reverse("admin:messaging_message_change", args=[message.pk])
        if message is not None
        else "",
        "message_status": message.status if message is not None else "",
    }


# --- template preview ---------------------------------------------------------------------


def preview_customer(channel: str, term: str = "") -> Customer | None:
    """Whom to render for: the known customer named by external id, email or
    phone, else the newest customer who can receive the channel (real data, as the
    template editor's preview does)."""
    from apps.customers.selectors import customer_search
    from apps.messaging.forms import sample_customer

    if term.strip():
        return customer_search(Customer.objects.known(), term).order_by("pk").first()
    return sample_customer(channel)


def template_preview(template: Template, *, customer: Customer, now: datetime) -> dict[str, Any]:
    """The stored template rendered for `customer`, as the template editor's
    preview shows it: subject, preheader, HTML and text for email, the body
    and its SMS segments for SMS, and the problems that would refuse it.
    Reads only: nothing is written or sent."""
    from apps.messaging.preview import template_preview as messaging_template_preview

    result: dict[str, Any] = {
        "template": {
            "slug": template.slug,
            "name": template.name,
            "channel": template.channel,
            "category": template.category,
            "admin_url": reverse("admin:messaging_template_change", args=[template.pk]),
        },
        "error": "",
    }
    result.update(messaging_template_preview(template, customer=customer, now=now))
    return result
