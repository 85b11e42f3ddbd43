"""A Viewer looks and cannot change: in the admin and on the builder canvas."""

from playwright.sync_api import expect

from apps.journeys.services import journey_import
from apps.messaging.models import Channel, Template
from apps.segments.models import Segment
from tests.e2e.conftest import login
from tests.journeys.conftest import BASE_FILE, T0


def test_a_viewer_sees_segments_and_journeys_but_cannot_edit_them(page, viewer):
    segment = Segment.objects.create(
        slug="pro", name="Pro plan", definition={"trait": "plan", "eq": "pro"}
    )
    Template.objects.create(slug="welcome", name="Welcome", channel=Channel.EMAIL,
                            subject="Hi", html="<p>Hi</p>")  # fmt: skip
    Template.objects.create(slug="activation-nudge", name="Nudge", channel=Channel.SMS, body="Hi")
    journey_import(BASE_FILE, now=T0)

    login(page, viewer)
    page.goto(f"/admin/segments/segment/{segment.pk}/change/")
    expect(page.get_by_text("Pro plan").first).to_be_visible()
    expect(page.locator('input[name="_save"]')).to_have_count(0)
    expect(page.get_by_role("link", name="Add segment")).to_have_count(0)

    page.goto("/builder/journeys/onboarding/")
    expect(page.get_by_test_id("read-only-badge")).to_be_visible()
    expect(page.get_by_test_id("node-welcome")).to_be_visible()
    expect(page.get_by_test_id("btn-save")).to_have_count(0)
    expect(page.get_by_test_id("btn-publish")).to_have_count(0)
    expect(page.get_by_test_id("palette-email")).to_be_disabled()
