"""The deployment checks: warnings at start-up for settings that work locally
but not in production."""

from apps.core.checks import public_base_url_is_https, secret_key_is_given


def ids(messages) -> list[str]:
    return [message.id for message in messages]


def test_an_http_public_url_is_warned_about_in_production_only(settings):
    settings.DEBUG, settings.PUBLIC_BASE_URL = False, "http://tenure.example.com"
    assert ids(public_base_url_is_https(None)) == ["tenure.W001"]

    settings.PUBLIC_BASE_URL = "https://tenure.example.com"
    assert public_base_url_is_https(None) == []

    settings.DEBUG, settings.PUBLIC_BASE_URL = True, "http://127.0.0.1:8000"
    assert public_base_url_is_https(None) == []


def test_a_secret_key_made_on_this_machine_is_warned_about_in_production_only(settings):
    settings.DEBUG, settings.SECRET_KEY_GENERATED = False, True
    [warning] = secret_key_is_given(None)
    assert warning.id == "tenure.W002"
    assert "SECRET_KEY is not set" in warning.msg

    settings.SECRET_KEY_GENERATED = False
    assert secret_key_is_given(None) == []

    settings.DEBUG, settings.SECRET_KEY_GENERATED = True, True
    assert secret_key_is_given(None) == []
