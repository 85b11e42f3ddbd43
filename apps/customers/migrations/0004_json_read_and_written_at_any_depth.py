from django.db import migrations, models

import apps.core.jsonsafe
import apps.customers.validation


class Migration(migrations.Migration):
    """Python-side only (the JSON encoder, decoder and validators): nothing
    changes in the database, so the migration changes the state only."""

    dependencies = [
        ("customers", "0003_eventstat_name_last_covering"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="customer",
                    name="traits",
                    field=models.JSONField(
                        blank=True,
                        decoder=apps.core.jsonsafe.DeepJSONDecoder,
                        default=dict,
                        encoder=apps.core.jsonsafe.DeepJSONEncoder,
                        validators=[apps.customers.validation.validate_traits],
                    ),
                ),
                migrations.AlterField(
                    model_name="event",
                    name="properties",
                    field=models.JSONField(
                        blank=True,
                        decoder=apps.core.jsonsafe.DeepJSONDecoder,
                        default=dict,
                        encoder=apps.core.jsonsafe.DeepJSONEncoder,
                    ),
                ),
            ],
            database_operations=[],
        ),
    ]
