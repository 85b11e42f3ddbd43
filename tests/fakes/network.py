"""Loopback addresses where a connection fails before any request is written:
refused, never accepted (a connect timeout), or a TLS handshake with a server
that speaks plain HTTP."""

import contextlib
import socket
from collections.abc import Iterator


def closed_port_url() -> str:
    """A loopback port nothing listens on: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def unanswered_connect_url() -> Iterator[str]:
    """A loopback port that never completes a connect: its listener's accept
    queue is full, so the kernel drops further SYNs (a connect timeout)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        fillers = []
        try:
            for _ in range(2):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(listener.getsockname())
                fillers.append(filler)
            yield f"http://127.0.0.1:{listener.getsockname()[1]}"
        finally:
            for filler in fillers:
                filler.close()


def tls_to_plain_http(url: str) -> str:
    """The fake's address with https: the TLS handshake fails (it speaks HTTP)."""
    return url.replace("http://", "https://")
