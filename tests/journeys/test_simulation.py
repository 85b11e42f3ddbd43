"""The backtest: the last N days of recorded events replayed through the real
engine and policies on a virtual clock, counted, and rolled back.

The main dataset is small enough to work out by hand (see `history`); each
expectation below is that hand computation, not a copy of an output."""

import json
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO

import pytest
import time_machine
from django.core.management import CommandError, call_command

from apps.customers.models import Customer
from apps.journeys.models import Enrollment, EnrollmentStep, Journey, JourneyVersion
from apps.journeys.services import journey_import
from apps.journeys.simulation import SimulationError, journey_simulate
from apps.messaging.consent import suppression_add
from apps.messaging.models import Category, Channel, Message, Suppression
from apps.messaging.providers import locmem
from apps.segments.models import Segment, SegmentMembership

from .conftest import BASE_FILE, T0

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)
NOON = T0.replace(hour=12)  # T0 is Monday 2026-03-02 09:00 UTC; London is on UTC then
NOW = T0 + 10 * DAY  # the window is (T0, T0 + 10 days]


def D(days: float) -> datetime:
    """Noon UTC (and London) `days` after T0's day."""
    return NOON + timedelta(days=days)


@pytest.fixture(autouse=True)
def in_memory_providers(settings):
    settings.EMAIL_PROVIDER = "locmem"
    settings.SMS_PROVIDER = "locmem"
    locmem.outbox.clear()
    yield
    locmem.outbox.clear()


def person(name: str, *, phone: bool = True) -> Customer:
    return Customer.objects.create(
        external_id=name,
        email=f"{name}@example.com",
        phone=f"+1415555{ord(name[0]):04d}" if phone else "",
        timezone="Europe/London",
        traits={"first_name": name.title()},
    )


@pytest.fixture
def history(make_journey, sendable, track, sms_consent):
    """The onboarding journey of the shared fixtures (welcome email, wait 2
    days, branch on `activated since_enrolled`, SMS nudge if not; goal:
    activated), live since before the window, and eight customers:

    a  signs up day 1, activates day 2       → converted on day 2 (goal)
    b  signs up day 3; three marketing emails
       really sent in the days before         → welcome skipped (cap 3/7d),
                                                nudge day 5: no SMS consent
    c  signs up day 4, SMS consent            → welcome, nudge sent day 6
    d  signs up day 9                          → welcome, still waiting
    e  signed up before the window            → never enters
    f  email unsubscribed, SMS consent,
       signs up day 2                          → welcome suppressed, nudge sent
    h  no phone, signs up twice on day 7       → one entry; nudge: no phone
    i  signs up day 5, activates day 8         → nudge day 7 (no consent);
                                                 the activation comes too late
    """
    journey = make_journey(at=T0 - 5 * DAY)
    people = {name: person(name, phone=name != "h") for name in "abcdefhi"}
    for name, day in (("a", 1), ("b", 3), ("c", 4), ("d", 9), ("e", -1), ("f", 2), ("i", 5)):
        track(name, "signed_up", at=D(day))
    track("h", "signed_up", at=D(7))
    track("h", "signed_up", at=D(7) + timedelta(hours=1))
    track("a", "activated", at=D(2))
    track("i", "activated", at=D(8))
    sms_consent(people["c"])
    sms_consent(people["f"])
    suppression_add(
        channel=Channel.EMAIL,
        address="f@example.com",
        reason=Suppression.Reason.UNSUBSCRIBE,
        source="test",
        now=T0 - DAY,
    )
    for n, at in enumerate((D(1), D(2), D(2) + timedelta(hours=1))):
        Message.objects.create(
            customer=people["b"],
            channel=Channel.EMAIL,
            category=Category.MARKETING,
            idempotency_key=f"earlier:{n}",
            to_address="b@example.com",
            status=Message.Status.SENT,
            created_at=at,
            sent_at=at,
        )
    return journey


EXPECTED = {
    "entered": 7,
    "customers": 7,
    "held_out": 0,
    "converted": 1,
    "exited": 0,
    "completed": 5,
    "failed": 0,
    "active": 1,
    "messages": {"email": 5, "sms": 2},
    "deferred": {},
    "suppressed": {
        "no consent: sms": 2,
        "suppressed: unsubscribed": 1,
        "no address: the customer has no phone number": 1,
    },
    "skipped": {"skipped: frequency cap 3/7d": 1},
    "nodes": {
        "welcome": {"entered": 7, "completed": 7},
        "wait1": {"entered": 7, "completed": 5},
        "check": {"entered": 5, "completed": 5},
        "nudge": {"entered": 5, "completed": 5},
        "done": {"entered": 5, "completed": 5},
    },
}


def summary(data: dict) -> dict:
    keep = {key: data[key] for key in EXPECTED if key != "nodes"}
    keep["nodes"] = {
        node: {"entered": counts["entered"], "completed": counts["completed"]}
        for node, counts in data["nodes"].items()
    }
    return keep


def test_the_backtest_matches_the_hand_computed_history(history):
    result = journey_simulate(history, days=10, now=NOW)

    assert summary(result.as_dict()) == EXPECTED
    assert result.nodes["welcome"]["outcomes"] == {"sent": 5, "skipped": 1, "suppressed": 1}
    assert result.nodes["check"]["outcomes"] == {"no": 5}
    assert result.nodes["nudge"]["outcomes"] == {"suppressed": 3, "sent": 2}
    assert (result.version, result.days) == ("v1", 10)
    assert (result.start, result.end) == (T0, NOW)


def test_the_backtest_keeps_nothing_and_sends_nothing(history, django_capture_on_commit_callbacks):
    messages_before = list(Message.objects.values_list("pk", "status").order_by("pk"))

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        result = journey_simulate(history, days=10, now=NOW)

    assert result.messages == {"email": 5, "sms": 2}
    # No delivery was ever to be published, and no provider was called.
    assert callbacks == []
    assert locmem.outbox == []
    # The world is as it was: no enrollment, step, message or scratch journey.
    assert list(Message.objects.values_list("pk", "status").order_by("pk")) == messages_before
    assert not Enrollment.objects.exists()
    assert not EnrollmentStep.objects.exists()
    assert list(Journey.objects.values_list("slug", flat=True)) == ["onboarding"]
    assert JourneyVersion.objects.count() == 1


def test_conditions_see_only_the_events_before_the_virtual_time(history):
    """a's activation (day 2) comes after its welcome (day 1): were the goal
    judged with all of history, a would convert before any email. i's
    (day 8) comes after its branch (day 7): it gets the nudge."""
    result = journey_simulate(history, days=10, now=NOW)

    assert result.nodes["welcome"]["entered"] == 7
    assert result.converted == 1
    assert result.nodes["nudge"]["entered"] == 5


def test_the_same_backtest_twice_gives_the_same_answer(history):
    first = journey_simulate(history, days=10, now=NOW).as_dict()
    second = journey_simulate(history, days=10, now=NOW).as_dict()

    for result in (first, second):
        result.pop("elapsed_s")
    assert first == second


def test_a_shorter_window_sees_only_its_own_days(history):
    """The last 3 days (day 7 09:00 to day 10 09:00): h signs up on day 7 and
    d on day 9; i entered on day 5, before the window, so it is not there."""
    result = journey_simulate(history, days=3, now=NOW)

    assert (result.entered, result.completed, result.active) == (2, 1, 1)
    assert result.messages == {"email": 2, "sms": 0}
    assert result.suppressed == {"no address: the customer has no phone number": 1}


def test_the_draft_is_backtested_with_draft(history):
    draft = {key: value for key, value in BASE_FILE.items() if key != "goal"}
    journey_import(draft, now=NOW)  # a new draft, not published: no goal any more
    history.refresh_from_db()

    live = journey_simulate(history, days=10, now=NOW)
    drafted = journey_simulate(history, days=10, now=NOW, draft=True)

    assert (live.version, live.converted) == ("v1", 1)
    # Without the goal, a stays in: it waits out its two days, has activated, and exits.
    assert (drafted.version, drafted.converted, drafted.completed) == ("draft", 0, 6)
    assert drafted.nodes["check"]["outcomes"] == {"no": 5, "yes": 1}


def test_a_journey_never_published_needs_draft(make_journey, sendable):
    journey = make_journey(publish=False)

    with pytest.raises(SimulationError, match=r"never been published.*--draft"):
        journey_simulate(journey, days=5, now=NOW)
    assert journey_simulate(journey, days=5, now=NOW, draft=True).version == "draft"


@pytest.mark.parametrize("days", [0, -1, 367, 2.5])
def test_the_window_must_be_whole_days_within_a_year(history, days):
    with pytest.raises(SimulationError, match="days: must be a whole number from 1 to 366"):
        journey_simulate(history, days=days, now=NOW)


# --- other triggers ----------------------------------------------------------------------


def journey_of(make_journey, trigger: dict, nodes: list[dict], **fields) -> Journey:
    return make_journey(
        {
            "slug": "backtested",
            "name": "Backtested",
            "trigger": trigger,
            "start": nodes[0]["id"],
            "nodes": nodes,
            **fields,
        },
        at=T0 - 40 * DAY,
    )


WELCOME_THEN_EXIT = [
    {"id": "hello", "type": "email", "template": "welcome", "next": "bye"},
    {"id": "bye", "type": "exit"},
]


def test_a_segment_trigger_enrolls_those_who_entered_during_the_window(
    make_journey, sendable, track
):
    """The segment is re-evaluated every hour of virtual time: p was in it
    before the window (never enters), q cancels on day 3 and enters then,
    r's cancellation falls out of the 30 days on day 5 (an exit, not an entry)."""
    Segment.objects.create(
        slug="churned",
        name="Churned",
        definition={"event": "subscription_canceled", "op": "since", "days": 30},
    )
    journey = journey_of(
        make_journey, {"type": "segment_entered", "segment": "churned"}, WELCOME_THEN_EXIT
    )
    for name in "pqr":
        person(name)
    track("p", "subscription_canceled", at=T0 - 2 * DAY)
    track("q", "subscription_canceled", at=D(3))
    track("r", "subscription_canceled", at=T0 - 25 * DAY)

    result = journey_simulate(journey, days=10, now=NOW)

    assert (result.entered, result.completed) == (1, 1)
    assert result.messages == {"email": 1, "sms": 0}
    assert any("re-evaluated, was checked every 1 hour" in note for note in result.notes)


def test_a_segment_exit_trigger_enrolls_those_who_left(make_journey, sendable, track):
    Segment.objects.create(
        slug="churned",
        name="Churned",
        definition={"event": "subscription_canceled", "op": "since", "days": 30},
    )
    journey = journey_of(
        make_journey, {"type": "segment_exited", "segment": "churned"}, WELCOME_THEN_EXIT
    )
    for name in "pr":
        person(name)
    track("p", "subscription_canceled", at=T0 - 2 * DAY)
    track("r", "subscription_canceled", at=T0 - 25 * DAY)

    result = journey_simulate(journey, days=10, now=NOW)

    assert result.entered == 1  # r, when its cancellation is 30 days old


def test_a_static_segment_trigger_replays_its_recorded_uploads(make_journey, sendable):
    """n was uploaded before the window (already in: never enters); m on day 2
    (enters then); o on day 3 and taken off on day 4 (entered, still counts)."""
    vip = Segment.objects.create(slug="vip", name="VIP", kind=Segment.Kind.STATIC)
    journey = journey_of(
        make_journey, {"type": "segment_entered", "segment": "vip"}, WELCOME_THEN_EXIT
    )
    for name, entered, exited in (
        ("n", T0 - 3 * DAY, None), ("m", D(2), None), ("o", D(3), D(4)),
    ):  # fmt: skip
        SegmentMembership.objects.create(
            segment=vip, customer=person(name), entered_at=entered, exited_at=exited
        )

    result = journey_simulate(journey, days=10, now=NOW)

    assert (result.entered, result.messages["email"]) == (2, 2)
    assert any("replayed from its recorded uploads" in note for note in result.notes)


def test_a_date_trait_trigger_fires_from_todays_trait(make_journey, sendable):
    """renewal_at -7 days at 10:00 London: s renews on March 10 (fires March 3,
    in the window); t on March 25 (fires after it); u on March 5 (fired
    before it)."""
    journey = journey_of(
        make_journey,
        {"type": "date_trait", "trait": "renewal_at", "offset_days": -7, "at": "10:00"},
        WELCOME_THEN_EXIT,
    )
    for name, renewal in (("s", "2026-03-10"), ("t", "2026-03-25"), ("u", "2026-03-05")):
        customer = person(name)
        customer.traits = {**customer.traits, "renewal_at": f"{renewal}T08:00:00Z"}
        customer.save()

    result = journey_simulate(journey, days=10, now=NOW)

    assert (result.entered, result.messages["email"]) == (1, 1)
    assert any("today's 'renewal_at'" in note for note in result.notes)


def test_a_schedule_trigger_enrolls_the_segment_at_each_slot(make_journey, sendable):
    """Every Monday at 10:00 UTC: two slots in the window (March 2 and 9);
    the second enrolls nobody new (re-entry never)."""
    Segment.objects.create(
        slug="everyone", name="Everyone", definition={"trait": "first_name", "op": "exists"}
    )
    journey = journey_of(
        make_journey,
        {"type": "schedule", "cron": "0 10 * * 1", "segment": "everyone"},
        WELCOME_THEN_EXIT,
    )
    for name in "vw":
        person(name)

    result = journey_simulate(journey, days=10, now=NOW)

    assert (result.entered, result.messages["email"]) == (2, 2)


def test_waiting_for_an_event_follows_yes_when_it_comes_in_time(make_journey, sendable, track):
    """v activates a day after signing up (within the 3 days): yes. w
    activates after 5 days: the timeout answers no first."""
    journey = journey_of(
        make_journey,
        {"type": "event", "event": "signed_up"},
        [
            {"id": "await", "type": "wait_for_event", "event": "activated",
             "timeout": {"days": 3}, "yes": "hello", "no": "bye"},
            *WELCOME_THEN_EXIT,
        ],
    )  # fmt: skip
    for name in "vw":
        person(name)
        track(name, "signed_up", at=D(1))
    track("v", "activated", at=D(2))
    track("w", "activated", at=D(6))

    result = journey_simulate(journey, days=10, now=NOW)

    assert result.nodes["await"]["outcomes"] == {"yes": 1, "no": 1}
    assert result.messages["email"] == 1


# --- webhooks -----------------------------------------------------------------------------


@pytest.fixture
def receiver():
    """A loopback server that records every request it gets."""
    requests: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            requests.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.requests = requests
    server.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield server
    server.shutdown()
    server.server_close()


def test_a_webhook_node_is_never_called_and_the_journey_goes_on(
    make_journey, sendable, track, receiver, settings
):
    settings.JOURNEY_WEBHOOK_SECRET = "s3cret"
    settings.JOURNEY_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    journey = journey_of(
        make_journey,
        {"type": "event", "event": "signed_up"},
        [{"id": "crm", "type": "webhook", "url": receiver.url, "next": "hello"},
         *WELCOME_THEN_EXIT],
    )  # fmt: skip
    person("x")
    track("x", "signed_up", at=D(1))

    result = journey_simulate(journey, days=10, now=NOW)

    assert receiver.requests == []
    assert result.webhooks_not_called == 1
    assert result.nodes["hello"]["entered"] == 1
    assert (result.completed, result.messages["email"]) == (1, 1)


# --- the command -----------------------------------------------------------------------------


def run(*args: str) -> str:
    out = StringIO()
    call_command("simulate_journey", *args, "--no-progress", stdout=out, stderr=StringIO())
    return out.getvalue()


def test_the_command_prints_the_result_as_json(history):
    data = json.loads(run("onboarding", "--days", "10", "--now", NOW.isoformat(), "--json"))

    assert summary(data) == EXPECTED
    assert data["journey"] == "onboarding"
    assert any("Traits are taken as they are today" in note for note in data["notes"])


def test_the_command_prints_a_readable_table(history):
    out = run("onboarding", "--days", "10", "--now", NOW.isoformat())

    assert "Backtest of 'Onboarding' (onboarding, v1) over the last 10 days" in out
    lines = [line.split() for line in out.splitlines()]
    assert ["entered", "7"] in lines
    assert ["converted", "(goal", "met)", "1"] in lines
    assert "skipped: frequency cap 3/7d" in out
    assert any(line[:4] == ["nudge", "sms", "5", "5"] for line in lines)
    assert "Nothing was sent or kept." in out


def test_the_command_names_what_is_wrong(history):
    with pytest.raises(CommandError, match="no journey 'onbording' \\(there are: onboarding\\)"):
        run("onbording", "--days", "3")
    with pytest.raises(CommandError, match="days: must be a whole number from 1 to 366"):
        run("onboarding", "--days", "0")
    with pytest.raises(CommandError, match="--now: 'yesterday' is not an ISO-8601 time"):
        run("onboarding", "--days", "3", "--now", "yesterday")


# --- the admin page ---------------------------------------------------------------------------


def backtest_url(journey) -> str:
    from django.urls import reverse

    return reverse("admin:journeys_journey_backtest", args=[journey.pk])


def test_the_journey_page_links_to_its_backtest(history, admin_client):
    from django.urls import reverse

    page = admin_client.get(reverse("admin:journeys_journey_change", args=[history.pk]))

    assert page.status_code == 200
    assert f'href="{backtest_url(history)}"'.encode() in page.content
    assert b"Publish" in page.content  # the journey's own page, with the button added


def test_the_admin_backtest_shows_the_form_then_the_result(history, admin_client):
    form = admin_client.get(backtest_url(history))
    assert form.status_code == 200
    assert b"Run the backtest" in form.content
    assert form.context["result"] is None

    with time_machine.travel(NOW, tick=False):
        page = admin_client.get(backtest_url(history), {"days": "10", "segment_step": "60"})

    assert page.status_code == 200
    result = page.context["result"]
    assert summary(result.as_dict()) == EXPECTED
    html = page.content.decode()
    assert "skipped: frequency cap 3/7d" in html
    assert "<code>nudge</code>" in html
    assert "Traits are taken as they are today" in html
    assert not Enrollment.objects.exists()


def test_the_admin_backtest_says_what_is_wrong(make_journey, sendable, admin_client):
    journey = make_journey(publish=False)

    page = admin_client.get(backtest_url(journey), {"days": "10", "segment_step": "60"})
    assert "never been published" in page.content.decode()
    page = admin_client.get(backtest_url(journey), {"days": "0", "segment_step": "60"})
    assert page.context["form"].errors["days"]
    assert page.context["result"] is None
