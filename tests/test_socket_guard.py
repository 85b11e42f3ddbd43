import socket

import pytest


def test_a_connection_to_a_non_loopback_address_fails_the_test():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(RuntimeError, match="loopback only"):
        sock.connect(("192.0.2.10", 80))
    sock.close()


def test_loopback_connections_are_allowed():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname(), timeout=2)
    client.close()
    server.close()
