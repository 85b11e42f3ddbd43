"""Where a webhook node may post: public addresses only (issue 15).

A marketer's webhook URL is a request our servers make; pointed at
`127.0.0.1`, a private range or `169.254.169.254` (the cloud's metadata
service, which hands out credentials) it would reach what the internet
cannot. So:

- when a journey is imported or saved in the builder (`url_problem`), an
  http(s) URL whose host is an address (in any form a resolver reads:
  `2130706433`, `0x7f.1`, `0177.0.0.1`, `[::ffff:127.0.0.1]`) must be a
  public one, and local names (`localhost`, `*.localhost`, `*.local`,
  `*.internal`) are refused;
- when the call is made (`resolve`), the host is resolved once, every
  address it resolves to is checked, and the connection goes to a checked
  address (webhooks.py keeps the Host header and TLS name of the URL): a
  name that resolved to a public address when checked cannot point at a
  private one when connected (DNS rebinding).

"Public" is Python's `ipaddress` verdict: not loopback, link-local,
private, reserved, multicast or unspecified, and `is_global` (so also not
100.64.0.0/10, shared address space); an IPv6 address that embeds an IPv4
one (IPv4-mapped, 6to4, NAT64, Teredo) is judged by that one too.

JOURNEY_WEBHOOK_ALLOWED_HOSTS names what is allowed anyway: host names
(exact), addresses, or networks (`10.1.0.0/16`), e.g. an internal CRM.
"""

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

LOCAL_NAMES = ("localhost",)
LOCAL_SUFFIXES = (".localhost", ".local", ".internal")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_VERDICTS = (
    ("is_loopback", "a loopback"),
    ("is_link_local", "a link-local"),
    ("is_multicast", "a multicast"),
    ("is_unspecified", "an unspecified"),
    ("is_private", "a private"),
    ("is_reserved", "a reserved"),
)


class AddressRefused(Exception):
    """The URL's host is, or resolves to, an address webhooks may not reach."""


def _allowed() -> tuple[set[str], list[ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    names, networks = set(), []
    for entry in settings.JOURNEY_WEBHOOK_ALLOWED_HOSTS:
        entry = str(entry).strip().lower().strip("[]")
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.add(entry.rstrip("."))
    return names, networks


def address_of(host: str) -> Address | None:
    """The address `host` is, when it is one in any form a resolver reads
    (inet_aton's: `2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`)."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def _embedded(address: Address) -> list[Address]:
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [address.ipv4_mapped, address.sixtofour]
    if address.teredo:
        found.extend(address.teredo)
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [a for a in found if a is not None]


def address_problem(address: Address) -> str | None:
    """Why webhooks may not reach `address`, or None when it is public."""
    for candidate in (address, *_embedded(address)):
        for attribute, kind in _VERDICTS:
            if getattr(candidate, attribute):
                return f"{candidate} is {kind} address"
        if not candidate.is_global:
            return f"{candidate} is not a public address"
    return None


def _is_allowed(address: Address, networks: list) -> bool:
    return any(address.version == n.version and address in n for n in networks)


_HINT = " (JOURNEY_WEBHOOK_ALLOWED_HOSTS names hosts that may be reached anyway)"


def _scheme_problem(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not (parts.hostname or "").rstrip("."):
        return f"must be an http:// or https:// URL with a host (got {url!r})"
    try:
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError:
        return f"has an invalid port (got {url!r})"
    return None


def url_problem(url: str) -> str | None:
    """Why a webhook may not post to `url`, judged without DNS (when a
    journey is imported or saved); None when it may."""
    problem = _scheme_problem(url)
    if problem is not None:
        return problem
    host = urlsplit(url).hostname.rstrip(".")
    names, networks = _allowed()
    if host in names:
        return None
    address = address_of(host)
    if address is not None:
        if _is_allowed(address, networks):
            return None
        problem = address_problem(address)
        return f"may not post to {host}: {problem}{_HINT}" if problem else None
    if host in LOCAL_NAMES or host.endswith(LOCAL_SUFFIXES):
        return f"may not post to {host}: a local name{_HINT}"
    return None


def resolve(url: str) -> list[str]:
    """The addresses to connect to for `url`'s host, resolved once at call
    time and every one checked. Raises AddressRefused (for good) or OSError
    (DNS failed: worth retrying)."""
    problem = _scheme_problem(url)
    if problem is not None:
        raise AddressRefused(problem)
    parts = urlsplit(url)
    host = parts.hostname.rstrip(".")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    names, networks = _allowed()
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if host in names:
        return addresses
    for found in addresses:
        address = ipaddress.ip_address(found.split("%", 1)[0])
        if not _is_allowed(address, networks) and (problem := address_problem(address)):
            shown = "" if address_of(host) == address else f"it resolves to {found}: "
            raise AddressRefused(f"may not post to {host}: {shown}{problem}{_HINT}")
    return addresses
