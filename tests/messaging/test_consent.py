from datetime import UTC, datetime, timedelta

import pytest

from apps.customers.demo import demo_seed
from apps.customers.models import Customer
from apps.customers.schemas import IdentifyIn
from apps.customers.services import ingest
from apps.messaging.consent import (
    Suppress,
    Unsubscribe,
    consent_record,
    consent_state,
    suppression_add,
    suppression_lift,
    suppressions_add,
    unsubscribe,
    unsubscribe_many,
)
from apps.messaging.listeners import consent_traits_apply
from apps.messaging.models import Category, Channel, ConsentRecord, Message, Suppression
from apps.messaging.selectors import active_suppression, consent_summary
from tests.messaging.sending import grant, make_customer, revoke

pytestmark = pytest.mark.django_db

S = Message.Status
T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def waiting(customer, channel=Channel.EMAIL, *, key: str, category=Category.MARKETING, **fields):
    fields.setdefault("status", S.QUEUED)
    return Message.objects.create(
        customer=customer,
        channel=channel,
        category=category,
        idempotency_key=key,
        to_address=customer.email if channel == Channel.EMAIL else customer.phone,
        created_at=T0,
        **fields,
    )


# --- the ledger ------------------------------------------------------------------


def test_every_change_is_appended_and_the_latest_decides():
    ada = make_customer()

    assert consent_state(ada, Channel.SMS) is None
    grant(ada, Channel.SMS, at=T0)
    revoke(ada, Channel.SMS, at=T0 + DAY)
    assert consent_state(ada, Channel.SMS) is False
    grant(ada, Channel.SMS, at=T0 + 2 * DAY)
    assert consent_state(ada, Channel.SMS) is True
    assert ConsentRecord.objects.filter(customer=ada).count() == 3


def test_the_latest_is_by_when_the_customer_acted_not_when_we_heard():
    ada = make_customer()
    revoke(ada, Channel.SMS, at=T0 + DAY)
    # Heard later, happened earlier (a backfilled import): does not win.
    grant(ada, Channel.SMS, at=T0, source=ConsentRecord.Source.IMPORT)

    assert consent_state(ada, Channel.SMS) is False


def test_records_at_the_same_moment_are_decided_by_ledger_order():
    ada = make_customer()
    grant(ada, Channel.EMAIL, at=T0)
    revoke(ada, Channel.EMAIL, at=T0)

    assert consent_state(ada, Channel.EMAIL) is False


def test_a_topic_follows_the_channel_until_it_has_records_of_its_own():
    ada = make_customer()
    grant(ada, Channel.EMAIL, at=T0)
    revoke(ada, Channel.EMAIL, at=T0 + DAY, topic="tips")

    assert consent_state(ada, Channel.EMAIL, "product-news") is True
    assert consent_state(ada, Channel.EMAIL, "tips") is False
    assert consent_state(ada, Channel.EMAIL) is True


def test_a_channel_revocation_overrides_every_topic_until_the_channel_is_granted_again():
    ada = make_customer()
    grant(ada, Channel.EMAIL, at=T0, topic="tips")
    revoke(ada, Channel.EMAIL, at=T0 + DAY)
    grant(ada, Channel.EMAIL, at=T0 + 2 * DAY, topic="product-news")

    assert consent_state(ada, Channel.EMAIL, "tips") is False
    assert consent_state(ada, Channel.EMAIL, "product-news") is False
    grant(ada, Channel.EMAIL, at=T0 + 3 * DAY)
    assert consent_state(ada, Channel.EMAIL, "tips") is True
    assert consent_summary(ada) == {
        (Channel.EMAIL, ""): True,
        (Channel.EMAIL, "tips"): True,
        (Channel.EMAIL, "product-news"): True,
        (Channel.SMS, ""): None,
    }


def test_a_record_keeps_when_where_from_and_what_was_shown():
    ada = make_customer()

    record = consent_record(
        customer=ada,
        channel=Channel.SMS,
        status=ConsentRecord.Status.GRANTED,
        source=ConsentRecord.Source.PREFERENCES,
        recorded_at=T0,
        wording="Text me offers (up to 4 a month). Reply STOP to stop.",
        ip_address="203.0.113.9",
        user_agent="Mozilla/5.0",
    )

    record.refresh_from_db()
    assert (record.source, record.recorded_at, record.ip_address, record.user_agent) == (
        "preferences",
        T0,
        "203.0.113.9",
        "Mozilla/5.0",
    )
    assert record.wording.startswith("Text me offers")


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"channel": "fax"}, "channel: must be one of email, sms, got 'fax'"),
        ({"status": "maybe"}, "status: must be one of granted, revoked, got 'maybe'"),
        ({"source": "rumour"}, "source: must be one of"),
        ({"topic": "tips"}, "topic: topics are for email only"),
        ({"channel": "email", "topic": "Big News!"}, "topic: must be a slug"),
        ({"ip_address": "999.1.1.1"}, "ip: '999.1.1.1' is not an IP address"),
        ({"recorded_at": datetime(2026, 5, 1)}, "recorded_at: must be an aware datetime"),
    ],
)
def test_a_bad_record_is_refused_naming_the_field(fields, problem):
    ada = make_customer()
    values = {
        "channel": Channel.SMS,
        "status": ConsentRecord.Status.GRANTED,
        "source": ConsentRecord.Source.API,
        "recorded_at": T0,
        **fields,
    }

    with pytest.raises(ValueError, match=problem.replace("(", r"\(")):
        consent_record(customer=ada, **values)
    assert not ConsentRecord.objects.exists()


def test_revoking_cancels_the_waiting_messages_it_covers():
    ada = make_customer(email="ada@example.com", phone="+14155550123")
    tips = waiting(ada, key="tips", topic="tips")
    news = waiting(ada, key="news", topic="news", status=S.DEFERRED)
    receipt = waiting(ada, key="receipt", category=Category.TRANSACTIONAL)
    sms = waiting(ada, Channel.SMS, key="sms", category=Category.TRANSACTIONAL)
    sent = waiting(ada, key="sent", topic="tips", status=S.SENT)

    revoke(ada, Channel.EMAIL, at=T0, topic="tips")
    assert [m.status for m in _fresh(tips, news)] == [S.SUPPRESSED, S.DEFERRED]
    revoke(ada, Channel.EMAIL, at=T0)
    revoke(ada, Channel.SMS, at=T0)

    tips, news, receipt, sms, sent = _fresh(tips, news, receipt, sms, sent)
    assert (tips.reason, news.reason) == (
        "cancelled: consent revoked (email topic tips)",
        "cancelled: consent revoked (email)",
    )
    assert (receipt.status, sent.status) == (S.QUEUED, S.SENT)  # transactional email; already sent
    assert (sms.status, sms.reason) == (S.SUPPRESSED, "cancelled: consent revoked (sms)")


def _fresh(*messages):
    for m in messages:
        m.refresh_from_db()
    return messages


# --- the suppression list --------------------------------------------------------


def test_suppressing_normalises_the_address_and_is_idempotent():
    first = suppression_add(
        channel=Channel.EMAIL,
        address=" Ada@Example.COM ",
        reason="bounce",
        source="sendgrid",
        now=T0,
    )
    again = suppression_add(
        channel=Channel.EMAIL,
        address="ada@example.com",
        reason="complaint",
        source="x",
        now=T0 + DAY,
    )
    phone = suppression_add(
        channel=Channel.SMS, address="+1 (415) 555-0123", reason="sms_opt_out", source="t", now=T0
    )

    assert again.pk == first.pk and again.reason == "bounce"  # the first reason stands
    assert (first.address, phone.address) == ("ada@example.com", "+14155550123")
    assert Suppression.objects.count() == 2


@pytest.mark.parametrize(
    ("channel", "address", "reason", "problem"),
    [
        (Channel.EMAIL, "nobody", "bounce", "'nobody' is not an email address"),
        (Channel.SMS, "555-0123", "manual", "'555-0123' is not an E.164 phone number"),
        (Channel.EMAIL, "a@example.com", "bored", "reason: must be one of"),
    ],
)
def test_a_bad_suppression_is_refused_naming_the_problem(channel, address, reason, problem):
    with pytest.raises(ValueError, match=problem):
        suppression_add(channel=channel, address=address, reason=reason, source="t", now=T0)


def test_lifting_keeps_the_history_and_the_address_can_be_suppressed_again():
    suppression_add(
        channel=Channel.EMAIL, address="ada@example.com", reason="manual", source="t", now=T0
    )

    lifted = suppression_lift(
        channel=Channel.EMAIL, address="ADA@example.com", now=T0 + DAY, by="marketer"
    )
    assert (lifted.lifted_at, lifted.lifted_by) == (T0 + DAY, "marketer")
    assert active_suppression(Channel.EMAIL, "ada@example.com") is None
    assert suppression_lift(channel=Channel.EMAIL, address="ada@example.com", now=T0) is None
    suppression_add(
        channel=Channel.EMAIL,
        address="ada@example.com",
        reason="bounce",
        source="t",
        now=T0 + 2 * DAY,
    )
    assert Suppression.objects.filter(address="ada@example.com").count() == 2
    assert active_suppression(Channel.EMAIL, "ada@example.com").reason == "bounce"


def test_a_bounce_cancels_every_waiting_message_to_the_address():
    ada = make_customer(email="ada@example.com")
    promo = waiting(ada, key="promo")
    receipt = waiting(ada, key="receipt", category=Category.TRANSACTIONAL, status=S.DEFERRED)

    suppression_add(
        channel=Channel.EMAIL, address="ada@example.com", reason="bounce", source="t", now=T0
    )

    promo, receipt = _fresh(promo, receipt)
    assert (promo.status, promo.reason) == (S.SUPPRESSED, "cancelled: bounced")
    assert (receipt.status, receipt.reason) == (S.SUPPRESSED, "cancelled: bounced")


# --- unsubscribing ---------------------------------------------------------------


def test_unsubscribing_from_a_message_suppresses_revokes_and_cancels_waiting_marketing():
    ada = make_customer(email="ada@example.com", phone="+14155550123")
    clicked = waiting(ada, key="newsletter", status=S.SENT)
    queued = waiting(ada, key="promo")
    deferred = waiting(ada, key="winback", status=S.DEFERRED, send_after=T0 + DAY)
    receipt = waiting(ada, key="receipt", category=Category.TRANSACTIONAL)
    sms = waiting(ada, Channel.SMS, key="sms")

    result = unsubscribe(message=clicked, now=T0, ip_address="198.51.100.7", user_agent="Mail/1")

    assert (result.suppression.address, result.suppression.reason) == (
        "ada@example.com",
        "unsubscribe",
    )
    assert result.cancelled == 2
    assert (result.consent.status, result.consent.source, result.consent.ip_address) == (
        "revoked",
        "unsubscribe",
        "198.51.100.7",
    )
    queued, deferred, receipt, sms, clicked = _fresh(queued, deferred, receipt, sms, clicked)
    assert [(m.status, m.reason) for m in (queued, deferred)] == [
        (S.SUPPRESSED, "cancelled: unsubscribed")
    ] * 2
    assert (receipt.status, sms.status, clicked.status) == (S.QUEUED, S.QUEUED, S.SENT)
    assert consent_state(ada, Channel.EMAIL) is False


def test_unsubscribing_twice_changes_nothing_more():
    ada = make_customer(email="ada@example.com")

    unsubscribe(customer=ada, channel=Channel.EMAIL, now=T0)
    again = unsubscribe(customer=ada, channel=Channel.EMAIL, now=T0 + DAY)

    assert again.consent is None and again.cancelled == 0
    assert Suppression.objects.count() == 1
    assert ConsentRecord.objects.count() == 1


def test_suppressing_many_at_once_keeps_rows_in_force_and_cancels_what_each_reason_blocks():
    bounced, unsubscribed = (
        make_customer(email="b@example.com"),
        make_customer(email="u@example.com"),
    )
    suppression_add(
        channel=Channel.EMAIL, address="b@example.com", reason="manual", source="admin", now=T0
    )
    receipt = waiting(unsubscribed, key="receipt", category=Category.TRANSACTIONAL)
    news = waiting(unsubscribed, key="news")
    reminder = waiting(bounced, key="reminder", category=Category.TRANSACTIONAL)

    suppressions_add(
        [
            Suppress(Channel.EMAIL, "b@example.com", "bounce", "sendgrid bounced"),
            Suppress(Channel.EMAIL, "u@example.com", "unsubscribe", "provider"),
        ],
        now=T0 + DAY,
    )

    # The row already in force stands (its reason first); the new one is added.
    assert active_suppression(Channel.EMAIL, "b@example.com").reason == "manual"
    assert active_suppression(Channel.EMAIL, "u@example.com").reason == "unsubscribe"
    assert Message.objects.get(pk=reminder.pk).status == S.SUPPRESSED  # "manual" blocks all
    assert Message.objects.get(pk=news.pk).status == S.SUPPRESSED
    assert Message.objects.get(pk=receipt.pk).status == S.QUEUED  # receipts still go


def test_unsubscribing_many_at_once_revokes_each_customer_once():
    ada, bob = make_customer(email="ada@example.com"), make_customer(email="bob@example.com")
    revoke(bob, Channel.EMAIL, at=T0)
    news = waiting(ada, key="news")

    items = [
        Unsubscribe(ada.pk, Channel.EMAIL, "ada@example.com", "Unsubscribed through sendgrid."),
        Unsubscribe(ada.pk, Channel.EMAIL, "ada@example.com", "Unsubscribed again."),
        Unsubscribe(bob.pk, Channel.EMAIL, "bob@example.com"),
    ]
    unsubscribe_many(items, source=ConsentRecord.Source.PROVIDER, now=T0 + DAY)

    assert consent_state(ada, Channel.EMAIL) is False
    revoked = ConsentRecord.objects.filter(status=ConsentRecord.Status.REVOKED)
    # Ada's one new record; Bob had revoked already: nothing new for him.
    assert list(revoked.filter(customer=ada).values_list("source", "wording")) == [
        ("provider", "Unsubscribed through sendgrid.")
    ]
    assert revoked.filter(customer=bob).count() == 1
    assert {s.address for s in Suppression.objects.filter(reason="unsubscribe")} == {
        "ada@example.com",
        "bob@example.com",
    }
    assert Message.objects.get(pk=news.pk).status == S.SUPPRESSED


def test_unsubscribing_needs_an_address():
    nobody = make_customer()

    with pytest.raises(ValueError, match="the customer has no sms address to unsubscribe"):
        unsubscribe(customer=nobody, channel=Channel.SMS, now=T0)


# --- consent traits on identify --------------------------------------------------


def identify(user_id: str, at: datetime, source: str = "api", **traits):
    ingest([IdentifyIn(userId=user_id, traits=traits, timestamp=at)], received_at=at, source=source)
    return Customer.objects.get(external_id=user_id)


def records(customer, channel=Channel.SMS):
    return list(
        ConsentRecord.objects.filter(customer=customer, channel=channel)
        .order_by("recorded_at", "id")
        .values_list("status", "source", "wording")
    )


def test_consent_traits_on_identify_write_the_ledger_when_they_change(
    django_capture_on_commit_callbacks,
):
    # Each call commits (and tells the listeners) on its own, as over the API.
    with django_capture_on_commit_callbacks(execute=True):
        ada = identify("ada", T0, phone="+14155550123", sms_opt_in=True, email_opt_in="no")
    with django_capture_on_commit_callbacks(execute=True):
        identify("ada", T0 + DAY, sms_opt_in=True, plan="pro")  # unchanged: nothing
    with django_capture_on_commit_callbacks(execute=True):
        identify("ada", T0 + 2 * DAY, sms_opt_in=False)

    assert records(ada) == [
        ("granted", "identify", "identify trait sms_opt_in=true"),
        ("revoked", "identify", "identify trait sms_opt_in=false"),
    ]
    assert records(ada, Channel.EMAIL) == [
        ("revoked", "identify", "identify trait email_opt_in=false")
    ]
    assert consent_state(ada, Channel.SMS) is False


def test_a_trait_the_product_keeps_sending_never_overrides_a_later_opt_out(
    django_capture_on_commit_callbacks,
):
    with django_capture_on_commit_callbacks(execute=True):
        ada = identify("ada", T0, sms_opt_in=True)
    revoke(ada, Channel.SMS, at=T0 + DAY, source=ConsentRecord.Source.SMS_KEYWORD)  # replied STOP

    with django_capture_on_commit_callbacks(execute=True):
        identify("ada", T0 + 2 * DAY, sms_opt_in=True, plan="growth")

    assert consent_state(ada, Channel.SMS) is False
    assert len(records(ada)) == 2


def test_imports_and_the_demo_record_their_own_source(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        imported = identify("imp", T0, source="import", sms_opt_in="true")
        seeded = identify("demo", T0, source="demo", sms_opt_in=1)

    assert records(imported)[0][:2] == ("granted", "import")
    assert records(seeded)[0][:2] == ("granted", "demo")


def test_a_consent_trait_that_says_neither_yes_nor_no_is_ignored():
    ada = identify("ada", T0, sms_opt_in="maybe", email_opt_in=None)

    assert consent_traits_apply([ada.pk], now=T0, source="api") == 0
    assert not ConsentRecord.objects.exists()


def test_the_demo_gives_most_customers_with_a_phone_an_sms_opt_in(
    django_capture_on_commit_callbacks,
):
    with django_capture_on_commit_callbacks(execute=True):
        demo_seed(customers=60, seed=7, now=T0)

    with_phone = Customer.objects.exclude(phone="")
    opted_in = {c.pk for c in with_phone if c.traits.get("sms_opt_in") is True}
    granted = set(
        ConsentRecord.objects.filter(
            channel=Channel.SMS, status="granted", source="demo"
        ).values_list("customer_id", flat=True)
    )
    assert with_phone.count() >= 30
    assert len(opted_in) > 0.6 * with_phone.count()
    assert granted == opted_in
    assert not Customer.objects.filter(phone="", traits__has_key="sms_opt_in").exists()
