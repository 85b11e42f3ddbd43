"""Webhook nodes never reach loopback, private, link-local or reserved
addresses (SSRF): refused when a journey is imported or saved, and again at
each call after DNS, unless JOURNEY_WEBHOOK_ALLOWED_HOSTS names them (the
calls themselves: tests/journeys/test_nodes.py)."""

import pytest

from apps.journeys.graph import JourneyError, parse_journey
from apps.journeys.services import journey_import
from apps.journeys.webhook_hosts import AddressRefused, resolve, url_problem

from .test_graph import with_nodes
from .test_nodes import T0

REFUSED = [
    "http://127.0.0.1/hook",
    "http://127.8.9.10:8080/hook",
    "http://localhost/hook",
    "http://api.localhost/hook",
    "http://printer.local/hook",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.5/hook",
    "http://172.16.3.4/hook",
    "http://192.168.1.1/hook",
    "http://100.64.0.1/hook",  # shared address space (carrier NAT)
    "http://0.0.0.0/hook",
    "http://224.0.0.1/hook",
    "http://240.0.0.1/hook",
    "http://255.255.255.255/hook",
    "http://2130706433/hook",  # 127.0.0.1 as one decimal number
    "http://0x7f.1/hook",
    "http://0177.0.0.1/hook",
    "http://127.1/hook",
    "http://[::1]/hook",
    "http://[::]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:169.254.169.254]/hook",
    "http://[fe80::1]/hook",
    "http://[fc00::1]/hook",
    "http://[ff02::1]/hook",
    "http://[2002:a00:1::]/hook",  # 6to4 around 10.0.0.1
    "http://[64:ff9b::7f00:1]/hook",  # NAT64 around 127.0.0.1
]


@pytest.mark.parametrize("url", REFUSED)
def test_a_webhook_to_a_non_public_address_is_refused_naming_the_node_and_field(url, db):
    data = with_nodes({"id": "crm", "type": "webhook", "url": url, "next": None})

    with pytest.raises(JourneyError) as info:
        parse_journey(data)

    [(path, message)] = info.value.errors
    assert path == "nodes[crm].url"
    assert message.startswith("may not post to ")
    assert "JOURNEY_WEBHOOK_ALLOWED_HOSTS" in message


@pytest.mark.parametrize(
    "url", ["https://hooks.example.com/x", "http://93.184.216.34/x", "https://[2606:4700::1111]/x"]
)
def test_a_webhook_to_a_public_host_is_accepted(url):
    assert url_problem(url) is None


def test_the_allow_list_admits_names_addresses_and_networks(settings):
    settings.JOURNEY_WEBHOOK_ALLOWED_HOSTS = ["crm.internal", "127.0.0.1", "10.1.0.0/16"]

    assert url_problem("https://crm.internal/x") is None
    assert url_problem("http://127.0.0.1:8000/x") is None
    assert url_problem("http://10.1.2.3/x") is None
    assert url_problem("http://10.2.0.1/x").startswith("may not post to 10.2.0.1: ")
    assert url_problem("http://127.0.0.2/x") is not None


def test_a_journey_file_with_a_metadata_webhook_is_not_imported(db, template):
    data = with_nodes(
        {"id": "leak", "type": "webhook", "url": "http://169.254.169.254/latest/", "next": None}
    )

    with pytest.raises(JourneyError) as info:
        journey_import(data, now=T0)

    assert info.value.errors == [
        (
            "nodes[leak].url",
            "may not post to 169.254.169.254: 169.254.169.254 is a link-local address "
            "(JOURNEY_WEBHOOK_ALLOWED_HOSTS names hosts that may be reached anyway)",
        )
    ]


def test_at_call_time_a_name_is_resolved_and_every_address_checked():
    with pytest.raises(AddressRefused, match=r"localhost: it resolves to (127\.0\.0\.1|::1): "):
        resolve("http://localhost:9/x")
    with pytest.raises(AddressRefused, match="must be an http:// or https:// URL"):
        resolve("file:///etc/passwd")
