from django.db import migrations

from apps.core.isotime import PG_FUNCTION


class Migration(migrations.Migration):
    """tenure_iso_timestamptz(text): an ISO-8601 string as timestamptz, or NULL
    (never an error), for conditions on time traits."""

    dependencies = []
    operations = [
        # A list: RunSQL runs each item as it is, never splitting the $$ body.
        migrations.RunSQL([PG_FUNCTION], ["DROP FUNCTION IF EXISTS tenure_iso_timestamptz(text)"]),
    ]
