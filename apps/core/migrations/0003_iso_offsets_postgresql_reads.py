from django.db import migrations

from apps.core.isotime import PG_FUNCTION


class Migration(migrations.Migration):
    """tenure_iso_timestamptz again, with ISO_TIME's offsets bounded at ±15:59
    (PostgreSQL's own bound): a text with a larger offset is NULL, not an error.
    Nothing that was a time before changes."""

    dependencies = [("core", "0002_roles")]
    operations = [migrations.RunSQL([PG_FUNCTION], migrations.RunSQL.noop)]
