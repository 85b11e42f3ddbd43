"""The four lifecycle journeys a newcomer gets from `make run` (onboarding,
activation, renewal reminders, win-back): valid files, loaded once, and live
on the demo data, enrolling and sending."""

import json
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
import time_machine
from django.core.management import CommandError, call_command

from apps.customers.schemas import IdentifyIn, TrackIn
from apps.customers.services import ingest
from apps.journeys.engine import engine_tick, enrollments_advance
from apps.journeys.graph import parse_journey
from apps.journeys.models import Enrollment, Journey
from apps.journeys.services import journey_pause
from apps.journeys.triggers import date_triggers_check, events_received
from apps.messaging.delivery import messages_deliver
from apps.messaging.models import Message, Template
from apps.messaging.providers import locmem

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
JOURNEYS = ROOT / "fixtures" / "journeys"
TEMPLATES = ROOT / "fixtures" / "templates.json"
SEGMENTS = ROOT / "fixtures" / "segments.json"
SURVEYS = ROOT / "fixtures" / "surveys.json"  # from issue 6 on
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
# The lifecycle journeys; the folder may hold more (the NPS follow-ups of issue 6).
SLUGS = {
    "onboarding", "activation", "renewal-reminder-30d", "renewal-reminder-7d",
    "renewal-reminder-1d", "win-back",
}  # fmt: skip


def files() -> dict[str, dict]:
    return {
        path.stem: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(JOURNEYS.glob("*.json"))
    }


def quietly(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def load_content() -> None:
    """What `make run` loads before the journeys: templates, surveys (once
    they exist), segments."""
    quietly("load_templates", str(TEMPLATES), "--only-new")
    if SURVEYS.exists():
        quietly("load_surveys", str(SURVEYS), "--only-new")
    quietly("load_segments", str(SEGMENTS), "--only-new")


@pytest.fixture
def content():
    load_content()


def test_the_journey_files_are_valid_against_the_demo_templates_and_segments(content):
    found = files()

    assert set(found) >= SLUGS
    for stem, data in found.items():
        definition = parse_journey(data)  # templates and segments are checked too
        assert definition.slug == stem
        assert definition.description
        positions = [(node.ui.x, node.ui.y) for node in definition.nodes]
        assert all(node.ui is not None for node in definition.nodes), stem
        assert len(set(positions)) == len(positions), f"{stem}: nodes drawn on each other"


def test_the_lifecycle_journeys_use_demo_templates_of_both_channels(content):
    used = {
        node["template"]
        for slug, data in files().items()
        if slug in SLUGS
        for node in data["nodes"]
        if "template" in node
    }

    assert used <= set(Template.objects.values_list("slug", flat=True))
    assert len(used) == 15
    channels = set(Template.objects.filter(slug__in=used).values_list("channel", flat=True))
    assert channels == {"email", "sms"}


def test_the_journeys_follow_the_lifecycle_they_are_named_for():
    found = files()

    assert found["onboarding"]["trigger"] == {"type": "event", "event": "signed_up"}
    assert found["onboarding"]["goal"] == {"event": "activated", "op": "since_enrolled"}
    assert found["activation"]["trigger"] == {"type": "event", "event": "activated"}
    for days in (30, 7, 1):
        trigger = found[f"renewal-reminder-{days}d"]["trigger"]
        assert trigger == {
            "type": "date_trait", "trait": "renewal_at", "offset_days": -days, "at": "10:00",
        }  # fmt: skip
    assert found["win-back"]["trigger"] == {"type": "segment_entered", "segment": "churned-90d"}
    wait = next(n for n in found["win-back"]["nodes"] if n["type"] == "wait_for_event")
    assert (wait["event"], wait["timeout"]) == ("subscription_started", {"days": 7})


def test_load_journeys_publishes_them_and_a_rerun_keeps_what_a_marketer_changed(content):
    count = len(files())
    out = quietly("load_journeys", str(JOURNEYS), "--only-new")

    assert out == f"{count} journey(s) created and published, 0 updated, 0 kept as they were\n"
    journeys = {j.slug: j for j in Journey.objects.select_related("live_version")}
    assert set(journeys) == set(files())
    assert {(j.status, j.live_version.number) for j in journeys.values()} == {("live", 1)}

    journey_pause(journeys["win-back"], now=NOW)
    Journey.objects.filter(slug="onboarding").update(name="Onboarding (edited)")
    out = quietly("load_journeys", str(JOURNEYS), "--only-new")

    assert out == f"0 journey(s) created and published, 0 updated, {count} kept as they were\n"
    assert Journey.objects.get(slug="win-back").status == Journey.Status.PAUSED
    assert Journey.objects.get(slug="onboarding").name == "Onboarding (edited)"
    assert Journey.objects.get(slug="onboarding").versions.count() == 1


def test_one_invalid_file_imports_nothing(content, tmp_path):
    for stem, data in files().items():
        (tmp_path / f"{stem}.json").write_text(json.dumps(data), encoding="utf-8")
    broken = files()["win-back"]
    broken["nodes"][0]["template"] = "winback-ofer"
    (tmp_path / "win-back.json").write_text(json.dumps(broken), encoding="utf-8")

    with pytest.raises(CommandError) as caught:
        quietly("load_journeys", str(tmp_path))

    assert str(caught.value) == (
        "win-back.json: nothing imported:\n  nodes[offer].template: unknown template 'winback-ofer'"
    )
    assert not Journey.objects.exists()


def test_load_journeys_names_a_missing_path(tmp_path):
    with pytest.raises(CommandError, match="nowhere: no such file or folder"):
        quietly("load_journeys", str(tmp_path / "nowhere"))
    with pytest.raises(CommandError, match=r"no \.json files in this folder"):
        quietly("load_journeys", str(tmp_path))


# --- live on the demo data ------------------------------------------------------------------


@pytest.fixture
def outbox(settings):
    settings.EMAIL_PROVIDER = "locmem"
    settings.SMS_PROVIDER = "locmem"
    locmem.outbox.clear()
    yield locmem.outbox
    locmem.outbox.clear()


@pytest.fixture
def run_engine(django_capture_on_commit_callbacks):
    """run_engine(now): what beat and the workers do: a tick, whose claims are
    handed over when its transaction commits, then the advance of each."""

    def run(now: datetime) -> None:
        claimed: list[int] = []
        with django_capture_on_commit_callbacks(execute=True):
            engine_tick(now=now, publish=claimed.extend)
        enrollments_advance(claimed, now=now)

    return run


def deliver(now: datetime) -> int:
    queued = list(Message.objects.filter(status="queued").values_list("pk", flat=True))
    messages_deliver(queued, now=now)
    return len(queued)


def test_make_run_leaves_the_journeys_enrolling_and_sending(
    outbox, settings, run_engine, django_capture_on_commit_callbacks
):
    """The Makefile's steps in its order, then a minute of beat and workers:
    the churned customers enter win-back at the first refresh and get the
    offer; a signup through the API starts onboarding; the renewal reminders
    fire for the customers whose moment comes."""
    settings.JOURNEY_TRIGGER_LOOKBACK_S = 2 * 86400
    with time_machine.travel(NOW, tick=False):
        load_content()
        quietly("load_journeys", str(JOURNEYS), "--only-new")
        quietly("seed_demo", "--customers", "300", "--seed", "3", "--now", NOW.isoformat(),
                "--no-progress")  # fmt: skip
        with django_capture_on_commit_callbacks(execute=True):
            quietly("refresh_segments")

    churned = Enrollment.objects.filter(journey__slug="win-back")
    assert churned.count() > 5
    # A demo backfill starts no event journeys (only live API data does).
    assert not Enrollment.objects.filter(journey__slug__in=["onboarding", "activation"]).exists()

    run_engine(NOW + timedelta(seconds=5))
    offers = Message.objects.filter(template__slug="winback-offer")
    held_out = churned.filter(is_holdout=True).count()
    assert offers.count() == churned.count() - held_out
    assert set(offers.values_list("status", flat=True)) == {"queued"}

    # A newcomer's product reports a signup.
    signup_at = NOW + timedelta(seconds=20)
    result = ingest(
        [
            IdentifyIn(userId="new-1", traits={"email": "noor@example.com", "first_name": "Noor"}),
            TrackIn(userId="new-1", event="signed_up", timestamp=signup_at),
        ],
        received_at=signup_at,
        source="api",
    )
    events_received(event_ids=result.event_ids, now=signup_at)
    run_engine(signup_at + timedelta(seconds=5))
    welcome = Message.objects.get(template__slug="onboarding-welcome")
    assert (welcome.customer.external_id, welcome.status) == ("new-1", "queued")

    delivered = deliver(NOW + timedelta(minutes=1))
    assert len(outbox) == delivered == offers.count() + 1
    assert Message.objects.filter(status="sent").count() == delivered

    # The next day: renewal reminders for those whose moment came.
    tomorrow = NOW + timedelta(days=1)
    enrolled = date_triggers_check(now=tomorrow)
    run_engine(tomorrow)
    reminders = Enrollment.objects.filter(journey__slug__startswith="renewal-reminder")
    assert enrolled == reminders.count() > 0
    sent = Message.objects.filter(template__slug__startswith="renewal-")
    assert sent.exists()
    assert not reminders.filter(state="failed").exists()
