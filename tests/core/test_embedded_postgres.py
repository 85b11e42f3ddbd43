"""The embedded PostgreSQL (config/embedded_postgres.py), for real: a server
of the test's own data folder, started, found running, and stopped."""

import socket
from pathlib import Path

import psycopg
import pytest

from config import embedded_postgres


def running(pid: str) -> bool:
    """Whether the process runs (a zombie, exited and not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def data_root(tmp_path):
    yield tmp_path
    embedded_postgres.stop(tmp_path)


def test_the_first_start_makes_a_server_on_a_socket_with_the_tenure_database(data_root):
    url = embedded_postgres.ensure_running(data_root)

    assert url == embedded_postgres.url(data_root)
    assert (data_root / "postgres" / "PG_VERSION").read_text().strip() == "18"
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT current_database(), current_setting('listen_addresses'), "
            "current_setting('server_version_num')::int"
        ).fetchone()
    # No TCP: listen_addresses is empty, the socket is the only way in.
    assert row[:2] == ("tenure", "")
    assert row[2] >= 180000


def test_ensure_running_is_idempotent_and_stop_stops_it(data_root):
    embedded_postgres.ensure_running(data_root)
    pid = (data_root / "postgres" / "postmaster.pid").read_text().split()[0]

    embedded_postgres.ensure_running(data_root)  # running: the same server
    assert (data_root / "postgres" / "postmaster.pid").read_text().split()[0] == pid

    assert embedded_postgres.stop(data_root) is True
    assert not embedded_postgres.is_running(data_root)
    assert not running(pid)
    assert embedded_postgres.stop(data_root) is False

    # Started again on the same data (no initdb): the database is still there.
    with psycopg.connect(embedded_postgres.ensure_running(data_root)) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("tenure",)


def test_a_data_folder_too_deep_for_a_unix_socket_gets_a_short_socket_directory(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    sockets = embedded_postgres.socket_dir(deep)

    assert sockets != embedded_postgres.data_dir(deep)
    assert len(str(sockets / ".s.PGSQL.5432")) <= embedded_postgres.SOCKET_PATH_MAX
    assert embedded_postgres.socket_dir(deep) == sockets  # the same every time
    try:
        url = embedded_postgres.ensure_running(deep)
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert embedded_postgres.settings_dict(deep)["HOST"] == str(sockets)
    finally:
        embedded_postgres.stop(deep)


def test_the_tests_database_is_the_given_url_then_a_local_server_then_the_embedded_one(
    data_root, monkeypatch
):
    monkeypatch.setenv("TEST_DATABASE_URL", "postgres://someone@db.example/x")
    assert embedded_postgres.test_database_url(data_root, "127.0.0.1:1") == (
        "postgres://someone@db.example/x",
        False,
    )

    monkeypatch.delenv("TEST_DATABASE_URL")
    with socket.socket() as listener:  # a server that answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert embedded_postgres.test_database_url(data_root, f"127.0.0.1:{port}") == (
            f"postgres://postgres@127.0.0.1:{port}/tenure",
            False,
        )

    # Nothing answers on port 1: the embedded server, started.
    url, embedded = embedded_postgres.test_database_url(data_root, "127.0.0.1:1")
    assert (url, embedded) == (embedded_postgres.url(data_root), True)
    assert embedded_postgres.is_running(data_root)
