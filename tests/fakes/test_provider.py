"""The fake API's own HTTP handling (what the SDK tests rely on without
saying): keep-alive, `Connection: close`, headers as sent, bad requests."""

import json
import socket

import pytest

from tests.fakes.provider import SENDGRID_KEY, FakeProviderServer


@pytest.fixture
def fake():
    with FakeProviderServer() as server:
        yield server


def exchange(sock: socket.socket, request: bytes) -> bytes:
    """Send `request` and read one answer (its head and Content-Length body)."""
    sock.sendall(request)
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(65536)
    head, _, body = answer.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def sendgrid_request(*, connection: str = "keep-alive") -> bytes:
    body = json.dumps(
        {
            "personalizations": [{"to": [{"email": "ada@example.com"}]}],
            "from": {"email": "hello@example.com"},
            "content": [{"type": "text/plain", "value": "hi"}],
            "custom_args": {"tenure_message_id": "7"},
        }
    ).encode()
    return (
        "POST /v3/mail/send HTTP/1.1\r\nHost: api.sendgrid.com\r\n"
        f"Authorization:  Bearer {SENDGRID_KEY}\r\nX-Custom: One \r\n"
        f"Content-Type: application/json\r\nConnection: {connection}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_a_kept_alive_connection_serves_requests_one_after_another(fake):
    with socket.create_connection(fake.httpd.server_address[:2]) as sock:
        answers = [exchange(sock, sendgrid_request()) for _ in range(2)]

    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 202 Accepted\r\n")
        assert b"\r\nX-Message-Id: fake-sg-" in answer and b"\r\nDate: " in answer
    assert fake.connections == 1 and fake.stats()["duplicates"] == 1
    # Names lower-cased, values without the blanks before them (as http.server's parser).
    assert fake.sendgrid[0].headers["authorization"] == f"Bearer {SENDGRID_KEY}"
    assert fake.sendgrid[0].headers["x-custom"] == "One "


def test_a_request_asking_to_close_is_answered_then_the_connection_closed(fake):
    with socket.create_connection(fake.httpd.server_address[:2]) as sock:
        answer = exchange(sock, sendgrid_request(connection="close"))
        sock.settimeout(5)
        assert sock.recv(1) == b""

    assert answer.startswith(b"HTTP/1.1 202 ")


@pytest.mark.parametrize(
    "request_head",
    [b"NONSENSE\r\n\r\n", b"POST /v3/mail/send HTTP/1.1\r\nno colon here\r\n\r\n"],
)
def test_a_malformed_request_gets_a_400(fake, request_head):
    with socket.create_connection(fake.httpd.server_address[:2]) as sock:
        answer = exchange(sock, request_head)

    assert answer.startswith(b"HTTP/1.1 400 ")
    assert fake.requests == []
