"""The Segment-spec shaped calls Tenure accepts, as typed models. The HTTP API,
`import_events`, `seed_demo` and Tenure's own events all speak them.

`fields.py` holds the values calls are made of and their checks; `calls.py`
the calls and `parse_call`; `answers.py` the batch envelope and the API's
answers.
"""

from apps.core.fixtures import describe_errors

from .answers import Accepted, BatchError, BatchIn, BatchOut, ErrorOut
from .calls import (
    CALL_TYPES,
    TYPED_CALL,
    AliasIn,
    Call,
    GroupIn,
    IdentifyIn,
    PageIn,
    ScreenIn,
    TrackIn,
    TypedCall,
    parse_call,
)
from .fields import KEPT_CONTEXT, PAGE_EVENT, SCREEN_EVENT, StoredText, Timestamp, UserId

__all__ = [
    "CALL_TYPES",
    "KEPT_CONTEXT",
    "PAGE_EVENT",
    "SCREEN_EVENT",
    "TYPED_CALL",
    "Accepted",
    "AliasIn",
    "BatchError",
    "BatchIn",
    "BatchOut",
    "Call",
    "ErrorOut",
    "GroupIn",
    "IdentifyIn",
    "PageIn",
    "ScreenIn",
    "StoredText",
    "Timestamp",
    "TrackIn",
    "TypedCall",
    "UserId",
    "describe_errors",
    "parse_call",
]
