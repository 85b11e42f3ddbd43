"""The SendGrid transport mirror (apps/core/mirrors/sendgrid_transport.py)
still leans on the python_http_client, http.client and urllib internals it
was written against, and sends what the SDK's own client sends, answered
the same way."""

import http.client
import urllib.request

import pytest
import python_http_client.client
import python_http_client.exceptions
import sendgrid.base_interface
from sendgrid import SendGridAPIClient

from apps.core.mirrors.sendgrid_transport import KeptAlive, PooledClient, _HTTPConnection
from tests.core.mirrors.upstream import changed
from tests.fakes.provider import SENDGRID_KEY, FakeProviderServer, Reply

Client = python_http_client.client.Client
UPSTREAM = {
    "Client.__init__": Client.__init__,
    "Client.__getattr__": Client.__getattr__,
    "Client._build_client": Client._build_client,
    "Client._build_url": Client._build_url,
    "Client._build_versioned_url": Client._build_versioned_url,
    "Client._update_headers": Client._update_headers,
    "Client._make_request": Client._make_request,
    "Response.__init__": python_http_client.client.Response.__init__,
    "handle_error": python_http_client.exceptions.handle_error,
    "BaseInterface.__init__": sendgrid.base_interface.BaseInterface.__init__,
    "BaseInterface.send": sendgrid.base_interface.BaseInterface.send,
    "HTTPConnection._send_output": http.client.HTTPConnection._send_output,
    "HTTPConnection.endheaders": http.client.HTTPConnection.endheaders,
    "HTTPConnection.send": http.client.HTTPConnection.send,
    "ProxyHandler.__init__": urllib.request.ProxyHandler.__init__,
    "ProxyHandler.proxy_open": urllib.request.ProxyHandler.proxy_open,
    "getproxies_environment": urllib.request.getproxies_environment,
    "proxy_bypass_environment": urllib.request.proxy_bypass_environment,
}
# python-http-client 3.3.7, sendgrid 6.12.5, CPython 3.11.7.
RECORDED = {
    "Client.__init__": "19e2a09a36d796b0",
    "Client.__getattr__": "f7c435fec0b4e89f",
    "Client._build_client": "441c739eace269dc",
    "Client._build_url": "4a5cbdd874129784",
    "Client._build_versioned_url": "b34da5e9f6c8d202",
    "Client._update_headers": "1a9856ac8102b277",
    "Client._make_request": "e4e1e0c6a37a1c9b",
    "Response.__init__": "b62013f7e16e1415",
    "handle_error": "64fd6fea2dc5d71e",
    "BaseInterface.__init__": "c302c689b0d77094",
    "BaseInterface.send": "f368b37e57d341d9",
    "HTTPConnection._send_output": "69694d6da8208eba",
    "HTTPConnection.endheaders": "e304903537efcd7e",
    "HTTPConnection.send": "fdc99bf3088b7110",
    "ProxyHandler.__init__": "0a845d4a5a037150",
    "ProxyHandler.proxy_open": "43b7fe7ce8472963",
    "getproxies_environment": "537fc61e3c4ad4ff",
    "proxy_bypass_environment": "c636414b98c23f9d",
}


def test_the_upstream_internals_mirrored_are_the_ones_it_was_written_against():
    assert changed(UPSTREAM, RECORDED) == [], (
        "python_http_client, sendgrid, http.client or urllib changed underneath "
        "apps/core/mirrors/sendgrid_transport.py: check the mirror against the new code, "
        "then record the new fingerprints here"
    )


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with FakeProviderServer() as server:
        yield server


def clients(url: str):
    """The SDK's own client for /v3, and ours built from it as SendGridProvider does."""
    sdk = SendGridAPIClient(api_key=SENDGRID_KEY, host=url).client
    sdk.timeout = 2.0
    ours = PooledClient(
        connections=KeptAlive(url),
        host=sdk.host,
        request_headers=dict(sdk.request_headers),
        version=sdk._version,
        timeout=2.0,
    )
    return sdk, ours


BODY = {
    "personalizations": [{"to": [{"email": "ada@example.com"}]}],
    "from": {"email": "hello@example.com"},
    "subject": "Hi",
    "content": [{"type": "text/plain", "value": "Hi Ada"}],
}
# What urllib adds of its own (and our connection does not need).
URLLIB_ONLY = {"connection", "accept-encoding"}


def test_a_call_sends_what_the_sdks_client_sends_and_gets_the_same_response(fake):
    sdk, ours = clients(fake.url)

    theirs = sdk.mail.send.post(request_body=BODY)
    mine = ours.mail.send.post(request_body=BODY)

    first, second = fake.sendgrid
    assert (second.method, second.path, second.body) == (first.method, first.path, first.body)
    assert {k: v for k, v in second.headers.items() if k not in URLLIB_ONLY} == {
        k: v for k, v in first.headers.items() if k not in URLLIB_ONLY
    }
    assert (mine.status_code, mine.body) == (theirs.status_code, theirs.body)
    assert mine.headers["X-Message-Id"] and theirs.headers["X-Message-Id"]


def test_an_error_answer_raises_what_the_sdks_client_raises(fake):
    sdk, ours = clients(fake.url)
    fake.script("sendgrid", Reply.sendgrid_error(400, "bad"), Reply.sendgrid_error(400, "bad"))

    raised = []
    for client in (sdk, ours):
        with pytest.raises(python_http_client.exceptions.HTTPError) as caught:
            client.mail.send.post(request_body=BODY)
        raised.append(caught.value)

    theirs, mine = raised
    assert type(mine) is type(theirs) is python_http_client.exceptions.BadRequestsError
    assert (mine.status_code, mine.body, mine.to_dict) == (
        theirs.status_code,
        theirs.body,
        theirs.to_dict,
    )


class RecordingSocket:
    """Stands in for a connected socket: keeps each write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def sendall(self, data) -> None:
        self.writes.append(bytes(data))


def test_a_request_goes_out_in_one_write_with_what_http_client_would_send():
    sent = {}
    for kind in (_HTTPConnection, http.client.HTTPConnection):
        connection = kind("api.sendgrid.example")
        connection.sock = RecordingSocket()
        connection.request(
            "POST", "/v3/mail/send", body=b'{"a": 1}', headers={"Content-Type": "application/json"}
        )
        sent[kind] = connection.sock.writes

    (request,) = sent[_HTTPConnection]
    assert request == b"".join(sent[http.client.HTTPConnection])  # two writes there
    assert request.startswith(b"POST /v3/mail/send HTTP/1.1\r\n")
    assert b"\r\nContent-Length: 8\r\n" in request
    assert request.endswith(b'\r\n\r\n{"a": 1}')
