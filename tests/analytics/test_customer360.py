"""Customer 360: the customer's admin page shows their messages (with
statuses), NPS answers and latest journeys step by step, each to those
allowed to see it."""

import pytest
from django.apps import apps as django_apps
from django.contrib.auth.models import Group
from django.utils.html import escape

from apps.core.roles import VIEWER, roles_ensure
from apps.journeys.engine import enrollments_advance
from apps.journeys.enrollment import enrollment_start
from apps.journeys.models import EnrollmentStep, Journey
from apps.journeys.services import journey_import
from apps.messaging.models import Channel, Message, Template
from apps.surveys.services import survey_respond
from tests.journeys.conftest import BASE_FILE
from tests.surveys.conftest import (  # noqa: F401 (fixtures, registered by import)
    T0,
    customer,
    invite,
    make_customer,
    survey,
    survey_settings,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def history(customer, invite):  # noqa: F811
    """Ada: an NPS invitation answered 9 with a comment, and the onboarding
    journey's first step (the welcome email) done."""
    survey_respond(invitation=invite(customer), score=9, comment="Lovely app", now=T0)
    Template.objects.get_or_create(
        slug="welcome",
        defaults={"name": "Welcome", "channel": Channel.EMAIL, "subject": "Welcome aboard",
                  "html": "<p>Hi</p>"},
    )  # fmt: skip
    Template.objects.get_or_create(
        slug="activation-nudge", defaults={"name": "Nudge", "channel": Channel.SMS, "body": "Hi"}
    )
    journey_import(BASE_FILE, now=T0, publish=True)
    journey = Journey.objects.get(slug="onboarding")
    enrollment = enrollment_start(journey=journey, customer_id=customer.pk, now=T0)
    enrollments_advance([enrollment.pk], now=T0)
    return customer


def page_of(client, user, who) -> str:
    client.force_login(user)
    response = client.get(f"/admin/customers/customer/{who.pk}/change/")
    assert response.status_code == 200
    return response.content.decode()


def test_the_customer_page_shows_messages_nps_answers_and_journey_steps(
    client, admin_user, history
):
    html = page_of(client, admin_user, history)
    assert 'data-testid="customer-360"' in html
    assert 'data-testid="c360-messages"' in html
    welcome = Message.objects.get(customer=history, node_id="welcome")
    assert f"<strong>{welcome.get_status_display()}</strong>" in html  # its status
    assert f"/admin/messaging/message/{welcome.pk}/change/" in html  # rendered there
    assert "Lovely app" in html and "<strong>9</strong>" in html
    assert 'data-testid="c360-enrollment"' in html
    assert "<code>welcome</code>" in html  # the first step, with its outcome
    step = EnrollmentStep.objects.get(enrollment__customer=history, node_id="welcome")
    assert (
        f"<strong>{step.outcome}</strong>" in html and escape(step.detail[:20]) in html
    )  # and why


def test_a_viewer_sees_every_section(client, django_user_model, history):
    roles_ensure(django_apps)
    viewer = django_user_model.objects.create_user("v", password="pw", is_staff=True)
    viewer.groups.add(Group.objects.get(name=VIEWER))
    html = page_of(client, viewer, history)
    for section in ("c360-messages", "c360-nps", "c360-enrollment"):
        assert f'data-testid="{section}"' in html


def test_staff_without_the_message_permission_see_no_messages(client, django_user_model, history):
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("c", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_customer"))
    html = page_of(client, user, history)
    assert 'data-testid="customer-360"' in html
    for section in ("c360-messages", "c360-nps", "c360-enrollment"):
        assert f'data-testid="{section}"' not in html
