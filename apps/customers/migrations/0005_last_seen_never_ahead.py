from datetime import timedelta

from django.db import migrations
from django.db.models import F
from django.utils import timezone


def repair(apps, schema_editor):
    """`last_seen_at` only moves forward, so a time far ahead (year 9999 from
    a client, which older versions took) held it there for good, and every
    "seen within" condition with it. Such customers were last seen, at the
    latest, when they were last written."""
    Customer = apps.get_model("customers", "Customer")
    ahead = timezone.now() + timedelta(days=1)
    Customer.objects.filter(last_seen_at__gt=ahead).update(last_seen_at=F("updated_at"))


class Migration(migrations.Migration):
    dependencies = [("customers", "0004_json_read_and_written_at_any_depth")]
    operations = [migrations.RunPython(repair, migrations.RunPython.noop)]
