from django.db import migrations, models

# The stamp is the writing transaction's id, which only grows; a reader learns
# which stamps may still be invisible to it from its snapshot
# (services.touch_watermark).
CREATE = """
CREATE OR REPLACE FUNCTION tenure_customer_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.touched_seq := pg_current_xact_id()::text::bigint;
  RETURN NEW;
END
$$;
CREATE TRIGGER customer_touch_insert BEFORE INSERT ON customers_customer
  FOR EACH ROW EXECUTE FUNCTION tenure_customer_touch();
CREATE TRIGGER customer_touch_traits BEFORE UPDATE OF traits ON customers_customer
  FOR EACH ROW WHEN (OLD.traits IS DISTINCT FROM NEW.traits)
  EXECUTE FUNCTION tenure_customer_touch();
"""
DROP = """
DROP TRIGGER IF EXISTS customer_touch_traits ON customers_customer;
DROP TRIGGER IF EXISTS customer_touch_insert ON customers_customer;
DROP FUNCTION IF EXISTS tenure_customer_touch();
"""


class Migration(migrations.Migration):
    """Customer.touched_seq: when a customer last changed in a way segment
    conditions see, for incremental segment refreshes. Inserts and trait
    changes are stamped by the database itself (triggers), so every writer
    stamps, not only `ingest`; `ingest` stamps the customers it stores events
    for."""

    dependencies = [
        ("customers", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="customer",
            name="touched_seq",
            field=models.BigIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AddIndex(
            model_name="customer",
            index=models.Index(fields=["touched_seq"], name="customer_touched"),
        ),
        # A list: RunSQL runs each item as it is, never splitting the $$ body.
        migrations.RunSQL([CREATE], [DROP]),
    ]
