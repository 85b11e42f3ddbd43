import importlib

from django.db import migrations

# The function as 0002 defines it, built from apps/core/isotime.py's ISO_TIME,
# whose offsets now stop at ±15:59.
PG_FUNCTION = importlib.import_module(
    "apps.segments.migrations.0002_incremental_refresh"
).PG_FUNCTION


class Migration(migrations.Migration):
    """tenure_iso_utc again, with offsets past ±15:59 NULL instead of an error.
    The function is IMMUTABLE and indexed: replacing it keeps every index entry
    right, since a text it now answers NULL for could never be indexed (the
    cast raised, and so did the write)."""

    dependencies = [
        ("segments", "0004_membership_customer_index_closed_only"),
        ("core", "0003_iso_offsets_postgresql_reads"),
    ]
    operations = [migrations.RunSQL([PG_FUNCTION], migrations.RunSQL.noop)]
