"""The lifecycle segments a newcomer gets from `make run`, on realistic data."""

from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from apps.customers.models import Customer
from apps.segments.models import Segment
from apps.segments.services import segments_refresh_all

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "segments.json"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
LIFECYCLE = {
    "new-signups", "trialing", "not-activated", "active", "at-risk", "renewal-due",
    "churned-90d", "promoters", "detractors",
}  # fmt: skip


def test_the_lifecycle_segments_load_and_fill_from_demo_data():
    call_command("seed_demo", "--customers", "300", "--seed", "3", "--now", NOW.isoformat(),
                 "--no-progress", stdout=StringIO(), stderr=StringIO())  # fmt: skip
    call_command("load_segments", str(FIXTURES), stdout=StringIO())

    results = {r.slug: r for r in segments_refresh_all(now=NOW)}

    assert set(results) == LIFECYCLE
    assert all(r.ok for r in results.values())
    segments = {s.slug: s for s in Segment.objects.all()}
    assert set(segments) == LIFECYCLE
    assert all(not s.last_error for s in segments.values())
    total = Customer.objects.count()
    for slug in ("new-signups", "trialing", "active", "at-risk", "renewal-due", "churned-90d"):
        assert 0 < segments[slug].member_count < total, slug
    # Every at-risk customer pays; no trialing customer is active.
    at_risk = set(segments["at-risk"].memberships.filter(exited_at=None)
                  .values_list("customer__traits__status", flat=True))  # fmt: skip
    assert at_risk <= {"active", "past_due"}
    trialing = set(segments["trialing"].memberships.values_list("customer_id", flat=True))
    active = set(segments["active"].memberships.values_list("customer_id", flat=True))
    assert trialing.isdisjoint(active)
