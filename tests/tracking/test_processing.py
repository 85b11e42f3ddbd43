import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse

from apps.customers import hooks as ingest_hooks
from apps.customers.models import Event
from apps.messaging import transitions
from apps.messaging.models import Message
from apps.segments.conditions import customer_matches
from apps.tracking import selectors
from apps.tracking.models import Engagement, InboundSms, ProviderEvent
from apps.tracking.services.hits import open_record
from apps.tracking.services.processing import tracking_process

from .conftest import T0, events_named, inbound_params, sg_event

OPENED_RECENTLY = {"event": "email_opened", "op": "count_gte", "value": 1, "within_days": 7}
BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"


def test_human_opens_feed_the_condition_language_and_machine_opens_do_not(make_message, process):
    human = make_message(status=Message.Status.DELIVERED, delivered_at=T0)
    scanned = make_message(status=Message.Status.DELIVERED, delivered_at=T0)
    at = T0 + timedelta(minutes=10)
    open_record(message_id=human.pk, now=at, method="GET", user_agent=BROWSER)
    open_record(message_id=scanned.pk, now=at, method="HEAD", user_agent=BROWSER)

    process(at + timedelta(seconds=5))

    now = at + timedelta(minutes=1)
    assert customer_matches(OPENED_RECENTLY, human.customer_id, now=now)
    assert not customer_matches(OPENED_RECENTLY, scanned.customer_id, now=now)
    # A goal "opened since enrolled" is met only for the person.
    since = {"event": "email_opened", "op": "since_enrolled"}
    assert customer_matches(since, human.customer_id, now=now, enrolled_at=T0)
    assert not customer_matches(since, scanned.customer_id, now=now, enrolled_at=T0)


def test_engagement_events_reach_ingest_listeners_as_live_data(
    make_message, process, django_capture_on_commit_callbacks
):
    heard = []

    def listener(*, event_ids, changed_customer_ids, now, source):
        names = Event.objects.filter(id__in=event_ids).values_list("name", flat=True)
        heard.append((source, sorted(names)))

    message = make_message()
    at = T0 + timedelta(minutes=5)
    open_record(message_id=message.pk, now=at, method="GET", user_agent=BROWSER)
    ingest_hooks.on_ingest(listener)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            process()
    finally:
        ingest_hooks.remove_listener(listener)

    # "api", not a backfill: event-triggered journeys and goals hear it.
    assert heard == [("api", ["email_opened"])]


def test_an_event_that_cannot_be_processed_is_marked_and_does_not_hold_up_the_others(
    post_sendgrid, make_message, make_customer, process
):
    # A customer stored by an older version without an external id: its
    # event cannot be recorded (ingest refuses an empty userId).
    broken = make_message(customer=make_customer(external_id=""))
    fine = make_message()

    post_sendgrid([sg_event("delivered", broken), sg_event("delivered", fine)])
    result = process()

    assert result.failed == 1
    bad = ProviderEvent.objects.get(message__isnull=True, error__startswith="processing failed")
    assert bad.processed_at is not None
    fine.refresh_from_db()
    assert fine.status == Message.Status.DELIVERED
    assert len(events_named("email_delivered")) == 1
    assert process().provider_events == 0  # nothing left to retry for ever


def test_a_nul_character_in_an_event_is_dropped_not_a_server_error(
    post_sendgrid, make_message, process
):
    message = make_message()
    raw = (
        b'[{"event": "click", "email": "a@example.com", "timestamp": 1772463660, '
        b'"sg_event_id": "nul-1", "url": "https://example.com/\\u0000x", '
        b'"tenure_message_id": "' + str(message.pk).encode() + b'"}]'
    )

    response = post_sendgrid(raw=raw)
    process()

    assert response.status_code == 200
    assert ProviderEvent.objects.get().payload["url"] == "https://example.com/x"


def test_selectors_count_human_and_machine_apart(make_message, process):
    message = make_message(status=Message.Status.DELIVERED, delivered_at=T0)
    at = T0 + timedelta(minutes=10)
    open_record(message_id=message.pk, now=at, method="GET", user_agent=BROWSER)
    open_record(message_id=message.pk, now=at, method="GET", user_agent=BROWSER)
    open_record(message_id=message.pk, now=at, method="HEAD", user_agent=BROWSER)
    process()

    counts = selectors.engagement_counts(journey="onboarding")
    assert counts == {"open": {"human": 2, "machine": 1}}
    assert selectors.engaged_messages("open", journey="onboarding") == 1
    assert selectors.engaged_messages("open", journey="onboarding", machine=True) == 1
    assert selectors.engagement_counts(journey="other") == {}


@pytest.mark.django_db(transaction=True)
def test_two_processors_at_once_process_every_event_exactly_once(make_message):
    messages = [make_message() for _ in range(40)]
    for i, message in enumerate(messages):
        for j in range(5):
            open_record(
                message_id=message.pk,
                now=T0 + timedelta(minutes=10, seconds=i * 5 + j),
                method="GET",
                user_agent=BROWSER,
            )
    results, errors = [], []

    def run():
        try:
            results.append(tracking_process(now=T0 + timedelta(hours=1), batch_size=17))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert sum(r.hits for r in results) == 200
    assert not Engagement.objects.filter(processed_at__isnull=True).exists()
    assert Event.objects.filter(name="email_opened").count() == 40
    assert Message.objects.filter(status=Message.Status.OPENED).count() == 40


# --- admin --------------------------------------------------------------------


def test_the_admin_lists_provider_events_engagements_and_inbound_sms(
    admin_client, post_sendgrid, post_twilio, make_message, make_customer, process
):
    message = make_message()
    post_sendgrid([sg_event("delivered", message), sg_event("bounce", None)])
    customer = make_customer()
    post_twilio("inbound", inbound_params(customer.phone, "please stop texting me"))
    process()

    for name in ("providerevent", "engagement", "inboundsms", "trackedlink"):
        response = admin_client.get(reverse(f"admin:tracking_{name}_changelist"))
        assert response.status_code == 200, name
    unmatched = admin_client.get(
        reverse("admin:tracking_providerevent_changelist"), {"match": "unmatched"}
    )
    assert [e.kind for e in unmatched.context["cl"].result_list] == ["bounce"]
    review = admin_client.get(reverse("admin:tracking_inboundsms_changelist"), {"review": "todo"})
    assert [i.body for i in review.context["cl"].result_list] == ["please stop texting me"]
    event = ProviderEvent.objects.get(kind="delivered")
    page = admin_client.get(reverse("admin:tracking_providerevent_change", args=[event.pk]))
    assert page.status_code == 200 and b"sg_event_id" in page.content


def test_the_admin_opts_a_flagged_number_out_and_marks_it_reviewed(
    admin_client, post_twilio, make_customer
):
    customer = make_customer()
    post_twilio("inbound", inbound_params(customer.phone, "please stop texting me"))
    inbound = InboundSms.objects.get()

    response = admin_client.post(
        reverse("admin:tracking_inboundsms_changelist"),
        {"action": "opt_out_numbers", "_selected_action": [inbound.pk]},
        follow=True,
    )

    assert response.status_code == 200
    inbound.refresh_from_db()
    assert inbound.reviewed_at is not None and inbound.reviewed_by == "admin"
    from apps.messaging.models import ConsentRecord, Suppression

    assert Suppression.objects.get().address == customer.phone
    assert ConsentRecord.objects.get().source == ConsentRecord.Source.ADMIN


def test_a_run_out_of_time_leaves_the_rest_to_the_next_run(make_message):
    message = make_message()
    open_record(message_id=message.pk, now=T0, method="GET", user_agent=BROWSER)

    spent = tracking_process(now=T0 + timedelta(hours=1), budget_s=0)
    later = tracking_process(now=T0 + timedelta(hours=1), budget_s=60)

    assert (spent.hits, later.hits) == (0, 1)


def test_a_run_goes_through_every_batch_in_id_order(make_message, post_sendgrid):
    messages = [make_message() for _ in range(3)]
    for message in messages:
        open_record(message_id=message.pk, now=T0, method="GET", user_agent=BROWSER)
    post_sendgrid([sg_event(kind, m) for m in messages for kind in ("delivered", "open")])

    result = tracking_process(now=T0 + timedelta(hours=1), batch_size=2)

    assert (result.provider_events, result.hits) == (6, 3)
    assert not ProviderEvent.objects.filter(processed_at__isnull=True).exists()
    assert not Engagement.objects.filter(processed_at__isnull=True).exists()
    assert len(events_named("email_delivered")) == 3
    assert len(events_named("email_opened")) == 3
    assert tracking_process(now=T0 + timedelta(hours=1), batch_size=2).provider_events == 0


def test_a_batch_move_is_dropped_when_another_writer_moved_the_message_first(make_message):
    """messages_advance, tracking's one writer of message statuses: a
    compare-and-set on the status read; the timestamps are filled anyway."""
    message = make_message(status=Message.Status.OPENED, opened_at=None)
    at = T0 + timedelta(minutes=5)

    transitions.messages_advance(
        [transitions.Advance(message.pk, old=Message.Status.SENT, new=Message.Status.DELIVERED,
                             delivered_at=at, opened_at=at)],
        now=at,
    )  # fmt: skip

    message.refresh_from_db()
    assert message.status == Message.Status.OPENED
    assert (message.delivered_at, message.opened_at) == (at, at)


def test_a_batch_move_the_transition_table_cannot_reach_is_refused(make_message):
    message = make_message(status=Message.Status.OPENED)

    with pytest.raises(ValueError, match="no move from opened to delivered"):
        transitions.messages_advance(
            [transitions.Advance(message.pk, old=Message.Status.OPENED,
                                 new=Message.Status.DELIVERED)],
            now=T0,
        )  # fmt: skip

    message.refresh_from_db()
    assert message.status == Message.Status.OPENED
