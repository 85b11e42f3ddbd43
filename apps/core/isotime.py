"""ISO-8601 times, recognised the same way in Python (`ISO_TIME_RE`) and in
PostgreSQL (`tenure_iso_timestamptz`, migrations core 0001 and 0003).

Used to compare JSON traits holding times in SQL without ever raising on a
malformed value: a string that does not match (or names a day that does not
exist, like 2026-02-30) is simply not a time. Offsets stop at ±15:59, where
PostgreSQL's do (Python reads up to ±23:59): past that the cast raised, and
one customer's trait failed every segment refresh comparing that trait.
"""

import re

ISO_TIME = (
    r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]+)?)?"
    r"(Z|[+-](0[0-9]|1[0-5]):[0-5][0-9])?)?$"
)
ISO_TIME_RE = re.compile(ISO_TIME)

# The text as timestamptz, or NULL (STABLE: a time without an offset is read
# in the session's zone, UTC for Django's connections). CASE fixes the order of
# evaluation, so the casts only ever see text the pattern has vetted; the day
# is checked against the month's length before the final cast.
PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION tenure_iso_timestamptz(value text) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN value ~ '{ISO_TIME}' THEN
    CASE WHEN substr(value, 9, 2)::int <= extract(day from
        make_date(substr(value, 1, 4)::int, substr(value, 6, 2)::int, 1)
        + interval '1 month' - interval '1 day')
      THEN value::timestamptz
    END
  END
$$;
"""
