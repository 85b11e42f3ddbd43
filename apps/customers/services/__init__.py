"""Writes to customers, their usage data, accounts and API keys.

`ingest` (ingest.py) is the one write path for Segment-spec calls; who a call
is about, and merging profiles, is profiles.py; accounts from `group` calls,
accounts.py; touch stamps for incremental segment refreshes, touch.py;
anonymous visitors past their time to live, anonymous.py.
"""

from .anonymous import anonymous_profiles_expire
from .api_keys import API_KEY_PREFIX, api_key_authenticate, api_key_create, api_key_revoke
from .editing import customer_save
from .ingest import IngestResult, ingest
from .touch import TOUCH_STAMP, customers_touch, touch_stamping_ok, touch_watermark

__all__ = [
    "API_KEY_PREFIX",
    "TOUCH_STAMP",
    "IngestResult",
    "anonymous_profiles_expire",
    "api_key_authenticate",
    "api_key_create",
    "api_key_revoke",
    "customer_save",
    "customers_touch",
    "ingest",
    "touch_stamping_ok",
    "touch_watermark",
]
