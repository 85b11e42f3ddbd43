"""Customer 360: what the customer page shows below the customer itself,
gathered across the apps (its accounts, the identities merged into it,
messages, NPS answers, the latest journeys step by step). Traits, events,
segment history and the journeys list are the customer admin's own fields
and inlines (customers, segments, journeys).

It lives in analytics, on the top floor, because it reads the apps built on
top of customers; the customer page (apps/customers/admin.py) shows it
through its `customer_page` registry, filled by apps/analytics/admin.py.
Each section is returned only to a user allowed to view what it reads (the
Viewer and Marketer groups both are), and each is bounded: a customer with
years of history costs a few indexed queries, not a scan.
"""

from dataclasses import dataclass, field
from urllib.parse import urlencode

from django.db.models import Count
from django.template.loader import render_to_string
from django.urls import reverse

from apps.customers.models import AccountMembership, Customer
from apps.journeys.selectors import customer_timeline
from apps.messaging.models import Message
from apps.surveys.models import SurveyResponse

MESSAGES_SHOWN = 20
RESPONSES_SHOWN = 10
JOURNEYS_SHOWN = 3
ACCOUNTS_SHOWN = 20
IDENTITIES_SHOWN = 20


@dataclass
class Customer360:
    messages: list | None = None  # None: not allowed to see them
    message_statuses: dict[str, int] = field(default_factory=dict)
    responses: list | None = None
    journeys: list | None = None  # [(enrollment, steps)]
    more_messages_url: str = ""
    timeline_url: str = ""
    accounts: list | None = None  # [AccountMembership], the most recently grouped first
    more_accounts_url: str = ""  # when there are more than shown
    identities: list | None = None  # [Customer]: the profiles merged into this one
    more_identities: int = 0  # how many more than shown


def customer_360(customer, *, user) -> Customer360:
    """The sections `user` may see for this customer, newest first."""
    view = Customer360()
    if user.has_perm("customers.view_account"):
        memberships = AccountMembership.objects.filter(customer_id=customer.pk)
        newest = memberships.select_related("account").order_by("-grouped_at", "-id")
        view.accounts = list(newest[: ACCOUNTS_SHOWN + 1])
        if len(view.accounts) > ACCOUNTS_SHOWN and customer.external_id:
            # The account list finds a member's accounts by its external id.
            view.more_accounts_url = (
                reverse("admin:customers_account_changelist") + f"?{_search(customer)}"
            )
        view.accounts = view.accounts[:ACCOUNTS_SHOWN]
    if user.has_perm("customers.view_customer"):
        merged = Customer.objects.filter(merged_into_id=customer.pk)
        view.identities = list(merged.order_by("-merged_at", "-id")[:IDENTITIES_SHOWN])
        if len(view.identities) == IDENTITIES_SHOWN:
            view.more_identities = merged.count() - IDENTITIES_SHOWN
    if user.has_perm("messaging.view_message"):
        rows = Message.objects.filter(customer_id=customer.pk)
        view.messages = list(
            rows.select_related("template").order_by("-created_at", "-id")[:MESSAGES_SHOWN]
        )
        view.message_statuses = dict(
            rows.values_list("status").annotate(n=Count("id")).order_by("status")
        )
        if customer.external_id:
            view.more_messages_url = (
                reverse("admin:messaging_message_changelist") + f"?{_search(customer)}"
            )
    if user.has_perm("surveys.view_surveyresponse"):
        view.responses = list(
            SurveyResponse.objects.filter(customer_id=customer.pk)
            .select_related("survey")
            .order_by("-responded_at", "-id")[:RESPONSES_SHOWN]
        )
    if user.has_perm("journeys.view_enrollment"):
        view.journeys = customer_timeline(customer.pk, limit=JOURNEYS_SHOWN)
        view.timeline_url = reverse(
            "admin:journeys_enrollment_customer_timeline", args=[customer.pk]
        )
    return view


def _search(customer) -> str:
    return urlencode({"q": customer.external_id})


def customer_360_section(request, customer) -> str:
    """The Customer 360 sections as the customer page shows them."""
    return render_to_string(
        "admin/analytics/customer_360.html",
        {"customer": customer, "view": customer_360(customer, user=request.user)},
    )
