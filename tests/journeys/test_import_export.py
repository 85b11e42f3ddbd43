import copy
import io
import json

import pytest
from django.core.management import CommandError, call_command

from apps.journeys.graph import JourneyError
from apps.journeys.models import Journey, JourneyVersion
from apps.journeys.services import journey_draft_save, journey_export, journey_import

from .conftest import BASE_FILE

pytestmark = pytest.mark.django_db


def write(tmp_path, data, name="journey.json") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return str(path)


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


# --- the services ------------------------------------------------------------------------


def test_an_import_creates_a_draft_journey_without_publishing(template, journey_file, now):
    journey = journey_import(journey_file(description="First week"), now=now)
    assert (journey.slug, journey.name, journey.description) == (
        "onboarding",
        "Onboarding",
        "First week",
    )
    assert journey.status == Journey.Status.DRAFT
    assert journey.live_version is None
    assert journey.draft["nodes"][0] == {
        "id": "welcome",
        "type": "email",
        "next": "wait1",
        "template": "welcome",
    }
    assert not JourneyVersion.objects.exists()


def test_an_import_of_an_existing_slug_replaces_the_draft_only(make_journey, journey_file, now):
    journey = make_journey()
    changed = journey_file(name="Onboarding v2")
    changed["nodes"][1]["duration"] = {"days": 3}
    again = journey_import(changed, now=now)
    assert again.pk == journey.pk
    again.refresh_from_db()
    assert again.name == "Onboarding v2"
    assert again.draft["nodes"][1]["duration"] == {"days": 3}
    assert again.live_version.number == 1
    assert again.live_version.definition["nodes"][1]["duration"] == {"days": 2}


def test_an_invalid_file_writes_nothing(make_journey, journey_file, now):
    journey = make_journey()
    bad = journey_file(name="Changed")
    bad["nodes"][0]["template"] = "welcom"
    bad["nodes"][1]["duration"] = {"days": 0}
    with pytest.raises(JourneyError) as info:
        journey_import(bad, now=now, publish=True)
    assert [p for p, _ in info.value.errors] == ["nodes[wait1].duration", "nodes[welcome].template"]
    journey.refresh_from_db()
    assert journey.name == "Onboarding"
    assert JourneyVersion.objects.count() == 1


def test_a_refused_publish_leaves_the_imported_draft_unwritten(make_journey, journey_file, now):
    journey = make_journey()
    journey.status = Journey.Status.ARCHIVED
    journey.save()
    with pytest.raises(JourneyError, match="archived"):
        journey_import(journey_file(name="New name"), now=now, publish=True)
    journey.refresh_from_db()
    assert journey.name == "Onboarding"


def test_export_then_import_is_byte_stable(make_journey, journey_file, now):
    data = journey_file(goal={"op": "since_enrolled", "event": "activated"}, reentry="always")
    data["nodes"][0] = {"template": "welcome", "next": "wait1", "id": "welcome", "type": "email"}
    data["nodes"][0]["ui"] = {"y": 40, "x": 120}
    journey = make_journey(data)
    first = json.dumps(journey_export(journey), indent=2)
    journey_import(json.loads(first), now=now, publish=True)
    journey.refresh_from_db()
    second = json.dumps(journey_export(journey), indent=2)
    assert first == second
    assert journey.versions.count() == 1  # an unchanged file publishes nothing new
    assert json.loads(first)["reentry"] == {"policy": "always"}
    assert json.loads(first)["goal"] == {"event": "activated", "op": "since_enrolled"}


def test_export_of_a_version_gives_that_version(make_journey, journey_file, now):
    journey = make_journey()
    journey_import(journey_file(name="Onboarding v2"), now=now, publish=True)
    journey.refresh_from_db()
    assert journey_export(journey, version=1)["name"] == "Onboarding"
    assert journey_export(journey, version=2)["name"] == "Onboarding v2"
    with pytest.raises(JourneyError, match="has no version 7 \\(it has 1, 2\\)"):
        journey_export(journey, version=7)


def test_a_draft_edit_cannot_change_the_slug(make_journey, journey_file):
    journey = make_journey()
    with pytest.raises(JourneyError, match="must stay 'onboarding'"):
        journey_draft_save(journey, journey_file(slug="renamed"))
    journey_draft_save(journey, journey_file(name="Renamed"))
    journey.refresh_from_db()
    assert journey.name == "Renamed"


# --- the commands ---------------------------------------------------------------------------


def test_import_journey_saves_a_draft_and_publishes_with_the_flag(template, tmp_path):
    path = write(tmp_path, BASE_FILE, "onboarding.json")
    assert "draft of journey 'onboarding' saved" in run("import_journey", path)
    assert Journey.objects.get().status == Journey.Status.DRAFT
    out = run("import_journey", path, "--publish")
    assert "published as version 1 (live)" in out
    assert Journey.objects.get().live_version.number == 1


def test_import_journey_lists_every_problem_and_writes_nothing(template, tmp_path):
    data = copy.deepcopy(BASE_FILE)
    data["nodes"][0]["template"] = "welcom"
    data["nodes"][3]["next"] = "dnoe"
    data["nodes"].append({"id": "lost", "type": "exit"})
    path = write(tmp_path, data)
    with pytest.raises(CommandError) as info:
        call_command("import_journey", path, "--publish")
    assert str(info.value).splitlines() == [
        "journey.json: 3 problems, nothing imported:",
        "  nodes[nudge].next: unknown node 'dnoe'",
        "  nodes[lost]: unreachable from the start node 'welcome'",
        "  nodes[welcome].template: unknown template 'welcom'",
    ]
    assert not Journey.objects.exists()


def test_import_journey_reports_bad_json_with_its_position(db, tmp_path):
    path = write(tmp_path, '{"slug": "x",\n  "name": }')
    with pytest.raises(
        CommandError, match="not valid JSON: Expecting value \\(line 2, column 11\\)"
    ):
        call_command("import_journey", path)
    with pytest.raises(CommandError, match="no such file"):
        call_command("import_journey", str(tmp_path / "missing.json"))


def test_import_journey_can_move_customers_with_a_mapping(make_journey, tmp_path):
    make_journey()
    data = copy.deepcopy(BASE_FILE)
    data["nodes"][1]["duration"] = {"days": 1}
    path = write(tmp_path, data)
    out = run("import_journey", path, "--publish", "--migrate", "{}")
    assert "published as version 2 (live; 0 enrollment(s) moved)" in out
    with pytest.raises(CommandError, match="--migrate only goes with --publish"):
        call_command("import_journey", path, "--migrate", "{}")


def test_export_journey_prints_the_file_with_a_stable_key_order(make_journey, journey_file, now):
    make_journey()
    printed = run("export_journey", "onboarding")
    assert printed == json.dumps(journey_export(Journey.objects.get()), indent=2) + "\n"
    assert list(json.loads(printed))[:3] == ["slug", "name", "trigger"]
    journey_import(journey_file(name="Later"), now=now, publish=True)
    assert json.loads(run("export_journey", "onboarding", "--version", "1"))["name"] == (
        "Onboarding"
    )
    with pytest.raises(CommandError, match="no journey 'nope' \\(journeys: onboarding\\)"):
        call_command("export_journey", "nope")


def test_an_exported_file_imports_into_an_empty_database_unchanged(
    make_journey, tmp_path, template
):
    make_journey()
    printed = run("export_journey", "onboarding")
    Journey.objects.update(live_version=None)
    Journey.objects.all().delete()
    run("import_journey", write(tmp_path, printed), "--publish")
    assert run("export_journey", "onboarding") == printed


@pytest.mark.parametrize(
    "change,problem",
    [
        (
            lambda d: d["nodes"][1].update(duration={"days": 10**20}),
            "nodes[wait1].duration.days: must be at most 1000000 (got 100000000000000000000)",
        ),
        (
            lambda d: d["nodes"][1].update(duration={"minutes": 2**70}),
            "nodes[wait1].duration.minutes: must be at most 1440000000 "
            "(got 1180591620717411303424)",
        ),
        (
            lambda d: d["nodes"][1].update(ui={"x": 1, "y": 2, "note": "a\x00b"}),
            "nodes[wait1].ui.note: contains a NUL character",
        ),
        (
            lambda d: d.update(name="\ud800"),
            "name: contains a lone surrogate (not valid Unicode)",
        ),
        (
            lambda d: d["nodes"][1].update(ui={"x": float("inf"), "y": 0}),
            "nodes[wait1].ui.x: must be a finite number",
        ),
    ],
)
def test_import_journey_refuses_values_nothing_can_hold_naming_the_node(
    template, tmp_path, change, problem
):
    data = copy.deepcopy(BASE_FILE)
    change(data)
    path = write(tmp_path, json.dumps(data))  # (json writes inf as Infinity, as a file may)

    with pytest.raises(CommandError) as info:
        call_command("import_journey", path)

    assert str(info.value).splitlines()[1:] == [f"  {problem}"]
    assert not Journey.objects.exists()


def test_import_journey_refuses_a_file_nested_too_deeply(db, tmp_path):
    data = copy.deepcopy(BASE_FILE)
    data["nodes"][1]["ui"] = "DEEP"
    deep = '{"a": ' * 100_000 + "1" + "}" * 100_000
    path = write(tmp_path, json.dumps(data).replace('"DEEP"', deep))
    with pytest.raises(CommandError, match="nested more than 64 levels deep"):
        call_command("import_journey", path)

    data["nodes"][1]["ui"] = "DEEP"
    path = write(tmp_path, json.dumps(data).replace('"DEEP"', '{"a": ' * 100 + "1" + "}" * 100))
    with pytest.raises(CommandError, match=r"nodes\[wait1\]\.ui\.a\.a.*nested more than 64"):
        call_command("import_journey", path)
