"""A broker that lost its data (Redis restarted without persistence) took the
delivery tasks with it: the sweeper notices at its next run and publishes the
messages still waiting at once, not DELIVERY_REPUBLISH_AFTER_S later."""

from datetime import timedelta

from apps.messaging.delivery import messages_sweep
from apps.messaging.models import Message
from tests.brokers import broker_at

from .conftest import T0

S = Message.Status


def test_messages_published_to_a_broker_that_lost_its_data_are_republished_at_once(
    make_message, published, own_redis, settings
):
    settings.DELIVERY_REPUBLISH_AFTER_S = 900
    now = T0 + timedelta(hours=1)
    with broker_at(own_redis.url):
        assert messages_sweep(now=now).published == 0  # the first look: nothing known lost
        waiting = make_message(published_at=now - timedelta(seconds=30))
        make_message(status=S.SENT, sent_at=T0, published_at=T0)
        assert messages_sweep(now=now).published == 0  # published a moment ago

        own_redis.kill()  # Redis restarts without persistence: its tasks are gone
        own_redis.start()

        report = messages_sweep(now=now + timedelta(seconds=5))
        again = messages_sweep(now=now + timedelta(seconds=10))

    assert report.published == 1
    assert published == [[waiting.pk]]
    assert again.published == 0  # the broker kept what it was given since


def test_a_broker_that_kept_its_data_changes_nothing(make_message, published, own_redis):
    now = T0 + timedelta(hours=1)
    with broker_at(own_redis.url):
        messages_sweep(now=now)
        make_message(published_at=now - timedelta(seconds=30))

        assert messages_sweep(now=now + timedelta(seconds=5)).published == 0
    assert published == []
