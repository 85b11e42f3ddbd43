from django.db import migrations

from apps.core.isotime import PG_FUNCTION


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PG_FUNCTION)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP FUNCTION IF EXISTS tenure_iso_timestamptz(text)")


class Migration(migrations.Migration):
    """tenure_iso_timestamptz(text): an ISO-8601 string as timestamptz, or NULL
    (never an error), for conditions on time traits. SQLite needs no function."""

    dependencies = []
    operations = [migrations.RunPython(create, drop)]
