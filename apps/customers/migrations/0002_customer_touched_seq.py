from django.db import migrations, models

# PostgreSQL: the stamp is the writing transaction's id, which only grows; a
# reader learns which stamps may still be invisible to it from its snapshot
# (services.touch_watermark).
PG_CREATE = """
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
PG_DROP = """
DROP TRIGGER IF EXISTS customer_touch_traits ON customers_customer;
DROP TRIGGER IF EXISTS customer_touch_insert ON customers_customer;
DROP FUNCTION IF EXISTS tenure_customer_touch();
"""
# SQLite: one writer at a time, so a counter is enough: writers stamp with the
# current epoch, and a segment refresh (a writer too) moves the epoch on.
SQLITE_CREATE = [
    "CREATE TABLE customers_touch_epoch "
    "(id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL)",
    "INSERT INTO customers_touch_epoch (id, value) VALUES (1, 1)",
    "CREATE TRIGGER customer_touch_insert AFTER INSERT ON customers_customer BEGIN "
    "UPDATE customers_customer SET touched_seq = (SELECT value FROM customers_touch_epoch) "
    "WHERE id = NEW.id; END",
    "CREATE TRIGGER customer_touch_traits AFTER UPDATE OF traits ON customers_customer "
    "WHEN OLD.traits IS NOT NEW.traits BEGIN "
    "UPDATE customers_customer SET touched_seq = (SELECT value FROM customers_touch_epoch) "
    "WHERE id = NEW.id; END",
]
SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS customer_touch_traits",
    "DROP TRIGGER IF EXISTS customer_touch_insert",
    "DROP TABLE IF EXISTS customers_touch_epoch",
]


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PG_CREATE)
    else:
        for statement in SQLITE_CREATE:
            schema_editor.execute(statement)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PG_DROP)
    else:
        for statement in SQLITE_DROP:
            schema_editor.execute(statement)


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
        migrations.RunPython(create, drop),
    ]
