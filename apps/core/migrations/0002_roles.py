from django.db import migrations

from apps.core.roles import MARKETER, VIEWER, roles_ensure


def create_roles(apps, schema_editor):
    roles_ensure(apps)


def drop_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=(MARKETER, VIEWER)).delete()


class Migration(migrations.Migration):
    """The Marketer and Viewer groups (apps/core/roles.py says what each may do),
    with the real permission codenames of the apps' models."""

    dependencies = [
        ("core", "0001_iso_timestamptz"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("customers", "0002_customer_touched_seq"),
        ("segments", "0002_incremental_refresh"),
        ("messaging", "0001_initial"),
        ("journeys", "0002_trigger_fires"),
        ("tracking", "0001_initial"),
        ("surveys", "0001_initial"),
    ]
    operations = [migrations.RunPython(create_roles, drop_roles)]
