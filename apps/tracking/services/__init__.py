"""Writes for tracking, one concept per module:

- `hits`: the open pixel and the click redirect write one `Engagement` row
  each, in one statement (and the tracked links a click goes to);
- `provider_events`: provider webhooks store their events as received and
  answer;
- `processing`: the batch processor (`tracking_process`) acts on both in
  bulk, with `effects` (messages moved, addresses suppressed, customer
  events recorded);
- `inbound_sms`: an inbound text is handled at once, since its answer is the
  webhook's response.
"""

# Imported from here by code outside this app's own files (bench/tracking.py,
# apps/tracking/admin.py); anything else imports from the modules.
from .inbound_sms import inbound_sms_mark_reviewed, inbound_sms_opt_out
from .processing import tracking_process

__all__ = ["inbound_sms_mark_reviewed", "inbound_sms_opt_out", "tracking_process"]
