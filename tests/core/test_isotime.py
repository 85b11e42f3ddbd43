"""Which texts are times in conditions (apps/core/isotime.py): the same in
Python and SQL, and never an error in SQL, whatever a trait holds."""

import pytest
from django.db import connection

from apps.core.isotime import ISO_TIME_RE

# Python reads offsets up to ±23:59, PostgreSQL only up to ±15:59: past that,
# the cast raised, and one customer's trait failed every refresh (and every
# write to a customer when a trait index used the function).
NOT_TIMES = ["2026-01-01T00:00:00+16:00", "2026-01-01T00:00-23:59", "2026-02-30"]
TIMES = ["2026-01-01T00:00:00+15:59", "2026-01-01T00:00:00-14:00", "2026-01-01"]


@pytest.mark.parametrize("text", NOT_TIMES)
def test_offsets_postgresql_cannot_read_are_not_times(text):
    assert (ISO_TIME_RE.match(text) is not None) == (text == "2026-02-30")  # the day: SQL's check


@pytest.mark.parametrize("text", TIMES)
def test_offsets_up_to_fifteen_fifty_nine_are_times(text):
    assert ISO_TIME_RE.match(text)


@pytest.mark.django_db
def test_the_sql_functions_answer_null_and_never_raise_for_what_is_not_a_time():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tenure_iso_timestamptz(t) IS NULL, tenure_iso_utc(t) IS NULL "
            "FROM unnest(%s::text[]) AS t",
            [NOT_TIMES + TIMES],
        )
        rows = cursor.fetchall()

    assert rows == [(True, True)] * len(NOT_TIMES) + [(False, False)] * len(TIMES)
