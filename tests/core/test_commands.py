from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from apps.customers.models import ApiKey
from apps.customers.services import api_key_authenticate


@pytest.mark.django_db
def test_create_api_key_prints_a_working_key_as_its_last_line():
    out = StringIO()
    call_command("create_api_key", "backend", stdout=out, stderr=StringIO())

    key = out.getvalue().strip().splitlines()[-1]
    assert key.startswith("tk_")
    assert api_key_authenticate(key, now=timezone.now()) == ApiKey.objects.get(name="backend")


@pytest.mark.django_db
def test_ensure_local_admin_creates_the_user_once_and_prints_the_same_credentials(tmp_path):
    with override_settings(DATA_DIR=tmp_path):
        first, second = StringIO(), StringIO()
        call_command("ensure_local_admin", stdout=first)
        call_command("ensure_local_admin", stdout=second)

    password = (tmp_path / "admin_password").read_text()
    assert f"password: {password}" in first.getvalue()
    assert first.getvalue() == second.getvalue()
    user = get_user_model().objects.get(username="admin")
    assert user.is_superuser and user.check_password(password)
