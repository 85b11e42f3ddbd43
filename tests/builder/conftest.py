"""Builder fixtures: staff users with and without the journey permissions,
clients speaking JSON to `/builder/api/`, and the journey fixtures of
tests/journeys (the same files and templates the engine tests use)."""

import json

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from tests.journeys.conftest import (  # noqa: F401 (fixtures, registered by import)
    BASE_FILE,
    T0,
    customer,
    journey_file,
    make_customers,
    make_journey,
    make_template,
    now,
    sendable,
    sms_consent,
    steps_of,
    template,
    track,
)

API = "/builder/api/"


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _staff(django_user_model, username: str, *perms: str):
    user = django_user_model.objects.create_user(username, password="pw", is_staff=True)
    for codename in perms:
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label="journeys", codename=codename)
        )
    return user


@pytest.fixture
def marketer(db, django_user_model):
    """Staff who may change journeys (what the Marketer group grants)."""
    return _staff(django_user_model, "marketer", "view_journey", "change_journey")


@pytest.fixture
def viewer(db, django_user_model):
    """Staff who may only look (what the Viewer group grants)."""
    return _staff(django_user_model, "viewer", "view_journey")


class JsonClient:
    """A logged-in client speaking JSON to the builder API; `csrf=True`
    enforces the CSRF check as a browser session would meet it."""

    def __init__(self, user, *, csrf: bool = False):
        self.client = Client(enforce_csrf_checks=csrf)
        if user is not None:
            self.client.force_login(user)

    def _url(self, path: str) -> str:
        return path if path.startswith("/") else API + path

    def get(self, path: str, **params):
        return self.client.get(self._url(path), params)

    def post(self, path: str, body=None, **headers):
        data = json.dumps(body if body is not None else {})
        return self.client.post(
            self._url(path), data=data, content_type="application/json", **headers
        )

    def put(self, path: str, body, **headers):
        return self.client.put(
            self._url(path), data=json.dumps(body), content_type="application/json", **headers
        )


@pytest.fixture
def api(marketer):
    return JsonClient(marketer)


@pytest.fixture
def viewer_api(viewer):
    return JsonClient(viewer)
