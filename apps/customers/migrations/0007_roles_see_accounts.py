from django.db import migrations

from apps.core.roles import roles_ensure


def roles_see_the_new_models(apps, schema_editor):
    # The roles view every model of ours (apps/core/roles.py): Account and
    # AccountMembership too, so the account pages and Customer 360's accounts
    # show to Viewers and Marketers.
    roles_ensure(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("customers", "0006_identities_and_accounts"),
        ("core", "0002_roles"),
    ]

    operations = [migrations.RunPython(roles_see_the_new_models, migrations.RunPython.noop)]
