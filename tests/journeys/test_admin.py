import copy
import json
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from apps.customers.models import Customer
from apps.journeys.models import Enrollment, EnrollmentStep, Journey, JourneyVersion
from apps.journeys.services import journey_draft_save
from apps.messaging.models import Message

from .conftest import BASE_FILE, T0

pytestmark = pytest.mark.django_db


def change_url(journey) -> str:
    return reverse("admin:journeys_journey_change", args=[journey.pk])


def texts(response) -> list[str]:
    """The messages this request added (reading them also clears them)."""
    return [str(m) for m in get_messages(response.wsgi_request)]


def renamed_wait() -> dict:
    data = copy.deepcopy(BASE_FILE)
    data["nodes"][0]["next"] = "pause"
    data["nodes"][1] = {"id": "pause", "type": "wait", "duration": {"days": 1}, "next": "check"}
    return data


@pytest.fixture
def enrolled(make_journey, customer):
    """The onboarding journey (v1) with `customer` waiting at wait1, after a
    sent welcome email and its message."""
    journey = make_journey()
    enrollment = Enrollment.objects.create(
        journey=journey,
        journey_version=journey.live_version,
        customer=customer,
        current_node="wait1",
        next_run_at=T0 + timedelta(days=2),
        entered_at=T0,
    )
    message = Message.objects.create(
        customer=customer,
        channel="email",
        category="marketing",
        idempotency_key=f"enrollment:{enrollment.pk}:welcome:1",
        to_address=customer.email,
        subject="Welcome",
        created_at=T0,
        journey=journey.slug,
        node_id="welcome",
        enrollment_id=enrollment.pk,
    )
    EnrollmentStep.objects.create(
        enrollment=enrollment,
        node_id="welcome",
        started_at=T0,
        finished_at=T0,
        outcome="sent",
        detail="email queued",
        message=message,
    )
    EnrollmentStep.objects.create(
        enrollment=enrollment,
        node_id="wait1",
        started_at=T0,
        outcome="waiting",
        detail="until 2026-03-04 09:00 UTC",
    )
    return enrollment


# --- the journey list and editor --------------------------------------------------------


def test_the_list_shows_status_live_version_and_active_enrollments(admin_client, enrolled):
    response = admin_client.get(reverse("admin:journeys_journey_changelist"))
    assert response.status_code == 200
    page = response.content.decode()
    assert "Onboarding" in page
    assert "v1" in page
    assert f"?journey__id__exact={enrolled.journey_id}&amp;state__exact=active" in page
    assert ">1</a>" in page


def test_the_change_page_shows_the_draft_the_versions_and_who_is_where(admin_client, enrolled):
    response = admin_client.get(change_url(enrolled.journey))
    assert response.status_code == 200
    page = response.content.decode()
    assert "journey-editor" in page
    assert "&quot;template&quot;: &quot;welcome&quot;" in page
    assert "Published versions (immutable)" in page
    assert "v1.json" in page
    assert "<code>wait1</code>" in page
    assert 'value="pause"' in page  # a live journey offers Pause


def test_an_invalid_draft_is_refused_with_an_error_per_node(admin_client, make_journey):
    journey = make_journey()
    data = copy.deepcopy(BASE_FILE)
    data["nodes"][0]["template"] = "welcom"
    data["nodes"][1]["duration"] = {"weeks": 1}
    response = admin_client.post(change_url(journey), {"draft": json.dumps(data)})
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["draft"]
    assert errors == [
        "nodes[wait1].duration: unknown unit 'weeks'; use days, hours or minutes",
        "nodes[welcome].template: unknown template 'welcom'",
    ]
    journey.refresh_from_db()
    assert journey.draft["nodes"][0]["template"] == "welcome"


def test_a_syntax_error_says_where_it_is(admin_client, make_journey):
    journey = make_journey()
    response = admin_client.post(change_url(journey), {"draft": '{"slug": "onboarding",\n}'})
    [error] = response.context["adminform"].form.errors["draft"]
    assert error.startswith("Not valid JSON:") and "(line 2, column 1)" in error


@pytest.mark.parametrize(
    "draft,words",
    [
        ('{"a": ' * 100_000 + "1" + "}" * 100_000, "Nested more than 64 levels deep."),
        (json.dumps({**BASE_FILE, "name": "On\x00boarding"}), "name: contains a NUL character"),
    ],
)
def test_a_draft_nothing_can_hold_is_refused_saying_why(admin_client, make_journey, draft, words):
    journey = make_journey()
    response = admin_client.post(change_url(journey), {"draft": draft})
    assert response.status_code == 200
    errors = " ".join(response.context["adminform"].form.errors["draft"])
    assert words in errors


def test_a_valid_draft_is_saved_without_publishing(admin_client, make_journey):
    journey = make_journey()
    response = admin_client.post(change_url(journey), {"draft": json.dumps(renamed_wait())})
    assert response.status_code == 302
    journey.refresh_from_db()
    assert journey.draft["nodes"][1]["id"] == "pause"
    assert journey.live_version.definition["nodes"][1]["id"] == "wait1"
    assert JourneyVersion.objects.count() == 1


def test_the_slug_of_an_existing_journey_cannot_change(admin_client, make_journey):
    journey = make_journey()
    data = {**copy.deepcopy(BASE_FILE), "slug": "other"}
    response = admin_client.post(change_url(journey), {"draft": json.dumps(data)})
    assert response.context["adminform"].form.errors["draft"] == [
        "slug: must stay 'onboarding': a journey's slug never changes."
    ]


def test_a_journey_is_added_from_a_file(admin_client, template):
    url = reverse("admin:journeys_journey_add")
    assert "new-journey" in admin_client.get(url).content.decode()  # an example to start from
    response = admin_client.post(url, {"draft": json.dumps(BASE_FILE)})
    assert response.status_code == 302
    journey = Journey.objects.get()
    assert (journey.slug, journey.status, journey.name) == ("onboarding", "draft", "Onboarding")
    again = admin_client.post(url, {"draft": json.dumps(BASE_FILE)})
    assert again.context["adminform"].form.errors["draft"] == [
        "slug: a journey 'onboarding' exists already; edit that one."
    ]


def test_journeys_are_archived_not_deleted(admin_client, make_journey):
    journey = make_journey()
    response = admin_client.get(reverse("admin:journeys_journey_delete", args=[journey.pk]))
    assert response.status_code == 403


# --- publishing, pause, resume, archive ----------------------------------------------------------


def test_the_publish_page_shows_where_customers_are(admin_client, enrolled):
    journey_draft_save(enrolled.journey, renamed_wait())
    url = reverse("admin:journeys_journey_publish", args=[enrolled.journey_id])
    page = admin_client.get(url).content.decode()
    assert "version 2" in page
    assert "<strong>no: map it</strong>" in page  # wait1 is not in the draft


def test_publishing_from_the_admin_keeps_customers_on_their_version(admin_client, enrolled):
    journey_draft_save(enrolled.journey, renamed_wait())
    url = reverse("admin:journeys_journey_publish", args=[enrolled.journey_id])
    response = admin_client.post(url, {"in_flight": "stay", "mapping": ""})
    assert response.status_code == 302
    assert texts(response) == ["Onboarding: version 2 is live."]
    version = JourneyVersion.objects.get(number=2)
    assert version.published_by.username == "admin"
    enrolled.refresh_from_db()
    assert enrolled.journey_version.number == 1


def test_a_migration_with_a_missing_node_is_refused_naming_it(admin_client, enrolled):
    journey_draft_save(enrolled.journey, renamed_wait())
    url = reverse("admin:journeys_journey_publish", args=[enrolled.journey_id])
    response = admin_client.post(url, {"in_flight": "migrate", "mapping": "{}"})
    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == [
        "migrate.mapping[wait1]: 1 enrollment(s) are at 'wait1', which the new version does "
        "not have: map it to one of its nodes"
    ]
    assert JourneyVersion.objects.count() == 1


def test_a_migration_moves_customers_to_the_mapped_node(admin_client, enrolled):
    journey_draft_save(enrolled.journey, renamed_wait())
    url = reverse("admin:journeys_journey_publish", args=[enrolled.journey_id])
    response = admin_client.post(url, {"in_flight": "migrate", "mapping": '{"wait1": "pause"}'})
    assert texts(response) == ["Onboarding: version 2 is live; 1 enrollment(s) moved to it."]
    enrolled.refresh_from_db()
    assert (enrolled.journey_version.number, enrolled.current_node) == (2, "pause")
    assert enrolled.next_run_at == T0 + timedelta(days=2)


def test_pause_resume_and_archive_buttons(admin_client, enrolled):
    journey = enrolled.journey
    url = reverse("admin:journeys_journey_status", args=[journey.pk])

    def press(action: str) -> list[str]:
        response = admin_client.post(url, {"action": action}, follow=True)
        return [str(m) for m in response.context["messages"]]

    assert admin_client.get(url).status_code == 405
    assert press("pause") == ["Onboarding: paused; waits keep their due times."]
    journey.refresh_from_db()
    assert journey.status == Journey.Status.PAUSED
    assert 'value="resume"' in admin_client.get(change_url(journey)).content.decode()
    assert press("pause") == [
        "Onboarding: status: only a live journey can be paused (it is paused)"
    ]
    assert press("resume") == ["Onboarding: resumed; overdue steps catch up."]
    journey.refresh_from_db()
    assert journey.status == Journey.Status.LIVE
    assert press("archive") == ["Onboarding: archived; 1 active enrollment(s) exited."]
    enrolled.refresh_from_db()
    assert (enrolled.state, enrolled.exit_reason) == ("exited", "journey archived")


def test_the_archive_action_asks_first(admin_client, enrolled):
    url = reverse("admin:journeys_journey_changelist")
    form = {"action": "archive_selected", "_selected_action": [enrolled.journey_id]}
    response = admin_client.post(url, form)
    assert response.status_code == 200
    assert "1 active enrollment)" in response.content.decode()
    assert Journey.objects.get().status == Journey.Status.LIVE
    admin_client.post(url, {**form, "confirmed": "yes"})
    assert Journey.objects.get().status == Journey.Status.ARCHIVED


def test_the_publish_action_publishes_each_selected_draft(admin_client, make_journey):
    journey = make_journey(publish=False)
    url = reverse("admin:journeys_journey_changelist")
    response = admin_client.post(
        url, {"action": "publish_selected", "_selected_action": [journey.pk]}, follow=True
    )
    assert "Onboarding: version 1 is live." in [str(m) for m in response.context["messages"]]
    journey.refresh_from_db()
    assert journey.status == Journey.Status.LIVE


def test_the_draft_and_each_version_download_as_files(admin_client, make_journey, now):
    journey = make_journey()
    url = reverse("admin:journeys_journey_export", args=[journey.pk])
    response = admin_client.get(url)
    assert response["Content-Disposition"] == 'attachment; filename="onboarding.json"'
    assert json.loads(response.content)["slug"] == "onboarding"
    assert admin_client.get(url, {"version": 1})["Content-Disposition"].endswith(
        'filename="onboarding-v1.json"'
    )
    assert admin_client.get(url, {"version": 9}).status_code == 404


# --- enrollments and timelines --------------------------------------------------------------


def test_the_enrollment_list_filters_by_journey_and_state(admin_client, enrolled):
    url = reverse("admin:journeys_enrollment_changelist")
    active = admin_client.get(
        url, {"journey__id__exact": enrolled.journey_id, "state__exact": "active"}
    )
    assert active.status_code == 200
    assert list(active.context["cl"].result_list) == [enrolled]
    done = admin_client.get(url, {"state__exact": "completed"})
    assert list(done.context["cl"].result_list) == []
    found = admin_client.get(url, {"q": "u-1"})
    assert list(found.context["cl"].result_list) == [enrolled]


def test_an_enrollment_page_shows_its_timeline_with_the_message(admin_client, enrolled):
    response = admin_client.get(reverse("admin:journeys_enrollment_change", args=[enrolled.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    assert "<code>welcome</code>" in page
    assert "email queued" in page
    assert "until 2026-03-04 09:00 UTC" in page
    assert "in progress" in page
    message = enrolled.steps.get(node_id="welcome").message
    assert f"#{message.pk} queued" in page
    # Enrollments are the engine's: the admin changes nothing.
    assert 'name="_save"' not in page


def test_the_customer_page_links_to_their_journey_timeline(admin_client, enrolled):
    url = reverse("admin:customers_customer_change", args=[enrolled.customer_id])
    page = admin_client.get(url).content.decode()
    timeline = reverse("admin:journeys_enrollment_customer_timeline", args=[enrolled.customer_id])
    assert timeline in page
    assert "Onboarding v1" in page
    assert "at <code>wait1</code>" in page


def test_the_customer_timeline_lists_every_journey_with_its_steps(admin_client, enrolled):
    later = Journey.objects.create(slug="other", name="Other journey", draft={})
    version = JourneyVersion.objects.create(
        journey=later, number=1, definition=enrolled.journey_version.definition, published_at=T0
    )
    Enrollment.objects.create(
        journey=later,
        journey_version=version,
        customer=enrolled.customer,
        state=Enrollment.State.EXITED,
        exit_reason="journey archived",
        entered_at=T0 + timedelta(days=1),
        finished_at=T0 + timedelta(days=2),
    )
    url = reverse("admin:journeys_enrollment_customer_timeline", args=[enrolled.customer_id])
    response = admin_client.get(url)
    assert response.status_code == 200
    timeline = response.context["timeline"]
    assert [e.journey.slug for e, _ in timeline] == ["other", "onboarding"]
    assert [s["node"] for s in timeline[1][1]] == ["welcome", "wait1"]
    page = response.content.decode()
    assert "(journey archived)" in page
    assert "Other journey v1: Exited" in page
    missing = reverse(
        "admin:journeys_enrollment_customer_timeline", args=[Customer.objects.count() + 99]
    )
    assert admin_client.get(missing).status_code == 404
