"""Input from the attack run (issue 15): every hostile value is a 400 naming its
field, in a batch only its item is refused, and nothing of it is stored."""

import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from apps.customers.importing import import_file
from apps.customers.models import Customer, Event

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)


@pytest.fixture(autouse=True)
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield


def nested(depth: int, leaf=1):
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


# Each: a raw JSON fragment for a field of a track call, and what the error must say.
# Raw text, because json.dumps cannot write NaN as the attacker does.
HOSTILE_TRACKS = [
    ('"timestamp": "9999-12-31T23:59:59-14:00"', "timestamp: "),
    ('"timestamp": "0001-01-01T00:00:00+14:00"', "timestamp: "),
    ('"timestamp": "1969-12-31T23:59:59Z"', "timestamp: "),
    ('"timestamp": "2026-11-03T09:30:00Z"', "timestamp: "),
    ('"properties": {"note": "a\\u0000b"}', "properties.note: "),
    ('"properties": {"a\\u0000b": 1}', "properties: "),
    ('"properties": {"note": "\\ud800"}', "properties.note: "),
    ('"properties": {"list": [1, "\\udfff"]}', "properties.list.1: "),
    ('"properties": {"x": NaN}', "properties.x: "),
    ('"properties": {"x": -Infinity}', "properties.x: "),
    ('"properties": {"x": 1e400}', "properties.x: "),
    ('"properties": ' + json.dumps(nested(40)), "properties.a.a.a"),
    ('"messageId": "m\\u0000"', "messageId: "),
    ('"messageId": "' + "m" * 201 + '"', "messageId: "),
]


def track_raw(fragment: str, user: str = "u-bad") -> str:
    return f'{{"userId": "{user}", "event": "login", {fragment}}}'


@pytest.mark.parametrize(("fragment", "error"), HOSTILE_TRACKS)
def test_a_hostile_track_is_a_400_naming_the_field(api, fragment, error):
    response = api("track", None, raw=track_raw(fragment).encode())

    assert response.status_code == 400, response.content
    assert error in response.json()["error"]
    assert not Event.objects.exists()
    assert not Customer.objects.exists()


@pytest.mark.parametrize(("fragment", "error"), HOSTILE_TRACKS)
def test_a_hostile_item_in_a_batch_refuses_only_that_item(api, fragment, error):
    good = '{"type": "track", "userId": "u-good", "event": "signed_up"}'
    bad = '{"type": "track", ' + track_raw(fragment)[1:]
    response = api("batch", None, raw=f'{{"batch": [{good}, {bad}]}}'.encode())

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["accepted"] == 1
    assert [e["index"] for e in body["errors"]] == [1]
    assert error in body["errors"][0]["error"]
    assert list(Event.objects.values_list("customer__external_id", "name")) == [
        ("u-good", "signed_up")
    ]


HOSTILE_IDENTIFIES = [
    ('"userId": "u\\u0000"', "userId: "),
    ('"userId": "\\ud800"', "userId: "),
    ('"traits": {"email": "' + "a" * 250 + '@example.com"}', "traits.email: "),
    ('"traits": {"locale": "' + "x" * 36 + '"}', "traits.locale: "),
    ('"traits": {"timezone": "Europe/Paris\\u0000"}', "traits.timezone: "),
    ('"traits": {"plan": "pro\\u0000"}', "traits.plan: "),
    ('"traits": {"deep": ' + json.dumps(nested(900)) + "}", "traits.deep.a.a"),
    ('"traits": {"n": NaN}', "traits.n: "),
]


@pytest.mark.parametrize(("fragment", "error"), HOSTILE_IDENTIFIES)
def test_a_hostile_identify_is_a_400_naming_the_field(api, fragment, error):
    raw = f'{{"userId": "u-bad", "traits": {{}}, {fragment}}}'
    response = api("identify", None, raw=raw.encode())

    assert response.status_code == 400, response.content
    assert error in response.json()["error"]
    assert not Customer.objects.exists()


def test_a_timestamp_in_the_window_with_an_odd_offset_is_stored_in_utc(api):
    # Python reads offsets up to 23:59, PostgreSQL only up to 15:59: stored as UTC.
    response = api("track", {"userId": "u-1", "event": "x", "timestamp": "2026-11-01T20:00+20:00"})

    assert response.status_code == 200, response.content
    assert Event.objects.get().occurred_at == datetime(2026, 11, 1, 0, 0, tzinfo=UTC)


def test_a_timestamp_a_few_hours_ahead_is_taken_as_a_fast_client_clock(api):
    ahead = NOW + timedelta(hours=5)
    response = api("track", {"userId": "u-1", "event": "x", "timestamp": ahead.isoformat()})

    assert response.status_code == 200
    assert Event.objects.get().occurred_at == ahead


def test_the_timestamp_window_is_a_setting(api, settings):
    settings.INGEST_TIMESTAMP_MIN = datetime(2000, 1, 1, tzinfo=UTC)
    settings.INGEST_TIMESTAMP_MAX_FUTURE_S = 60

    old = api("track", {"userId": "u", "event": "x", "timestamp": "1999-12-31T23:00:00Z"})
    ahead = api("track", {"userId": "u", "event": "x", "timestamp": "2026-11-01T09:32:00Z"})

    assert old.status_code == ahead.status_code == 400
    assert "timestamp: " in old.json()["error"]
    assert "2000-01-01" in old.json()["error"]


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b'{"userId": "u", "event": "x", "properties": NaN}', "properties: "),
        (b"NaN", "request body must be a JSON object"),
        # 20 kB, within a single call's SEGMENT_MAX_CALL_BYTES (32 KiB).
        (b"[" * 10_000 + b"]" * 10_000, "request body is nested too deeply"),
        (b'{"userId": "u", "event": "x", "n": 1' + b"0" * 5000 + b"}", "request body"),
        (b'{"userId": "u\xed\xa0\x80", "event": "x"}', "request body is not UTF-8 text"),
    ],
)
def test_bodies_json_cannot_hold_are_a_400(api, raw, error):
    response = api("track", None, raw=raw)

    assert response.status_code == 400, response.content
    assert response.json()["error"].startswith(error)


@pytest.mark.parametrize(
    ("fragment", "error"),
    [
        ('"ip": "1.2.3.4\\u0000"', "ip: "),
        ('"wording": "yes\\u0000"', "wording: "),
        ('"userAgent": "\\ud800"', "userAgent: "),
        ('"userId": "u\\u0000"', "userId: "),
        ('"timestamp": "0001-01-01T00:00:00+14:00"', "timestamp: "),
        ('"timestamp": "1960-01-01T00:00:00Z"', "timestamp: "),
    ],
)
def test_a_hostile_consent_call_is_a_400_naming_the_field(api, fragment, error):
    raw = f'{{"userId": "u-1", "channel": "email", "status": "granted", {fragment}}}'
    response = api("consent", None, raw=raw.encode())

    assert response.status_code == 400, response.content
    assert error in response.json()["error"]
    assert not Customer.objects.exists()


def test_an_import_refuses_only_the_hostile_lines(tmp_path):
    lines = [
        '{"type": "track", "userId": "u-1", "event": "a", "messageId": "m1"}',
        '{"type": "track", "userId": "u-1", "event": "b", "properties": {"x": "\\u0000"}}',
        '{"type": "track", "userId": "u-1", "event": "c", "timestamp": "9999-12-31T23:59-14:00"}',
        '{"type": "identify", "userId": "u-2", "traits": {"n": NaN}}',
        '{"type": "identify", "userId": "u-2", "traits": ' + json.dumps(nested(60)) + "}",
        '{"type": "identify", "userId": "u-3", "traits": ' + "[" * 50_000 + "]" * 50_000 + "}",
        '{"type": "track", "userId": "u-1", "event": "d", "messageId": "m2"}',
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")

    report = import_file(path, received_at=NOW)

    assert report.accepted == 2
    assert [line for line, _ in report.errors] == [2, 3, 4, 5, 6]
    assert "properties.x: " in report.errors[0][1]
    assert "timestamp: " in report.errors[1][1]
    assert "traits.n: " in report.errors[2][1]
    assert sorted(Event.objects.values_list("name", flat=True)) == ["a", "d"]


# A long text, yet under SEGMENT_MAX_CALL_BYTES (a call over it fails its whole batch: 413).
@pytest.mark.parametrize("kind", [nested(950), {}, ["track"], "x" * 30_000])
def test_an_odd_item_type_is_refused_for_that_item_only(api, kind):
    bad = json.dumps({"type": kind, "userId": "u-bad"})
    good = json.dumps({"type": "track", "userId": "u-good", "event": "login"})
    response = api("batch", None, raw=f'{{"batch": [{good}, {bad}]}}'.encode())

    assert response.status_code == 200
    assert response.json()["accepted"] == 1
    assert response.json()["errors"][0]["error"].startswith("type: must be one of identify, track,")
    assert len(response.json()["errors"][0]["error"]) < 200


def test_an_import_line_with_deep_fields_that_are_ignored_still_imports(tmp_path):
    line = {"type": "track", "userId": "u-1", "event": "a", "context": nested(950)}
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(line) + "\n")

    report = import_file(path, received_at=NOW)

    assert (report.accepted, report.errors) == (1, [])
    assert Event.objects.get().name == "a"


def test_identify_over_traits_an_older_version_stored_as_a_non_object_replaces_them(api):
    customer = Customer.objects.create(external_id="u-1", traits=["odd"])

    response = api("identify", {"userId": "u-1", "traits": {"plan": "pro"}})

    assert response.status_code == 200
    customer.refresh_from_db()
    assert customer.traits == {"plan": "pro"}
