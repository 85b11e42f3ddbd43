"""The editor's example library: definitions a marketer can start from, one
per feature of the language (the builder's catalog and the admin's form show
them; the tests check each is valid)."""

EXAMPLES: list[dict] = [
    {
        "title": "Plan is Pro",
        "description": "A trait equal to a value (strings, numbers and true/false are typed).",
        "definition": {"trait": "plan", "op": "eq", "value": "pro"},
    },
    {
        "title": "Paying more than $50 a month",
        "description": "Numbers compare with numbers.",
        "definition": {"trait": "mrr", "op": "gt", "value": 50},
    },
    {
        "title": "On one of several plans",
        "description": "in / not_in take a list.",
        "definition": {"trait": "plan", "op": "in", "value": ["growth", "pro"]},
    },
    {
        "title": "Has a phone number",
        "description": "exists / not_exists: null counts as missing.",
        "definition": {"trait": "phone", "op": "exists"},
    },
    {
        "title": "Renewal within 30 days",
        "description": "A time trait (ISO-8601) relative to now.",
        "definition": {"trait": "renewal_at", "op": "within_next", "days": 30},
    },
    {
        "title": "Signed up in the last 7 days",
        "description": "An event in the last N days (since / not_since).",
        "definition": {"event": "signed_up", "op": "since", "days": 7},
    },
    {
        "title": "No login for 14 days",
        "description": "not_since includes customers who never had the event.",
        "definition": {"event": "login", "op": "not_since", "days": 14},
    },
    {
        "title": "Power users",
        "description": "At least N events in a window (count_gte / count_lt).",
        "definition": {"event": "feature_used", "op": "count_gte", "value": 10, "within_days": 7},
    },
    {
        "title": "Usage down by half",
        "description": "The last N days against the N days before.",
        "definition": {"event": "feature_used", "op": "dropped_by", "percent": 50, "days": 14},
    },
    {
        "title": "Paying, but quiet or slowing down",
        "description": "all / any / not combine conditions.",
        "definition": {
            "all": [
                {"trait": "status", "op": "in", "value": ["active", "past_due"]},
                {
                    "any": [
                        {"event": "login", "op": "not_since", "days": 14},
                        {"event": "feature_used", "op": "dropped_by", "percent": 50, "days": 14},
                    ]
                },
            ]
        },
    },
    {
        "title": "At an enterprise account",
        "description": "Any of the customer's accounts (Segment's group call) meets a trait "
        "condition: trait tests combined with all / any / not.",
        "definition": {"account": {"trait": "plan", "op": "eq", "value": "enterprise"}},
    },
    {
        "title": "In another segment",
        "description": "Nest a segment by its slug (cycles are refused).",
        "definition": {"segment": "trialing"},
    },
]
