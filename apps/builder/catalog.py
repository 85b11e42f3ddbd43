"""What the builder's palette and pickers offer: every node kind with the
blank node it adds, the triggers, the templates, segments and event names to
pick from, and the condition examples the segment editor shows.

The kinds come from the journey file's own models (`graph.NODE_TYPES`), so a
kind added there shows up here or fails the test that compares the two. A
kind the validator refuses outright is listed as disabled with the
validator's own words, found by asking the validator rather than by a flag
kept here that could drift from it (none is refused today).
"""

from typing import Any

from django.core.cache import cache
from django.urls import reverse

from apps.journeys.graph import NODE_TYPES, TRIGGER_TYPES, WEEKDAYS, JourneyError, parse_journey
from apps.messaging.models import Template
from apps.segments.conditions import EXAMPLES
from apps.segments.models import Segment
from apps.surveys.models import Survey

EVENT_NAMES_TTL_S = 300
EVENT_NAMES_LIMIT = 300

# Per kind: the palette's label and group, what it does in a line, its outputs
# (the handles edges leave from), and the fields of a new node (valid as they
# are where a default exists; a template or URL is for the marketer to pick).
NODE_KINDS: dict[str, dict[str, Any]] = {
    "email": {
        "label": "Email",
        "group": "Messages",
        "help": "Send an email template.",
        "outputs": ["next"],
        "blank": {"template": ""},
    },
    "sms": {
        "label": "SMS",
        "group": "Messages",
        "help": "Send an SMS template (consent and quiet hours apply).",
        "outputs": ["next"],
        "blank": {"template": ""},
    },
    "nps_survey": {
        "label": "NPS survey",
        "group": "Messages",
        "help": "Ask 0-10 by email or SMS.",
        "outputs": ["next"],
        "blank": {"survey": "", "channel": "email"},
    },
    "wait": {
        "label": "Wait",
        "group": "Timing",
        "help": "Wait a fixed time.",
        "outputs": ["next"],
        "blank": {"duration": {"days": 1}},
    },
    "wait_until": {
        "label": "Wait until",
        "group": "Timing",
        "help": "Wait until a time of day (customer's zone), on some weekdays.",
        "outputs": ["next"],
        "blank": {"time": "09:00"},
    },
    "wait_for_event": {
        "label": "Wait for event",
        "group": "Timing",
        "help": "Yes when the event arrives before the timeout, no otherwise.",
        "outputs": ["yes", "no"],
        "blank": {"event": "", "timeout": {"days": 3}},
    },
    "branch": {
        "label": "Branch",
        "group": "Logic",
        "help": "Yes or no on a condition (the segments' language).",
        "outputs": ["yes", "no"],
        "blank": {"condition": {"event": "activated", "op": "since_enrolled"}},
    },
    "split": {
        "label": "Split",
        "group": "Logic",
        "help": "Send customers down branches by weight (A/B tests).",
        "outputs": ["branches"],
        "blank": {"branches": [{"weight": 1}, {"weight": 1}]},
    },
    "update_traits": {
        "label": "Update traits",
        "group": "Actions",
        "help": "Set (or, with null, remove) traits on the customer.",
        "outputs": ["next"],
        "blank": {"traits": {"lifecycle_stage": "onboarded"}},
    },
    "webhook": {
        "label": "Webhook",
        "group": "Actions",
        "help": "POST the enrollment's context to a URL (signed).",
        "outputs": ["next"],
        "blank": {"url": "https://", "on_failure": "continue"},
    },
    "exit": {
        "label": "Exit",
        "group": "Actions",
        "help": "The customer leaves the journey here.",
        "outputs": [],
        "blank": {},
    },
}

TRIGGERS: dict[str, dict[str, Any]] = {
    "event": {"label": "Event received", "blank": {"event": ""}},
    "segment_entered": {"label": "Entered a segment", "blank": {"segment": ""}},
    "segment_exited": {"label": "Left a segment", "blank": {"segment": ""}},
    "date_trait": {
        "label": "Date trait (e.g. renewal)",
        "blank": {"trait": "renewal_at", "offset_days": -7, "at": "09:00"},
    },
    "schedule": {"label": "Schedule (cron, UTC)", "blank": {"cron": "0 9 * * 1", "segment": ""}},
}

# Journey conditions may also ask about the time since the customer entered.
JOURNEY_EXAMPLES: list[dict] = [
    {
        "title": "Did it since entering this journey",
        "description": "Journey conditions only: an event after the enrollment began.",
        "definition": {"event": "activated", "op": "since_enrolled"},
    },
]


def kind_refusal(kind: str) -> str | None:
    """Why the validator refuses every node of `kind` (None: it does not).

    A probe journey holding one blank node of the kind is parsed without
    reference checks; an error on the node itself (not one of its fields) is
    a refusal of the kind, e.g. "surveys are not available yet"."""
    probe = {
        "slug": "probe",
        "name": "Probe",
        "trigger": {"type": "event", "event": "probe"},
        "start": "n",
        "nodes": [{"id": "n", "type": kind, **_probe_fields(kind)}],
    }
    try:
        parse_journey(probe, check_refs=False)
    except JourneyError as exc:
        for path, message in exc.errors:
            if path == "nodes[n]":
                return message
    return None


def _probe_fields(kind: str) -> dict[str, Any]:
    fields = dict(NODE_KINDS[kind]["blank"])
    filled = {"template": "probe", "survey": "probe", "event": "probe", "url": "https://x.test"}
    return {k: filled.get(k, v) if v in ("", "https://") else v for k, v in fields.items()}


def node_kinds() -> list[dict[str, Any]]:
    out = []
    for kind in NODE_TYPES:
        spec = NODE_KINDS[kind]
        refusal = kind_refusal(kind)
        out.append(
            {
                "type": kind,
                "label": spec["label"],
                "group": spec["group"],
                "help": spec["help"],
                "outputs": spec["outputs"],
                "blank": spec["blank"],
                "enabled": refusal is None,
                "disabled_reason": refusal or "",
            }
        )
    return out


def event_names() -> list[str]:
    """Event names seen so far (for the pickers' suggestions), cached: a
    distinct over the per-customer stats is a scan at scale."""
    key = "tenure:builder:event-names"
    names = cache.get(key)
    if names is None:
        from apps.customers.models import EventStat

        names = list(
            EventStat.objects.order_by("name")
            .values_list("name", flat=True)
            .distinct()[:EVENT_NAMES_LIMIT]
        )
        cache.set(key, names, EVENT_NAMES_TTL_S)
    return names


def surveys() -> list[dict[str, Any]]:
    """Surveys to pick for an nps_survey node: each with the template it sends
    by channel (a channel without one is refused by the validator, so the
    picker offers only those it has) and its admin page."""
    rows = Survey.objects.order_by("name").values_list(
        "pk", "slug", "name", "email_template__slug", "sms_template__slug"
    )
    return [
        {
            "slug": slug,
            "name": name,
            "templates": {
                channel: template
                for channel, template in (("email", email), ("sms", sms))
                if template is not None
            },
            "admin_url": reverse("admin:surveys_survey_change", args=[pk]),
        }
        for pk, slug, name, email, sms in rows
    ]


def builder_catalog() -> dict[str, Any]:
    """Everything the builder's palette, pickers and editors offer."""
    return {
        "node_kinds": node_kinds(),
        "triggers": [
            {"type": kind, "label": TRIGGERS[kind]["label"], "blank": TRIGGERS[kind]["blank"]}
            for kind in TRIGGER_TYPES
        ],
        "reentry_policies": ["never", "always", "after"],
        "weekdays": list(WEEKDAYS),
        "templates": [
            {"slug": slug, "name": name, "channel": channel, "category": category}
            for slug, name, channel, category in Template.objects.order_by(
                "channel", "name"
            ).values_list("slug", "name", "channel", "category")
        ],
        "segments": [
            {"slug": slug, "name": name, "kind": kind, "is_active": active}
            for slug, name, kind, active in Segment.objects.order_by("name").values_list(
                "slug", "name", "kind", "is_active"
            )
        ],
        "surveys": surveys(),
        "events": event_names(),
        "condition_examples": [*EXAMPLES, *JOURNEY_EXAMPLES],
    }
