"""The providers with the real SDKs against the loopback fake API: what they
send, how they authenticate, and how each answer becomes an id or an error."""

import logging
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured
from python_http_client.exceptions import BadRequestsError

from apps.messaging import providers
from apps.messaging.models import Category, Channel, Suppression
from apps.messaging.providers import (
    OutcomeUnknownError,
    PermanentError,
    TransientError,
    get_provider,
)
from apps.messaging.providers.sendgrid import CUSTOM_ARG_MESSAGE_ID
from apps.messaging.providers.twilio import TenureTwilioHttpClient, TwilioProvider
from tests.fakes.network import closed_port_url, tls_to_plain_http, unanswered_connect_url
from tests.fakes.provider import SENDGRID_KEY, TWILIO_SID, TWILIO_TOKEN, Reply

from .conftest import TWILIO_FROM

# --- SendGrid --------------------------------------------------------------------------


def test_sendgrid_posts_the_message_with_bearer_auth_and_returns_the_x_message_id(
    fake_provider, make_message, settings
):
    settings.DEFAULT_FROM_EMAIL = "Acme Team <hello@acme.example>"
    message = make_message(subject="Welcome aboard", reply_to="Support <help@acme.example>")

    provider_id = get_provider(Channel.EMAIL).send(message)

    (request,) = fake_provider.sendgrid
    assert request.status == 202
    assert provider_id.startswith("fake-sg-")
    assert (request.method, request.path) == ("POST", "/v3/mail/send")
    assert request.headers["authorization"] == f"Bearer {SENDGRID_KEY}"
    body = request.json
    assert body["personalizations"] == [{"to": [{"email": message.to_address}]}]
    assert body["from"] == {"email": "hello@acme.example", "name": "Acme Team"}
    assert body["reply_to"] == {"email": "help@acme.example", "name": "Support"}
    assert body["subject"] == "Welcome aboard"
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert body["content"][1]["value"] == message.html
    assert body["custom_args"] == {CUSTOM_ARG_MESSAGE_ID: str(message.pk)}


def test_marketing_email_carries_one_click_list_unsubscribe_headers(fake_provider, make_message):
    message = make_message(category=Category.MARKETING)

    get_provider(Channel.EMAIL).send(message)

    headers = fake_provider.sendgrid[0].json["headers"]
    assert headers["List-Unsubscribe"].startswith("<https://tenure.example.com/u/")
    assert headers["List-Unsubscribe"].endswith(">")
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_the_mailto_unsubscribe_joins_the_https_one_when_configured(
    fake_provider, make_message, settings
):
    settings.LIST_UNSUBSCRIBE_MAILTO = "unsubscribe@acme.example"
    message = make_message()

    get_provider(Channel.EMAIL).send(message)

    https, mailto = fake_provider.sendgrid[0].json["headers"]["List-Unsubscribe"].split(", ")
    assert https.startswith("<https://")
    assert mailto == f"<mailto:unsubscribe@acme.example?subject=unsubscribe-{message.pk}>"


def test_transactional_email_carries_no_list_unsubscribe_header(fake_provider, make_message):
    get_provider(Channel.EMAIL).send(make_message(category=Category.TRANSACTIONAL))

    assert "headers" not in fake_provider.sendgrid[0].json


def test_the_sendgrid_client_is_built_with_the_host_and_a_timeout(fake_provider, settings):
    settings.DELIVERY_TIMEOUT_S = 3.5

    provider = get_provider(Channel.EMAIL)

    assert provider.client.client.host == fake_provider.url
    assert provider.client.client.timeout == 3.5


def test_a_wrong_sendgrid_key_is_a_permanent_error(fake_provider, make_message, settings):
    settings.SENDGRID_API_KEY = "SG.not-the-key"

    with pytest.raises(PermanentError, match=r"HTTP 401.*authorization grant is invalid"):
        get_provider(Channel.EMAIL).send(make_message())


def test_sendgrid_429_is_transient_and_waits_until_the_reset(fake_provider, make_message):
    fake_provider.script("sendgrid", Reply.sendgrid_rate_limited(reset_in=30))

    with pytest.raises(TransientError, match="HTTP 429") as caught:
        get_provider(Channel.EMAIL).send(make_message())

    assert 28 <= caught.value.retry_after <= 31


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_sendgrid_5xx_is_transient(fake_provider, make_message, status):
    fake_provider.script("sendgrid", Reply.sendgrid_error(status, "upstream trouble"))

    with pytest.raises(TransientError, match=f"HTTP {status}") as caught:
        get_provider(Channel.EMAIL).send(make_message())

    assert caught.value.retry_after is None


@pytest.mark.parametrize("status", [400, 403, 413])
def test_other_sendgrid_4xx_are_permanent(fake_provider, make_message, status):
    fake_provider.script(
        "sendgrid", Reply.sendgrid_error(status, "does not contain a valid address")
    )

    with pytest.raises(PermanentError, match=f"HTTP {status}: does not contain a valid address"):
        get_provider(Channel.EMAIL).send(make_message())


def test_a_body_sendgrid_would_refuse_is_refused_by_the_fake_too(fake_provider, make_message):
    provider = get_provider(Channel.EMAIL)
    body = provider.payload(make_message())
    body["content"] = []

    with pytest.raises(BadRequestsError) as caught:
        provider.client.send(body)

    error = provider.error(caught.value)
    assert isinstance(error, PermanentError)
    assert "HTTP 400: Unless a valid template_id is provided, content is required." in str(error)


def test_a_refused_sendgrid_connection_is_transient(fake_provider, make_message, settings):
    settings.SENDGRID_API_HOST = closed_port_url()

    with pytest.raises(TransientError, match=r"sendgrid: .*Connection refused"):
        get_provider(Channel.EMAIL).send(make_message())


def test_a_sendgrid_connect_timeout_is_transient(fake_provider, make_message, settings):
    settings.DELIVERY_TIMEOUT_S = 0.3
    with unanswered_connect_url() as url:
        settings.SENDGRID_API_HOST = url

        with pytest.raises(TransientError, match=r"sendgrid: .*timed out \(nothing sent\)"):
            get_provider(Channel.EMAIL).send(make_message())


def test_a_failed_sendgrid_tls_handshake_is_transient(fake_provider, make_message, settings):
    settings.SENDGRID_API_HOST = tls_to_plain_http(fake_provider.url)

    with pytest.raises(TransientError, match=r"sendgrid: SSL.*\(nothing sent\)"):
        get_provider(Channel.EMAIL).send(make_message())

    assert fake_provider.sendgrid == []


def test_a_sendgrid_read_timeout_leaves_the_outcome_unknown(fake_provider, make_message, settings):
    settings.DELIVERY_TIMEOUT_S = 0.3
    fake_provider.script("sendgrid", Reply(202, delay=1.5))

    with pytest.raises(OutcomeUnknownError) as caught:
        get_provider(Channel.EMAIL).send(make_message())

    assert str(caught.value) == ("sendgrid: read timeout after 0.3 s: may have reached SendGrid")
    assert len(fake_provider.sendgrid) == 1


def test_a_sendgrid_connection_dropped_after_the_request_leaves_the_outcome_unknown(
    fake_provider, make_message
):
    fake_provider.script("sendgrid", Reply.drop())

    with pytest.raises(
        OutcomeUnknownError,
        match=r"sendgrid: RemoteDisconnected after the request was written: .*may have reached",
    ):
        get_provider(Channel.EMAIL).send(make_message())

    assert len(fake_provider.sendgrid) == 1


def test_a_kept_alive_sendgrid_connection_the_server_closed_is_replaced_before_writing(
    fake_provider, make_message
):
    provider = get_provider(Channel.EMAIL)
    fake_provider.script("sendgrid", Reply(202, close_after=True))
    provider.send(make_message())
    assert fake_provider.httpd.closed.acquire(timeout=10)  # the close has happened

    # The server ended the idle connection: seen before the next request is
    # written, so nothing is lost or left unknown.
    assert provider.send(make_message()).startswith("fake-sg-")
    assert [r.status for r in fake_provider.sendgrid] == [202, 202]
    assert fake_provider.connections == 2


def test_sendgrid_calls_share_one_kept_alive_connection(fake_provider, make_message):
    provider = get_provider(Channel.EMAIL)

    ids = [provider.send(make_message()) for _ in range(3)]

    assert len(set(ids)) == 3 and len(fake_provider.sendgrid) == 3
    assert fake_provider.connections == 1


def test_a_sendgrid_group_goes_out_together_on_a_kept_alive_connection_each(
    fake_provider, make_message
):
    provider = get_provider(Channel.EMAIL)
    messages = [make_message() for _ in range(4)]

    first = provider.send_many(messages)
    again = provider.send_many([make_message() for _ in range(4)])

    assert all(answer.startswith("fake-sg-") for answer in first + again)
    assert len(set(first + again)) == 8
    sent = [r.json["custom_args"][CUSTOM_ARG_MESSAGE_ID] for r in fake_provider.sendgrid[:4]]
    assert sorted(sent) == sorted(str(m.pk) for m in messages)
    assert fake_provider.connections == 4


def test_each_message_of_a_sendgrid_group_gets_its_own_answer(fake_provider, make_message):
    provider = get_provider(Channel.EMAIL)
    fake_provider.script(
        "sendgrid",
        Reply.sendgrid_error(500, "try again later"),
        Reply.sendgrid_error(400, "bad request"),
        Reply.drop(),
    )
    messages = [make_message() for _ in range(4)]

    answers = provider.send_many(messages)

    # Which request met which reply is the fake's order of arrival.
    status = {
        r.json["custom_args"][CUSTOM_ARG_MESSAGE_ID]: r.status for r in fake_provider.sendgrid
    }
    assert sorted(status.values()) == [0, 202, 400, 500]
    expected = {202: str, 500: TransientError, 400: PermanentError, 0: OutcomeUnknownError}
    for message, answer in zip(messages, answers, strict=True):
        assert isinstance(answer, expected[status[str(message.pk)]])
    # The dropped connection is replaced: the next group goes out whole.
    assert all(isinstance(a, str) for a in provider.send_many([make_message() for _ in range(4)]))


def test_a_sendgrid_group_call_that_times_out_fails_alone(fake_provider, make_message, settings):
    settings.DELIVERY_TIMEOUT_S = 0.3
    fake_provider.script("sendgrid", Reply(202, delay=1.5))

    answers = get_provider(Channel.EMAIL).send_many([make_message() for _ in range(3)])

    late = [answer for answer in answers if isinstance(answer, OutcomeUnknownError)]
    assert len(late) == 1 and "read timeout after 0.3 s" in str(late[0])
    assert not any(isinstance(answer, TransientError) for answer in answers)
    assert sum(isinstance(answer, str) for answer in answers) == 2


def test_a_message_without_any_body_in_a_sendgrid_group_is_refused_alone(
    fake_provider, make_message
):
    empty = make_message(html="", text="")

    answers = get_provider(Channel.EMAIL).send_many([make_message(), empty, make_message()])

    assert isinstance(answers[1], PermanentError)
    assert answers[0].startswith("fake-sg-") and answers[2].startswith("fake-sg-")
    assert len(fake_provider.sendgrid) == 2


def test_a_sendgrid_call_builds_no_urllib_opener(fake_provider, make_message, monkeypatch):
    provider = get_provider(Channel.EMAIL)
    monkeypatch.setattr(
        "urllib.request.build_opener", lambda *a: pytest.fail("an opener was built for a call")
    )

    assert provider.send(make_message()).startswith("fake-sg-")

    (request,) = fake_provider.sendgrid
    assert request.headers["content-type"] == "application/json"
    assert request.json["personalizations"]


def test_the_sdks_path_to_mail_send_is_built_once_per_client_settings(fake_provider, settings):
    client = get_provider(Channel.EMAIL).client.client

    first = client.mail.send
    assert client.mail.send is first
    client.timeout = 1.5
    assert client.mail.send is not first and client.mail.send.timeout == 1.5


def test_after_a_dropped_connection_sendgrid_calls_on_a_new_one(fake_provider, make_message):
    provider = get_provider(Channel.EMAIL)
    provider.send(make_message())
    fake_provider.script("sendgrid", Reply.drop())
    with pytest.raises(OutcomeUnknownError):
        provider.send(make_message())

    assert provider.send(make_message()).startswith("fake-sg-")
    assert [r.status for r in fake_provider.sendgrid] == [202, 0, 202]
    assert fake_provider.connections == 2


def test_sendgrid_goes_through_the_proxy_the_environment_names(
    fake_provider, make_message, settings, monkeypatch
):
    monkeypatch.setenv("HTTP_PROXY", fake_provider.url)
    settings.SENDGRID_API_HOST = "http://api.sendgrid.example"

    assert get_provider(Channel.EMAIL).send(make_message()).startswith("fake-sg-")

    (request,) = fake_provider.sendgrid
    assert (request.path, request.headers["host"]) == ("/v3/mail/send", "api.sendgrid.example")


def test_a_message_without_any_body_is_refused_before_any_request(fake_provider, make_message):
    with pytest.raises(PermanentError, match="neither an HTML nor a text part"):
        get_provider(Channel.EMAIL).send(make_message(html="", text=""))

    assert fake_provider.requests == []


# --- Twilio ----------------------------------------------------------------------------


def test_twilio_posts_the_form_with_basic_auth_and_returns_the_sid(fake_provider, make_message):
    message = make_message(channel=Channel.SMS, text="Your trial ends Friday. Reply STOP to stop.")

    sid = get_provider(Channel.SMS).send(message)

    (request,) = fake_provider.twilio
    assert request.status == 201
    assert sid.startswith("SM") and len(sid) == 34
    assert (request.method, request.path) == (
        "POST",
        f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json",
    )
    assert request.headers["authorization"].startswith("Basic ")
    assert request.form == {
        "To": message.to_address,
        "From": TWILIO_FROM,
        "Body": "Your trial ends Friday. Reply STOP to stop.",
        "StatusCallback": "https://tenure.example.com/webhooks/twilio/status",
    }


def test_a_messaging_service_sends_instead_of_a_from_number(fake_provider, make_message, settings):
    settings.TWILIO_MESSAGING_SERVICE_SID = "MG" + "a" * 32

    get_provider(Channel.SMS).send(make_message(channel=Channel.SMS))

    form = fake_provider.twilio[0].form
    assert form["MessagingServiceSid"] == "MG" + "a" * 32
    assert "From" not in form


def test_the_twilio_http_client_sends_every_twilio_host_to_the_base_url():
    client = TenureTwilioHttpClient(timeout=1, base_url="http://127.0.0.1:9999/prefix")

    for host in ("api.twilio.com", "api.sydney.au1.twilio.com", "messaging.twilio.com"):
        assert client.rewrite(f"https://{host}/2010-04-01/X.json?a=1") == (
            "http://127.0.0.1:9999/prefix/2010-04-01/X.json?a=1"
        )
    assert client.rewrite("https://example.com/x") == "https://example.com/x"
    assert TenureTwilioHttpClient(timeout=1).rewrite("https://api.twilio.com/x") == (
        "https://api.twilio.com/x"
    )
    assert client.timeout == 1


def test_an_edge_set_in_the_environment_still_reaches_the_base_url(
    fake_provider, make_message, monkeypatch
):
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    monkeypatch.setenv("TWILIO_REGION", "au1")

    TwilioProvider(Channel.SMS).send(make_message(channel=Channel.SMS))

    assert len(fake_provider.twilio) == 1


def test_twilio_goes_through_the_proxy_the_environment_names(
    fake_provider, make_message, settings, monkeypatch
):
    monkeypatch.setenv("HTTP_PROXY", fake_provider.url)
    settings.TWILIO_API_BASE_URL = "http://twilio-gateway.example"

    assert get_provider(Channel.SMS).send(make_message(channel=Channel.SMS)).startswith("SM")

    (request,) = fake_provider.twilio
    assert request.headers["host"] == "twilio-gateway.example"


def test_through_a_proxy_twilio_still_knows_a_request_that_never_left(
    fake_provider, make_message, settings, monkeypatch
):
    monkeypatch.setenv("HTTP_PROXY", closed_port_url())
    settings.TWILIO_API_BASE_URL = "http://twilio-gateway.example"

    with pytest.raises(TransientError, match=r"twilio: ProxyError.*\(nothing sent\)"):
        get_provider(Channel.SMS).send(make_message(channel=Channel.SMS))


def test_through_a_proxy_a_twilio_read_timeout_leaves_the_outcome_unknown(
    fake_provider, make_message, settings, monkeypatch
):
    monkeypatch.setenv("HTTP_PROXY", fake_provider.url)
    settings.TWILIO_API_BASE_URL = "http://twilio-gateway.example"
    settings.DELIVERY_TIMEOUT_S = 0.3
    fake_provider.script("twilio", Reply(201, delay=1.0))

    with pytest.raises(OutcomeUnknownError, match=r"read timeout after 0\.3 s"):
        get_provider(Channel.SMS).send(make_message(channel=Channel.SMS))

    assert len(fake_provider.twilio) == 1


def test_a_wrong_twilio_token_is_a_permanent_error(fake_provider, make_message, settings):
    settings.TWILIO_AUTH_TOKEN = "not-the-token"

    with pytest.raises(PermanentError, match="HTTP 401 code 20003"):
        get_provider(Channel.SMS).send(make_message(channel=Channel.SMS))


@pytest.mark.parametrize(
    ("status", "code", "headers", "wait"),
    [(429, 20429, {"Retry-After": "7"}, 7.0), (429, 429, {}, None), (503, 20500, {}, None)],
)
def test_twilio_rate_limits_and_5xx_are_transient_with_retry_after(
    fake_provider, make_message, status, code, headers, wait
):
    fake_provider.script("twilio", Reply.twilio_error(status, code, "slow down", headers=headers))

    with pytest.raises(TransientError, match=f"HTTP {status} code {code}") as caught:
        get_provider(Channel.SMS).send(make_message(channel=Channel.SMS))

    assert caught.value.retry_after == wait


@pytest.mark.parametrize(
    ("code", "suppress", "revoke"),
    [
        (21211, Suppression.Reason.INVALID, False),
        (21610, Suppression.Reason.SMS_OPT_OUT, True),
        (21408, None, False),
        (21614, None, False),
        (21606, None, False),
    ],
)
def test_twilio_recipient_errors_are_permanent_with_what_they_mean(
    fake_provider, make_message, code, suppress, revoke
):
    fake_provider.script("twilio", Reply.twilio_error(400, code, "about the recipient"))

    with pytest.raises(PermanentError, match=rf"code {code}: .*about the recipient") as caught:
        get_provider(Channel.SMS).send(make_message(channel=Channel.SMS))

    assert (caught.value.code, caught.value.suppress, caught.value.revoke_consent) == (
        code,
        suppress,
        revoke,
    )


def test_a_refused_twilio_connection_is_transient(fake_provider, make_message, settings):
    settings.TWILIO_API_BASE_URL = closed_port_url()

    with pytest.raises(TransientError, match="twilio: ConnectionError"):
        get_provider(Channel.SMS).send(make_message(channel=Channel.SMS))


def test_a_twilio_connect_timeout_is_transient(fake_provider, make_message, settings):
    settings.DELIVERY_TIMEOUT_S = 0.3
    with unanswered_connect_url() as url:
        settings.TWILIO_API_BASE_URL = url

        with pytest.raises(TransientError, match=r"twilio: ConnectTimeout.*\(nothing sent\)"):
            get_provider(Channel.SMS).send(make_message(channel=Channel.SMS))


def test_a_failed_twilio_tls_handshake_is_transient(fake_provider, make_message, settings):
    settings.TWILIO_API_BASE_URL = tls_to_plain_http(fake_provider.url)

    with pytest.raises(TransientError, match=r"twilio: SSLError.*\(nothing sent\)"):
        get_provider(Channel.SMS).send(make_message(channel=Channel.SMS))

    assert fake_provider.twilio == []


def test_a_twilio_read_timeout_leaves_the_outcome_unknown(fake_provider, make_message, settings):
    settings.DELIVERY_TIMEOUT_S = 0.3
    fake_provider.script("twilio", Reply(201, delay=1.5))

    with pytest.raises(OutcomeUnknownError) as caught:
        get_provider(Channel.SMS).send(make_message(channel=Channel.SMS))

    assert str(caught.value) == "twilio: read timeout after 0.3 s: may have reached Twilio"
    assert len(fake_provider.twilio) == 1


def test_a_twilio_connection_dropped_after_the_request_leaves_the_outcome_unknown(
    fake_provider, make_message
):
    fake_provider.script("twilio", Reply.drop())

    with pytest.raises(
        OutcomeUnknownError,
        match=r"twilio: ConnectionError after the request was written: .*may have reached Twilio",
    ):
        get_provider(Channel.SMS).send(make_message(channel=Channel.SMS))

    assert len(fake_provider.twilio) == 1


def test_a_kept_alive_twilio_connection_the_server_closed_is_replaced_before_writing(
    fake_provider, make_message
):
    provider = get_provider(Channel.SMS)
    fake_provider.script("twilio", Reply.json(201, {"sid": "SM" + "1" * 32}, close_after=True))
    provider.send(make_message(channel=Channel.SMS))
    assert fake_provider.httpd.closed.acquire(timeout=10)  # the close has happened

    assert provider.send(make_message(channel=Channel.SMS)).startswith("SM")
    assert fake_provider.connections == 2


# --- local providers and the choice -------------------------------------------------


def test_the_console_provider_logs_a_line_and_returns_a_console_id(settings, make_message, caplog):
    settings.EMAIL_PROVIDER = "console"
    message = make_message(subject="Your weekly report")

    with caplog.at_level(logging.INFO, logger="tenure.outbox"):
        provider_id = get_provider(Channel.EMAIL).send(message)

    assert provider_id.startswith("console-")
    assert f"email #{message.pk} to {message.to_address}: Your weekly report" in caplog.text


def test_the_locmem_provider_keeps_what_it_sent_in_the_outbox(outbox, make_message):
    email = make_message()
    sms = make_message(channel=Channel.SMS)

    email_id = get_provider(Channel.EMAIL).send(email)
    get_provider(Channel.SMS).send(sms)

    assert [(s.message_id, s.channel, s.to) for s in outbox] == [
        (email.pk, "email", email.to_address),
        (sms.pk, "sms", sms.to_address),
    ]
    assert outbox[0].provider_message_id == email_id
    assert outbox[0].headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert outbox[1].headers == {}


def test_an_unknown_provider_name_is_refused_naming_the_setting(settings):
    settings.SMS_PROVIDER = "carrier-pigeon"

    with pytest.raises(
        ImproperlyConfigured, match="SMS_PROVIDER='carrier-pigeon' is not a provider"
    ):
        get_provider(Channel.SMS)


def test_a_provider_that_cannot_serve_the_channel_is_refused(settings):
    settings.SMS_PROVIDER = "sendgrid"

    with pytest.raises(ImproperlyConfigured, match="sendgrid does not send sms"):
        get_provider(Channel.SMS)


def test_sendgrid_without_a_key_is_refused(settings):
    settings.EMAIL_PROVIDER = "sendgrid"
    settings.SENDGRID_API_KEY = ""

    with pytest.raises(ImproperlyConfigured, match="needs SENDGRID_API_KEY"):
        get_provider(Channel.EMAIL)


def test_the_configured_providers_and_their_sdks_are_imported_without_being_built(
    settings, monkeypatch
):
    settings.EMAIL_PROVIDER, settings.SMS_PROVIDER = "sendgrid", "twilio"
    monkeypatch.delitem(sys.modules, "apps.messaging.providers.sendgrid")
    monkeypatch.delitem(sys.modules, "apps.messaging.providers.twilio")
    built = dict(providers._built)

    providers.import_configured()

    assert "apps.messaging.providers.sendgrid" in sys.modules
    assert "apps.messaging.providers.twilio" in sys.modules
    assert "twilio.rest.api" in sys.modules  # what Client.api would import at the first SMS
    assert providers._built == built


def test_importing_the_providers_skips_a_channel_configured_wrongly(settings, monkeypatch):
    settings.EMAIL_PROVIDER, settings.SMS_PROVIDER = "nope", "twilio"
    monkeypatch.delitem(sys.modules, "apps.messaging.providers.twilio")

    providers.import_configured()

    assert "apps.messaging.providers.twilio" in sys.modules


def test_twilio_without_a_sender_is_refused(settings):
    settings.SMS_PROVIDER = "twilio"
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = TWILIO_SID, TWILIO_TOKEN
    settings.TWILIO_FROM_NUMBER = settings.TWILIO_MESSAGING_SERVICE_SID = ""

    with pytest.raises(ImproperlyConfigured, match="TWILIO_FROM_NUMBER or TWILIO_MESSAGING"):
        get_provider(Channel.SMS)
