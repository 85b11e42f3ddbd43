import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from apps.customers.models import Customer, Event, EventStat
from tests.conftest import stats_mismatches

pytestmark = pytest.mark.django_db


def run_import(path, *args):
    out, err = StringIO(), StringIO()
    call_command("import_events", str(path), "--no-progress", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def write_jsonl(path, lines):
    path.write_text("".join((json.dumps(x) if not isinstance(x, str) else x) + "\n" for x in lines))
    return path


GOOD_JSONL = [
    {"type": "identify", "userId": "u-1", "traits": {"email": "a@example.com", "plan": "pro"}},
    {"type": "track", "userId": "u-1", "event": "login", "timestamp": "2026-11-01T10:00:00Z"},
    {"type": "track", "userId": "u-2", "event": "login", "timestamp": "2026-11-02T10:00:00Z"},
    {
        "type": "track",
        "userId": "u-1",
        "event": "login",
        "timestamp": "2026-11-03T10:00:00Z",
        "messageId": "m-3",
    },
    {"type": "track", "userId": "u-2", "event": "signed_up", "properties": {"plan": "starter"}},
]


def test_a_jsonl_file_is_imported_with_a_summary(tmp_path):
    out, _ = run_import(write_jsonl(tmp_path / "events.jsonl", GOOD_JSONL))

    assert "5 calls accepted, 0 refused" in out
    assert "customers 2 created" in out
    assert "events 4 stored, 0 already there" in out
    assert Customer.objects.get(external_id="u-1").email == "a@example.com"
    assert EventStat.objects.get(customer__external_id="u-1", name="login").count == 2
    assert stats_mismatches() == []


def test_importing_the_same_file_again_stores_nothing_new(tmp_path):
    path = write_jsonl(tmp_path / "events.jsonl", GOOD_JSONL)
    run_import(path)
    before = list(EventStat.objects.order_by("id").values("count", "first_at", "last_at"))

    out, _ = run_import(path)

    assert "events 0 stored, 4 already there" in out
    assert Event.objects.count() == 4
    assert list(EventStat.objects.order_by("id").values("count", "first_at", "last_at")) == before


def test_bad_lines_are_reported_with_line_numbers_and_the_good_ones_kept(tmp_path):
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            GOOD_JSONL[1],
            '{"type": "track", "userId": ',
            {"type": "track", "event": "login"},
            {"type": "alias", "userId": "u-1"},
            "",
            {"type": "identify", "userId": "u-3", "traits": {"timezone": "Nowhere/Land"}},
            [1, 2],
            GOOD_JSONL[2],
        ],
    )

    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match="5 line\\(s\\) refused"):
        call_command("import_events", str(path), "--no-progress", stdout=out, stderr=err)

    assert "2 calls accepted, 5 refused" in out.getvalue()
    lines = err.getvalue().splitlines()
    assert lines[0].startswith("mixed.jsonl:2: not valid JSON: Expecting value")
    assert lines[1] == "mixed.jsonl:3: userId: one of userId and anonymousId is required"
    assert lines[2] == "mixed.jsonl:4: previousId: Field required"
    assert lines[3].startswith("mixed.jsonl:6: traits.timezone: 'Nowhere/Land' is not an IANA")
    assert lines[4] == "mixed.jsonl:7: must be an object, got list"
    assert Event.objects.count() == 2
    assert not Customer.objects.filter(external_id="u-3").exists()


def test_track_lines_without_message_id_are_not_duplicated_by_a_rerun(tmp_path):
    path = write_jsonl(
        tmp_path / "plain.jsonl",
        [
            {"type": "track", "userId": "u-1", "event": "page_viewed", "properties": {"n": i}}
            for i in range(3)
        ],
    )
    run_import(path)
    run_import(path)

    assert Event.objects.count() == 3
    assert EventStat.objects.get().count == 3


def test_a_csv_of_customers_is_imported_with_typed_traits(tmp_path):
    path = tmp_path / "customers.csv"
    path.write_text(
        "external_id,email,phone,timezone,plan,mrr,ratio,active,zip,renewal_at,note\n"
        "c-1,ann@example.com,+447700900123,Europe/London,pro,199,0.5,true,02134,"
        "2026-12-01T00:00:00Z,\n"
        'c-2,bo@example.com,,America/New_York,starter,29,1.5,false,10001,,"has, comma"\n'
    )

    out, _ = run_import(path)

    assert "2 calls accepted, 0 refused" in out
    ann = Customer.objects.get(external_id="c-1")
    assert (ann.email, ann.phone, ann.timezone) == (
        "ann@example.com",
        "+447700900123",
        "Europe/London",
    )
    assert ann.traits["mrr"] == 199
    assert ann.traits["ratio"] == 0.5
    assert ann.traits["active"] is True
    assert ann.traits["zip"] == "02134"
    assert ann.traits["renewal_at"] == "2026-12-01T00:00:00Z"
    assert "note" not in ann.traits  # empty cells are not traits
    bo = Customer.objects.get(external_id="c-2")
    assert bo.phone == ""
    assert bo.traits["note"] == "has, comma"
    assert bo.traits["active"] is False


def test_a_csv_reimport_updates_customers_instead_of_duplicating(tmp_path):
    path = tmp_path / "customers.csv"
    path.write_text("external_id,plan\nc-1,starter\n")
    run_import(path)
    path.write_text("external_id,plan\nc-1,pro\n")
    run_import(path)

    assert Customer.objects.get().traits == {"plan": "pro"}


def test_bad_csv_rows_are_reported_with_their_line_numbers(tmp_path):
    path = tmp_path / "customers.csv"
    path.write_text(
        "external_id,phone,plan\n"
        "c-1,+14155550100,pro\n"
        ",+14155550101,pro\n"
        "c-3,555-0102,pro\n"
        "c-4,+14155550104,pro,extra\n"
        "c-5,+14155550105,growth\n"
    )
    err = StringIO()

    with pytest.raises(CommandError, match="3 line\\(s\\) refused"):
        call_command("import_events", str(path), "--no-progress", stdout=StringIO(), stderr=err)

    lines = err.getvalue().splitlines()
    assert lines[0] == "customers.csv:3: external_id: String should have at least 1 character"
    assert lines[1].startswith("customers.csv:4: traits.phone: '555-0102' is not an E.164")
    assert lines[2] == "customers.csv:5: has 4 cells; the header has 3"
    assert set(Customer.objects.values_list("external_id", flat=True)) == {"c-1", "c-5"}


def test_a_csv_without_an_external_id_column_is_refused(tmp_path):
    path = tmp_path / "customers.csv"
    path.write_text("id,email\n1,a@example.com\n")
    err = StringIO()

    with pytest.raises(CommandError):
        call_command("import_events", str(path), "--no-progress", stdout=StringIO(), stderr=err)

    assert "the header must have an 'external_id' column" in err.getvalue()
    assert not Customer.objects.exists()


def test_an_unknown_extension_or_missing_file_is_refused(tmp_path):
    (tmp_path / "data.txt").write_text("{}\n")

    with pytest.raises(CommandError, match="cannot tell the format"):
        run_import(tmp_path / "data.txt")
    with pytest.raises(CommandError, match="no such file"):
        run_import(tmp_path / "missing.jsonl")


def test_the_format_can_be_forced(tmp_path):
    path = write_jsonl(tmp_path / "data.txt", GOOD_JSONL[1:2])

    out, _ = run_import(path, "--format", "jsonl")

    assert "events 1 stored" in out


def test_large_imports_are_written_in_chunks_each_exact(tmp_path):
    lines = [
        {
            "type": "track",
            "userId": f"u-{i % 7}",
            "event": "login",
            "timestamp": f"2026-10-{1 + i % 28:02d}T00:00:00Z",
            "messageId": f"m-{i}",
        }
        for i in range(250)
    ]
    out, _ = run_import(write_jsonl(tmp_path / "big.jsonl", lines), "--chunk", "40")

    assert "events 250 stored" in out
    assert sum(EventStat.objects.values_list("count", flat=True)) == 250
    assert stats_mismatches() == []


def test_the_progress_bar_reports_lines_on_stderr(tmp_path):
    path = write_jsonl(tmp_path / "events.jsonl", GOOD_JSONL)
    err = StringIO()

    call_command("import_events", str(path), stdout=StringIO(), stderr=err)

    assert "5/5" in err.getvalue()
    assert "lines" in err.getvalue()
