import io
from datetime import UTC, datetime, timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.customers.models import Customer
from apps.segments.models import Segment, SegmentMembership, SegmentSnapshot
from apps.segments.services import (
    UploadReport,
    parse_external_ids_csv,
    segment_refresh,
    segment_static_upload,
    segments_refresh_all,
)

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
T2 = T0 + timedelta(hours=2)


def stays(segment: Segment) -> list[tuple[str, datetime, datetime | None]]:
    return list(
        SegmentMembership.objects.filter(segment=segment)
        .order_by("customer__external_id", "entered_at")
        .values_list("customer__external_id", "entered_at", "exited_at")
    )


@pytest.fixture
def vip(make_segment, identify):
    for user_id in ("u-a", "u-b", "u-c"):
        identify(user_id, at=T0)
    return make_segment("vip", kind=Segment.Kind.STATIC)


# --- uploads ------------------------------------------------------------------------------


def test_replace_makes_the_list_the_members_and_keeps_history(vip):
    segment_static_upload(vip, ["u-a", "u-b"], mode="append", now=T0)

    report = segment_static_upload(vip, ["u-b", "u-c"], mode="replace", now=T1)

    assert report == UploadReport(added=1, removed=1, unknown_ids=[], already_members=1)
    assert stays(vip) == [("u-a", T0, T1), ("u-b", T0, None), ("u-c", T1, None)]
    vip.refresh_from_db()
    assert vip.member_count == 2


def test_append_adds_and_never_removes(vip):
    segment_static_upload(vip, ["u-a"], mode="append", now=T0)

    report = segment_static_upload(vip, ["u-a", "u-b"], mode="append", now=T1)

    assert report == UploadReport(added=1, removed=0, unknown_ids=[], already_members=1)
    assert stays(vip) == [("u-a", T0, None), ("u-b", T1, None)]
    vip.refresh_from_db()
    assert vip.member_count == 2


def test_a_removed_customer_uploaded_again_starts_a_second_stay(vip):
    segment_static_upload(vip, ["u-a"], mode="replace", now=T0)
    segment_static_upload(vip, ["u-b"], mode="replace", now=T1)

    segment_static_upload(vip, ["u-a"], mode="append", now=T2)

    assert stays(vip) == [("u-a", T0, T1), ("u-a", T2, None), ("u-b", T1, None)]


def test_unknown_ids_are_reported_in_list_order_and_not_created(vip):
    report = segment_static_upload(vip, ["ghost-2", "u-a", "ghost-1"], mode="append", now=T0)

    assert report == UploadReport(
        added=1, removed=0, unknown_ids=["ghost-2", "ghost-1"], already_members=0
    )
    assert Customer.objects.count() == 3


def test_an_id_no_customer_can_have_is_unknown_not_an_error(vip):
    report = segment_static_upload(vip, ["u-a", "u-\x00"], mode="append", now=T0)

    assert (report.added, report.unknown_ids) == (1, ["u-\x00"])


def test_ids_are_trimmed_and_counted_once(vip):
    report = segment_static_upload(vip, [" u-a ", "u-a", "", "u-b"], mode="append", now=T0)

    assert (report.added, report.already_members) == (2, 0)


def test_replace_with_an_empty_list_empties_the_segment(vip):
    segment_static_upload(vip, ["u-a", "u-b"], mode="append", now=T0)

    report = segment_static_upload(vip, [], mode="replace", now=T1)

    assert (report.added, report.removed) == (0, 2)
    assert not SegmentMembership.objects.filter(exited_at__isnull=True).exists()


def test_the_mode_must_be_given_explicitly(vip):
    with pytest.raises(TypeError):
        segment_static_upload(vip, ["u-a"], now=T0)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="mode must be 'replace' or 'append'"):
        segment_static_upload(vip, ["u-a"], mode="merge", now=T0)  # type: ignore[arg-type]

    assert not SegmentMembership.objects.exists()


def test_a_dynamic_segment_takes_no_upload(make_segment, identify):
    identify("u-a", at=T0)
    segment = make_segment("pro", {"trait": "plan", "op": "eq", "value": "pro"})

    with pytest.raises(ValueError, match="members come from its condition"):
        segment_static_upload(segment, ["u-a"], mode="append", now=T0)


def test_an_upload_records_today_s_size(vip):
    segment_static_upload(vip, ["u-a", "u-b"], mode="append", now=T0)
    segment_static_upload(vip, ["u-c"], mode="replace", now=T1)

    assert list(SegmentSnapshot.objects.values_list("segment__slug", "day", "member_count")) == [
        ("vip", T0.date(), 1)
    ]


def test_refreshes_leave_static_segments_alone(vip):
    segment_static_upload(vip, ["u-a"], mode="append", now=T0)

    segments_refresh_all(now=T1)

    assert stays(vip) == [("u-a", T0, None)]


def test_a_dynamic_segment_can_build_on_a_static_one(vip, identify, make_segment):
    a = identify("u-a", at=T0, plan="pro")
    identify("u-b", at=T0, plan="pro")
    segment_static_upload(vip, ["u-a", "u-c"], mode="append", now=T0)
    pro_vips = make_segment(
        "pro-vips", {"all": [{"segment": "vip"}, {"trait": "plan", "op": "eq", "value": "pro"}]}
    )

    assert segment_refresh(pro_vips, now=T1).entered_ids == [a]


# --- the CSV parser --------------------------------------------------------------------------


def csv_file(content: str | bytes) -> io.BytesIO:
    return io.BytesIO(content.encode() if isinstance(content, str) else content)


def test_a_csv_with_an_external_id_column_gives_its_ids_in_order_once():
    content = "email,External_ID,plan\na@x.com,u-1,pro\nb@x.com, u-2 ,\nc@x.com,u-1,pro\n"

    assert parse_external_ids_csv(csv_file(content)) == ["u-1", "u-2"]


def test_a_single_column_of_ids_needs_no_header():
    content = "u-1\r\nu-2,\r\n\r\n u-3 \n"

    assert parse_external_ids_csv(csv_file(content)) == ["u-1", "u-2", "u-3"]


def test_a_single_external_id_header_is_not_an_id():
    assert parse_external_ids_csv(csv_file("external_id\nu-1\n")) == ["u-1"]


def test_a_byte_order_mark_and_quoted_ids_are_understood():
    content = b'\xef\xbb\xbf"external_id","name"\n"u,1","Ann"\n'

    assert parse_external_ids_csv(csv_file(content)) == ["u,1"]


def test_an_uploaded_file_is_read_from_its_start():
    upload = SimpleUploadedFile("ids.csv", b"u-1\nu-2\n", content_type="text/csv")
    upload.read()  # as a form's validation might have

    assert parse_external_ids_csv(upload) == ["u-1", "u-2"]


def test_a_text_file_is_read_too():
    assert parse_external_ids_csv(io.StringIO("u-1\nu-2\n")) == ["u-1", "u-2"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("email,plan\na@x.com,pro\n", "line 1: the header has no 'external_id' column"),
        ("u-1\nu-2,u-3\n", "line 2: 2 columns; a file without an 'external_id' header"),
        ("external_id,plan\nu-1,pro\n,free\n", "line 3: no external_id"),
        (b"u-1\nu-\xff2\n", "line 2: not UTF-8 text"),
        ("u-1\n" + "x" * 201 + "\n", "line 2: longer than 200 characters"),
        ("u-1\nu-2\x00\n", "line 2: contains a NUL character"),
        ('u-1\n"u-2\n', "line 2: not valid CSV: unexpected end of data"),
        ("", "the file has no external ids"),
        ("external_id\n\n", "the file has no external ids"),
    ],
)
def test_malformed_csv_is_refused_naming_the_line(content, expected):
    with pytest.raises(ValueError) as refused:
        parse_external_ids_csv(csv_file(content))

    assert expected in str(refused.value)


def test_every_bad_line_is_named_up_to_a_limit():
    content = "u-1\n" + "".join(f"u-{n},extra\n" for n in range(2, 40))

    with pytest.raises(ValueError) as refused:
        parse_external_ids_csv(csv_file(content))

    message = str(refused.value)
    assert message.startswith("line 2: 2 columns")
    assert "line 11: 2 columns" in message and "line 12" not in message
    assert message.endswith("(stopped reading)")
