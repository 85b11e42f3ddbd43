"""Customer 360: what the customer page shows below the customer itself,
gathered across the apps (messages, NPS answers, the latest journeys step by
step). Traits, events, segment history and the journeys list are the
customer admin's own fields and inlines (customers, segments, journeys).

This lives in apps/core, not apps/customers, because it reads the apps built
on top of customers: those imports happen inside the function, so importing
customers never pulls in messaging, journeys or surveys. Each section is
returned only to a user allowed to view what it reads (the Viewer and
Marketer groups both are), and each is bounded: a customer with years of
history costs a few indexed queries, not a scan.
"""

from dataclasses import dataclass, field

MESSAGES_SHOWN = 20
RESPONSES_SHOWN = 10
JOURNEYS_SHOWN = 3


@dataclass
class Customer360:
    messages: list | None = None  # None: not allowed to see them
    message_statuses: dict[str, int] = field(default_factory=dict)
    responses: list | None = None
    journeys: list | None = None  # [(enrollment, steps)]
    more_messages_url: str = ""
    timeline_url: str = ""


def customer_360(customer, *, user) -> Customer360:
    """The sections `user` may see for this customer, newest first."""
    from django.db.models import Count
    from django.urls import reverse

    view = Customer360()
    if user.has_perm("messaging.view_message"):
        from apps.messaging.models import Message

        rows = Message.objects.filter(customer_id=customer.pk)
        view.messages = list(
            rows.select_related("template").order_by("-created_at", "-id")[:MESSAGES_SHOWN]
        )
        view.message_statuses = dict(
            rows.values_list("status").annotate(n=Count("id")).order_by("status")
        )
        view.more_messages_url = (
            reverse("admin:messaging_message_changelist") + f"?q={customer.external_id}"
        )
    if user.has_perm("surveys.view_surveyresponse"):
        from apps.surveys.models import SurveyResponse

        view.responses = list(
            SurveyResponse.objects.filter(customer_id=customer.pk)
            .select_related("survey")
            .order_by("-responded_at", "-id")[:RESPONSES_SHOWN]
        )
    if user.has_perm("journeys.view_enrollment"):
        from apps.journeys.selectors import customer_timeline

        view.journeys = customer_timeline(customer.pk, limit=JOURNEYS_SHOWN)
        view.timeline_url = reverse(
            "admin:journeys_enrollment_customer_timeline", args=[customer.pk]
        )
    return view
