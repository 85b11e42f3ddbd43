"""The Marketer and Viewer groups created by the roles migration, and what
they let a staff user do in the admin and the builder API."""

import importlib

import pytest
from django.apps import apps as django_apps
from django.contrib.auth.models import Group
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from apps.core.roles import roles_ensure
from apps.segments.models import Segment

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def migrated_roles():
    """Run the roles migration's own code, with the historical models of its
    state: a transactional test elsewhere may have flushed the reused test
    database (and the groups with it) since it was first migrated."""
    Group.objects.filter(name__in=("Marketer", "Viewer")).delete()
    # The state of every migration: models added after 0002 get their
    # permissions from later migrations calling the same code.
    state = MigrationExecutor(connection).loader.project_state()
    migration = importlib.import_module("apps.core.migrations.0002_roles")
    migration.create_roles(state.apps, None)


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def codenames(group_name: str) -> set[str]:
    group = Group.objects.get(name=group_name)
    return {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.all()}


def member(django_user_model, group_name: str):
    user = django_user_model.objects.create_user(group_name.lower(), password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name=group_name))
    return user


def test_the_migration_creates_both_groups():
    assert set(Group.objects.values_list("name", flat=True)) >= {"Marketer", "Viewer"}


def test_a_viewer_may_view_every_model_of_ours_and_change_none():
    perms = codenames("Viewer")
    assert {
        "customers.view_customer",
        "journeys.view_enrollment",
        "messaging.view_message",
    } <= perms
    assert "surveys.view_surveyresponse" in perms
    assert "tracking.view_engagement" in perms
    assert all(p.split(".")[1].startswith("view_") for p in perms)


def test_a_marketer_edits_segments_templates_journeys_and_suppressions_only():
    perms = codenames("Marketer")
    for model in ("segments.segment", "messaging.template", "journeys.journey",
                  "journeys.journeyversion", "messaging.suppression"):  # fmt: skip
        label, name = model.split(".")
        assert {f"{label}.add_{name}", f"{label}.change_{name}", f"{label}.view_{name}"} <= perms
    edits = {p for p in perms if not p.split(".")[1].startswith("view_")}
    assert not any(".delete_" in p for p in edits)
    assert "customers.change_customer" not in perms
    assert "messaging.change_message" not in perms
    assert codenames("Viewer") <= perms


def test_running_it_again_adds_nothing_and_keeps_hand_added_permissions():
    viewer = Group.objects.get(name="Viewer")
    extra = Group.objects.get(name="Marketer").permissions.get(codename="change_segment")
    viewer.permissions.add(extra)
    before = codenames("Viewer")
    roles_ensure(django_apps)
    assert codenames("Viewer") == before
    assert Group.objects.filter(name__in=("Marketer", "Viewer")).count() == 2


def test_a_viewer_sees_a_segment_in_the_admin_but_cannot_add_or_save_one(client, django_user_model):
    segment = Segment.objects.create(
        slug="vip", name="VIP", definition={"trait": "plan", "eq": "pro"}
    )
    client.force_login(member(django_user_model, "Viewer"))
    page = client.get(f"/admin/segments/segment/{segment.pk}/change/")
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    assert client.get("/admin/segments/segment/add/").status_code == 403
    refused = client.post(f"/admin/segments/segment/{segment.pk}/change/", {"name": "Hacked"})
    assert refused.status_code == 403
    segment.refresh_from_db()
    assert segment.name == "VIP"


def test_a_marketer_may_open_the_add_forms_of_what_it_edits(client, django_user_model):
    client.force_login(member(django_user_model, "Marketer"))
    for url in ("segments/segment", "messaging/template", "journeys/journey"):
        assert client.get(f"/admin/{url}/add/").status_code == 200, url
    assert client.get("/admin/customers/customer/add/").status_code == 403


def test_the_builder_api_refuses_a_viewers_write_and_serves_its_read(client, django_user_model):
    client.force_login(member(django_user_model, "Viewer"))
    assert client.get("/builder/").status_code == 200
    refused = client.post("/builder/api/journeys", data="{}", content_type="application/json")
    assert refused.status_code == 403
