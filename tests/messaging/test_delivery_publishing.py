"""Publishing delivery: on commit, in chunks, never on rollback; and the
sweeper, which publishes what is due and was never (or long ago) published."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from apps.messaging.delivery import delivery_enqueue, messages_sweep, publish
from apps.messaging.models import Message

from .conftest import T0

S = Message.Status


def test_sends_in_one_transaction_are_published_together_in_chunks_on_commit(
    make_message, published, settings, django_capture_on_commit_callbacks
):
    settings.DELIVERY_BATCH_SIZE = 2
    with django_capture_on_commit_callbacks(execute=True):
        ids = []
        for _ in range(5):
            message = make_message()
            delivery_enqueue([message.pk])
            ids.append(message.pk)
        assert published == []  # nothing before the commit

    assert published == [ids[0:2], ids[2:4], ids[4:5]]
    assert published.etas == []  # no countdown: waits are rows, not broker ETAs
    stamps = set(Message.objects.filter(pk__in=ids).values_list("published_at", flat=True))
    assert len(stamps) == 1 and None not in stamps


def test_only_messages_still_waiting_and_unpublished_are_published(
    make_message, published, django_capture_on_commit_callbacks
):
    fresh = make_message()
    already = make_message(published_at=T0)
    cancelled = make_message(status=S.SUPPRESSED)
    not_due = make_message(status=S.DEFERRED, send_after=timezone.now() + timedelta(hours=1))

    with django_capture_on_commit_callbacks(execute=True):
        delivery_enqueue([fresh.pk, already.pk, cancelled.pk, not_due.pk, 999_999])

    assert published == [[fresh.pk]]


@pytest.mark.django_db(transaction=True)
def test_a_transaction_that_rolls_back_publishes_nothing(make_message, make_customer, published):
    customer = make_customer()

    with pytest.raises(RuntimeError), transaction.atomic():
        message = make_message(customer=customer)
        delivery_enqueue([message.pk])
        raise RuntimeError("the send's transaction fails after the enqueue")

    assert published == []
    assert not Message.objects.exists()

    with transaction.atomic():
        kept = make_message(customer=customer)
        delivery_enqueue([kept.pk])

    # The next transaction publishes its own message only.
    assert published == [[kept.pk]]


@pytest.mark.django_db(transaction=True)
def test_a_savepoint_rolled_back_inside_a_committed_transaction_publishes_only_what_stayed(
    make_message, make_customer, published
):
    customer = make_customer()
    with transaction.atomic():
        first = make_message(customer=customer)
        delivery_enqueue([first.pk])
        try:
            with transaction.atomic():
                dropped = make_message(customer=customer)
                delivery_enqueue([dropped.pk])
                raise RuntimeError("this one send fails")
        except RuntimeError:
            pass
        last = make_message(customer=customer)
        delivery_enqueue([last.pk])

    assert published == [[first.pk, last.pk]]
    assert not Message.objects.filter(idempotency_key=dropped.idempotency_key).exists()


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_the_enqueue_publishes_at_once(make_message, published):
    message = make_message()

    delivery_enqueue([message.pk])

    assert published == [[message.pk]]
    assert Message.objects.get(pk=message.pk).published_at is not None


def test_the_sweeper_publishes_due_messages_that_were_never_published(
    make_message, published, settings
):
    settings.DELIVERY_REPUBLISH_AFTER_S = 900
    now = T0 + timedelta(hours=1)
    never = make_message()
    retry_due = make_message(send_after=now - timedelta(seconds=1), attempts=1)
    deferred_due = make_message(status=S.DEFERRED, send_after=now)
    lost = make_message(published_at=now - timedelta(minutes=20))  # its task never ran
    make_message(send_after=now + timedelta(seconds=30))  # a retry not due yet
    make_message(status=S.DEFERRED, send_after=now + timedelta(hours=3))
    make_message(published_at=now - timedelta(minutes=1))  # just published
    make_message(status=S.SENT, sent_at=T0)

    report = messages_sweep(now=now)

    expected = sorted([never.pk, retry_due.pk, deferred_due.pk, lost.pk])
    assert report.published == 4
    assert published == [expected]
    assert published.etas == []
    assert set(Message.objects.filter(pk__in=expected).values_list("published_at", flat=True)) == {
        now
    }
    assert messages_sweep(now=now + timedelta(seconds=5)).published == 0


def test_the_sweeper_publishes_in_chunks(make_message, published, settings):
    settings.DELIVERY_BATCH_SIZE = 3
    ids = [make_message().pk for _ in range(7)]

    messages_sweep(now=T0)

    assert published == [ids[0:3], ids[3:6], ids[6:7]]


def test_beat_runs_the_sweeper_every_few_seconds_on_the_default_queue(settings):
    from apps.messaging.tasks import deliver_messages, sweep_deliveries
    from config.celery import app, system_schedule

    entry = system_schedule()["sweep-deliveries"]

    assert entry["task"] == sweep_deliveries.name
    assert entry["schedule"] == settings.DELIVERY_SWEEP_INTERVAL_S == 5
    # Not behind a delivery backlog; a tick not run in time is dropped.
    assert entry["options"]["queue"] == "default"
    assert entry["options"]["expires"] <= 2 * settings.DELIVERY_SWEEP_INTERVAL_S
    assert app.amqp.router.route({}, deliver_messages.name)["queue"].name == "delivery"


@pytest.mark.django_db(transaction=True)
def test_the_publish_stamp_skips_a_row_a_worker_holds_instead_of_waiting_for_it(
    make_message, published
):
    """A sweep waiting on a worker's row while the worker waited on one of the
    sweep's was a deadlock (tests/chaos at 2,000 messages)."""
    import psycopg
    from django.db import connection

    held, free = make_message(), make_message()
    s = connection.settings_dict
    dsn = f"host={s['HOST']} port={s['PORT'] or 5432} dbname={s['NAME']} user={s['USER']}"
    table = Message._meta.db_table
    with psycopg.connect(dsn) as worker, connection.cursor() as cursor:
        # A worker mid-statement holds the row (claiming it or recording its send).
        worker.execute(f"SELECT id FROM {table} WHERE id = %s FOR UPDATE", [held.pk])  # noqa: S608
        cursor.execute("SET lock_timeout = '2s'")
        try:
            count = publish([held.pk, free.pk], now=T0)
        finally:
            cursor.execute("RESET lock_timeout")
            worker.rollback()

    assert count == 2 and published == [[held.pk, free.pk]]  # the task claims what it can
    stamps = dict(Message.objects.values_list("pk", "published_at"))
    assert stamps == {held.pk: None, free.pk: T0}  # unstamped: published again if need be
