"""Writes to segments: the set-based refresh, static uploads, loading from files.

- `refresh`: bring a dynamic segment's memberships in line with its condition
  as of `now`, incrementally when it can (../incremental.py), under a lease.
- `memberships`: the one statement that diffs a member set against the open
  memberships (closing leavers, opening newcomers, keeping history).
- `static`: uploads of a static segment's list, and reading the CSV.
- `snapshots`: a segment's size once a day, for its growth chart.
- `loading`: segments from files (`load_segments`).

What other modules call is imported here (the admin, views, forms, tasks and
commands use `services.<name>`).
"""

from .loading import SegmentIn, segments_load
from .refresh import (
    REFRESH_LEASE,
    LeaseLost,
    RefreshResult,
    segment_refresh,
    segment_refresh_by_id,
    segments_refresh_all,
    segments_refresh_publish,
)
from .static import (
    UPLOAD_MODES,
    UploadMode,
    UploadReport,
    parse_external_ids_csv,
    segment_static_upload,
)

__all__ = [
    "REFRESH_LEASE",
    "UPLOAD_MODES",
    "LeaseLost",
    "RefreshResult",
    "SegmentIn",
    "UploadMode",
    "UploadReport",
    "parse_external_ids_csv",
    "segment_refresh",
    "segment_refresh_by_id",
    "segment_static_upload",
    "segments_load",
    "segments_refresh_all",
    "segments_refresh_publish",
]
