"""The per-provider token bucket, and deliveries held to it."""

import time
from datetime import timedelta

from apps.messaging import ratelimit
from apps.messaging.delivery import messages_deliver
from apps.messaging.models import Message

from .conftest import T0


def test_a_bucket_grants_its_burst_then_one_token_per_interval():
    first = ratelimit.take("test-bucket", rate=5, want=20)

    assert first.granted == 5
    assert 0 < first.wait <= 0.2
    time.sleep(0.25)
    assert ratelimit.take("test-bucket", rate=5, want=20).granted == 1


def test_the_file_bucket_of_the_embedded_default_limits_the_same_way(tmp_path):
    buckets = ratelimit.FileBuckets(tmp_path)

    first = buckets.take("sendgrid", rate=10, want=25)
    second = buckets.take("sendgrid", rate=10, want=25)
    time.sleep(0.35)
    third = buckets.take("sendgrid", rate=10, want=25)

    assert (first.granted, second.granted) == (10, 0)
    assert 0 < second.wait <= 0.1
    assert 3 <= third.granted <= 4


def test_a_rate_of_zero_is_no_limit():
    assert ratelimit.take("console", rate=0, want=10_000) == ratelimit.Grant(10_000, 0.0)


def test_a_burst_of_deliveries_is_held_to_the_providers_rate(fake_provider, make_message, settings):
    settings.SENDGRID_RATE_PER_SECOND = 20
    ids = [make_message().pk for _ in range(30)]

    started = time.monotonic()
    report = messages_deliver(ids, now=T0)
    elapsed = time.monotonic() - started

    assert report.sent == 30
    arrivals = sorted(r.at for r in fake_provider.sendgrid)
    # 20 at once (a second's worth), then one every 50 ms.
    assert arrivals[-1] - arrivals[0] >= 0.45
    assert elapsed >= 0.45
    within_first_second = [t for t in arrivals if t - arrivals[0] < 1.0]
    assert len(within_first_second) <= 20 + 20


def test_a_long_wait_for_the_rate_limit_hands_the_messages_back(
    fake_provider, make_message, settings
):
    settings.SENDGRID_RATE_PER_SECOND = 0.2  # one token every five seconds
    messages = [make_message(published_at=T0) for _ in range(3)]

    report = messages_deliver([m.pk for m in messages], now=T0)

    assert (report.sent, report.handed_back) == (1, 2)
    waiting = Message.objects.filter(status=Message.Status.QUEUED)
    assert waiting.count() == 2
    for message in waiting:
        assert message.attempts == 0
        assert message.published_at is None
        assert T0 + timedelta(seconds=4) <= message.send_after <= T0 + timedelta(seconds=6)
    assert len(fake_provider.sendgrid) == 1
