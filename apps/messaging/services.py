"""Writes for messaging. The one way to send is `message_send`: journeys, the
admin's "send test" and `manage.py send_test` all call it.

CONTRACT (journeys and tracking rely on it; keep it):

    message_send(*, customer, template, idempotency_key, now, context=None,
                 journey="", node_id="", enrollment_id=None, over_cap="skip",
                 to_address=None, is_test=False) -> Message

- Idempotent: a Message with `idempotency_key` already stored is returned as it
  is (no policy runs again, nothing is enqueued again).
- Otherwise the policies run (apps.messaging.policies, in this order: address
  present, suppression list, consent, frequency cap for marketing, quiet hours)
  and the template renders (apps.messaging.rendering). The Message row is
  written in the caller's transaction with one of:
    queued      → a delivery is published when the transaction commits;
    deferred    → quiet hours (or a cap with over_cap="defer"): `send_after`
                  holds when it may go; the sweeper publishes it then;
    suppressed  → refused by a policy; `reason` says why in words
                  ("skipped: frequency cap 3/7d", "suppressed: unsubscribed",
                  "no consent: sms");
    failed      → the render failed; `error` holds the template error.
- `context` adds to the documented render context (`event`, `journey`, ...).
"""
