"""The builder's JSON API: load, save, validate (errors on their nodes),
publish (stay or move by mapping), pause/resume, backtest, live counts and
the customers behind them, previews, conditions, the catalog, and who may do
what (permissions, CSRF)."""

import copy
from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth.models import Permission

from apps.journeys.engine import enrollments_advance
from apps.journeys.enrollment import enrollment_start
from apps.journeys.graph import NODE_TYPES
from apps.journeys.models import Enrollment, Journey
from apps.journeys.services import journey_export
from apps.messaging.delivery import messages_deliver
from apps.messaging.models import Channel, Message
from apps.messaging.providers import locmem
from apps.segments.conditions import EXAMPLES

from .conftest import BASE_FILE, T0, JsonClient

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


def renamed_wait() -> dict:
    """The base file with its wait node renamed `wait1` → `pause`."""
    data = copy.deepcopy(BASE_FILE)
    data["nodes"][0]["next"] = "pause"
    data["nodes"][1] = {"id": "pause", "type": "wait", "duration": {"days": 1}, "next": "check"}
    return data


@pytest.fixture
def live(make_journey, sendable):
    """The onboarding journey, published (v1), its email templates sendable."""
    return make_journey()


@pytest.fixture
def draft_only(make_journey):
    return make_journey(publish=False)


@pytest.fixture
def in_memory_providers(settings):
    settings.EMAIL_PROVIDER = "locmem"
    settings.SMS_PROVIDER = "locmem"
    locmem.outbox.clear()
    yield
    locmem.outbox.clear()


# --- load and save ---------------------------------------------------------------------


def test_loading_a_journey_gives_its_draft_status_versions_and_rights(api, live):
    response = api.get("journeys/onboarding")

    assert response.status_code == 200
    body = response.json()
    assert body["draft"] == journey_export(live)
    assert body["live"] == live.live_version.definition
    assert body["draft_is_live"] is True
    assert body["journey"]["status"] == "live"
    assert body["journey"]["live_version"] == 1
    assert [v["number"] for v in body["journey"]["versions"]] == [1]
    assert body["can_change"] is True
    assert body["in_flight"] == []


def test_an_unknown_journey_is_a_json_404_naming_it(api, db):
    response = api.get("journeys/nope")

    assert response.status_code == 404
    assert response.json() == {"error": "no journey 'nope'"}


def test_the_list_names_every_journey_with_its_canvas(api, live):
    response = api.get("journeys")

    assert response.json()["journeys"] == [
        {
            "slug": "onboarding",
            "name": "Onboarding",
            "status": "live",
            "status_label": "Live",
            "live_version": 1,
            "active": 0,
            "url": "/builder/journeys/onboarding/",
        }
    ]


def test_a_new_journey_is_created_from_a_file_and_a_taken_slug_refused(api, template):
    data = copy.deepcopy(BASE_FILE)

    created = api.post("journeys", data)
    again = api.post("journeys", data)

    assert created.status_code == 201
    assert created.json()["url"] == "/builder/journeys/onboarding/"
    assert Journey.objects.get().status == Journey.Status.DRAFT
    assert again.status_code == 400
    assert again.json()["errors"][0]["path"] == "slug"
    assert "exists already" in again.json()["errors"][0]["message"]


def test_saving_the_draft_keeps_the_node_positions_and_leaves_the_live_version(api, live):
    data = copy.deepcopy(BASE_FILE)
    for i, node in enumerate(data["nodes"]):
        node["ui"] = {"x": 40 * i, "y": 120.5 * i}

    response = api.put("journeys/onboarding/draft", data)

    assert response.status_code == 200
    assert response.json()["saved"] is True
    assert response.json()["draft_is_live"] is False
    live.refresh_from_db()
    assert [n["ui"] for n in live.draft["nodes"]] == [
        {"x": 40 * i, "y": 120.5 * i} for i in range(5)
    ]
    assert "ui" not in live.live_version.definition["nodes"][0]


def test_an_invalid_draft_is_refused_whole_with_each_problem_on_its_node(api, live):
    data = copy.deepcopy(BASE_FILE)
    data["nodes"][0]["template"] = "welcom"
    data["nodes"][1]["duration"] = {"weeks": 1}
    before = copy.deepcopy(live.draft)

    response = api.put("journeys/onboarding/draft", data)

    assert response.status_code == 400
    errors = response.json()["errors"]
    assert {(e["node"], e["field"]) for e in errors} == {
        ("welcome", "template"),
        ("wait1", "duration"),
    }
    assert any("unknown template 'welcom'" in e["message"] for e in errors)
    assert response.json()["error"].startswith("nodes[")
    live.refresh_from_db()
    assert live.draft == before


def test_a_body_that_is_not_json_is_refused_saying_where(api, live):
    response = api.client.put(
        "/builder/api/journeys/onboarding/draft", data="{nope", content_type="application/json"
    )

    assert response.status_code == 400
    assert response.json()["error"].startswith("body: not valid JSON: ")
    assert "line 1, column 2" in response.json()["error"]


def test_a_method_the_endpoint_does_not_take_is_a_json_405(api, live):
    response = api.client.delete("/builder/api/journeys/onboarding/draft")

    assert response.status_code == 405
    assert response["Allow"] == "PUT, POST"
    assert "not allowed" in response.json()["error"]


# --- validate -------------------------------------------------------------------------------


def test_validate_lists_each_problem_with_its_node_and_saves_nothing(api, live):
    data = copy.deepcopy(BASE_FILE)
    data["nodes"][2]["condition"] = {"event": "activated", "op": "sometimes"}
    data["nodes"][3]["next"] = "nowhere"
    data["nodes"].append({"id": "orphan", "type": "exit"})

    response = api.post("journeys/onboarding/validate", data)

    assert response.status_code == 200
    body = response.json()
    assert body["valid"] is False
    by_node = {e["node"]: e for e in body["errors"]}
    assert set(by_node) == {"check", "nudge", "orphan"}
    assert by_node["nudge"]["field"] == "next"
    assert by_node["nudge"]["message"] == "unknown node 'nowhere'"
    assert by_node["check"]["field"].startswith("condition")
    assert "unreachable" in by_node["orphan"]["message"]
    live.refresh_from_db()
    assert live.draft == journey_export(live)


def test_validate_names_the_node_by_id_when_its_path_names_its_place(api, live):
    data = copy.deepcopy(BASE_FILE)
    data["nodes"][4] = {"id": "done", "type": "teleport"}

    body = api.post("journeys/onboarding/validate", data).json()

    error = next(e for e in body["errors"] if e["field"] == "type")
    assert error["node"] == "done"
    assert "unknown node type 'teleport'" in error["message"]


def test_a_picker_left_empty_is_called_required(api, live):
    data = copy.deepcopy(BASE_FILE)
    data["nodes"][0]["template"] = ""

    body = api.post("journeys/onboarding/validate", data).json()

    assert body["errors"] == [
        {
            "path": "nodes[welcome].template",
            "message": "required: it is empty",
            "node": "welcome",
            "field": "template",
        }
    ]


def test_validate_puts_problems_of_the_settings_on_no_node(api, live):
    data = copy.deepcopy(BASE_FILE)
    data["trigger"] = {"type": "segment_entered", "segment": "ghosts"}
    data["holdout_percent"] = 150

    body = api.post("journeys/onboarding/validate", data).json()

    assert {(e["path"], e["node"]) for e in body["errors"]} == {
        ("trigger.segment", None),
        ("holdout_percent", None),
    }


def test_a_valid_file_validates_and_a_changed_slug_does_not(api, live):
    ok = api.post("journeys/onboarding/validate", BASE_FILE).json()
    renamed = api.post("journeys/onboarding/validate", {**BASE_FILE, "slug": "other"}).json()

    assert ok == {"valid": True, "errors": []}
    assert renamed["valid"] is False
    assert renamed["errors"][0]["path"] == "slug"


# --- publish ----------------------------------------------------------------------------


def enroll_at_wait(journey, customer) -> Enrollment:
    enrollment = enrollment_start(journey=journey, customer_id=customer.pk, now=T0)
    enrollments_advance([enrollment.pk], now=T0)
    enrollment.refresh_from_db()
    assert enrollment.current_node == "wait1"
    return enrollment


def test_publishing_the_draft_makes_the_next_version_live(api, draft_only):
    response = api.post("journeys/onboarding/publish", {"in_flight": "stay"})

    assert response.status_code == 200
    assert response.json()["published"] == {"version": 1, "migrated": 0}
    assert response.json()["journey"]["status"] == "live"
    draft_only.refresh_from_db()
    assert draft_only.live_version.number == 1


def test_publishing_with_stay_leaves_customers_on_their_version(api, live, customer):
    enrollment = enroll_at_wait(live, customer)
    api.put("journeys/onboarding/draft", renamed_wait())

    response = api.post("journeys/onboarding/publish", {"in_flight": "stay"})

    assert response.json()["published"] == {"version": 2, "migrated": 0}
    enrollment.refresh_from_db()
    assert enrollment.journey_version.number == 1
    assert enrollment.current_node == "wait1"


def test_publishing_with_a_mapping_moves_customers_at_their_next_step(api, live, customer):
    enrollment = enroll_at_wait(live, customer)
    api.put("journeys/onboarding/draft", renamed_wait())
    where = api.get("journeys/onboarding").json()["in_flight"]

    response = api.post(
        "journeys/onboarding/publish", {"in_flight": "migrate", "mapping": {"wait1": "pause"}}
    )

    assert where == [{"version": 1, "node": "wait1", "count": 1}]
    assert response.status_code == 200
    assert response.json()["published"] == {"version": 2, "migrated": 1}
    assert response.json()["in_flight"] == [{"version": 2, "node": "pause", "count": 1}]
    enrollment.refresh_from_db()
    assert (enrollment.journey_version.number, enrollment.current_node) == (2, "pause")


def test_a_migration_leaving_customers_nowhere_is_refused_naming_the_node(api, live, customer):
    enroll_at_wait(live, customer)
    api.put("journeys/onboarding/draft", renamed_wait())

    response = api.post("journeys/onboarding/publish", {"in_flight": "migrate", "mapping": {}})

    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["path"] == "migrate.mapping[wait1]"
    assert "1 enrollment(s) are at 'wait1'" in error["message"]
    live.refresh_from_db()
    assert live.live_version.number == 1


@pytest.mark.parametrize(
    ("body", "path", "words"),
    [
        ({"in_flight": "later"}, "in_flight", "'stay' or 'migrate'"),
        ({"in_flight": "stay", "mapping": {"a": "b"}}, "mapping", "only goes with"),
        ({"in_flight": "migrate", "mapping": {"a": 1}}, "mapping.a", "string"),
        ({"in_flight": "stay", "force": True}, "force", "unknown field"),
    ],
)
def test_a_bad_publish_body_is_refused_naming_the_field(api, live, body, path, words):
    response = api.post("journeys/onboarding/publish", body)

    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["path"] == path
    assert words in error["message"]


# --- pause and resume --------------------------------------------------------------------


def test_pause_and_resume_switch_the_status(api, live):
    paused = api.post("journeys/onboarding/pause")
    resumed = api.post("journeys/onboarding/resume")

    assert paused.status_code == 200
    assert paused.json()["journey"]["status"] == "paused"
    assert paused.json()["journey"]["paused_at"] is not None
    assert resumed.json()["journey"]["status"] == "live"
    live.refresh_from_db()
    assert live.status == Journey.Status.LIVE


def test_resuming_a_live_journey_is_a_conflict_saying_why(api, live):
    response = api.post("journeys/onboarding/resume")

    assert response.status_code == 409
    assert response.json()["errors"][0]["path"] == "status"
    assert "only a paused journey can be resumed (it is live)" in response.json()["error"]


def test_a_draft_journey_cannot_be_paused(api, draft_only):
    response = api.post("journeys/onboarding/pause")

    assert response.status_code == 409
    assert "only a live journey can be paused" in response.json()["error"]


# --- backtest ----------------------------------------------------------------------------------


@pytest.fixture
def history(make_journey, sendable, customer, make_customers, track):
    """Live since before the window; over the ten days to T0 + 10 days:
    u-1 signs up on day 1 and activates on day 2 (converted while waiting);
    c-0 signs up on day 3 and never activates (check: no; nudge; done)."""
    journey = make_journey(at=T0 - 5 * DAY)
    (other,) = make_customers(1)
    track(customer.external_id, "signed_up", at=T0 + 1 * DAY)
    track(customer.external_id, "activated", at=T0 + 2 * DAY)
    track(other.external_id, "signed_up", at=T0 + 3 * DAY)
    return journey


def test_the_backtest_counts_per_node_and_keeps_nothing(api, history, in_memory_providers):
    with time_machine.travel(T0 + 10 * DAY, tick=False):
        response = api.post("journeys/onboarding/backtest", {"days": 10})

    assert response.status_code == 200
    result = response.json()
    assert (result["entered"], result["converted"], result["completed"]) == (2, 1, 1)
    entered = {node: counts["entered"] for node, counts in result["nodes"].items()}
    assert entered == {"welcome": 2, "wait1": 2, "check": 1, "nudge": 1, "done": 1}
    assert result["nodes"]["check"]["outcomes"] == {"no": 1}
    assert result["version"] == "v1"
    assert Enrollment.objects.count() == 0
    assert Message.objects.count() == 0
    assert locmem.outbox == []


def test_the_draft_is_backtested_when_asked(api, history, in_memory_providers):
    api.put("journeys/onboarding/draft", renamed_wait())

    with time_machine.travel(T0 + 10 * DAY, tick=False):
        result = api.post("journeys/onboarding/backtest", {"days": 10, "draft": True}).json()

    assert result["version"] == "draft"
    assert result["nodes"]["pause"]["entered"] == 2


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"days": 0}, "days"),
        ({"days": "7"}, "days"),
        ({"days": 7, "segment_step_minutes": 0}, "segment_step_minutes"),
    ],
)
def test_a_bad_backtest_window_is_refused_naming_the_field(api, live, body, path):
    response = api.post("journeys/onboarding/backtest", body)

    assert response.status_code == 400
    assert response.json()["errors"][0]["path"] == path


def test_backtesting_a_journey_never_published_says_to_use_the_draft(api, draft_only):
    response = api.post("journeys/onboarding/backtest", {"days": 7})

    assert response.status_code == 400
    assert "never been published" in response.json()["error"]


# --- live counts and the customers behind them ------------------------------------------------


@pytest.fixture
def running(live, customer, make_customers, track, in_memory_providers):
    """Three customers in the live journey: u-1 and c-0 wait at wait1 after
    their welcome email went out (u-1's delivered, opened and clicked); c-1
    activated and converted at its next step."""
    others = make_customers(2)
    enrollments = [
        enrollment_start(journey=live, customer_id=c.pk, now=T0) for c in (customer, *others)
    ]
    enrollments_advance([e.pk for e in enrollments], now=T0)
    messages_deliver(list(Message.objects.values_list("pk", flat=True)), now=T0)
    Message.objects.filter(customer=customer).update(
        delivered_at=T0 + timedelta(minutes=1),
        opened_at=T0 + timedelta(minutes=5),
        clicked_at=T0 + timedelta(minutes=6),
    )
    track(others[1].external_id, "activated", at=T0 + DAY)
    enrollments_advance([enrollments[2].pk], now=T0 + 2 * DAY)
    return live


def test_live_counts_show_each_nodes_traffic(api, running):
    response = api.get("journeys/onboarding/counts")

    assert response.status_code == 200
    body = response.json()
    assert body["metrics"] == [
        "entered",
        "waiting",
        "sent",
        "delivered",
        "opened",
        "clicked",
        "converted",
    ]
    assert body["nodes"]["welcome"] == {
        "entered": 3,
        "waiting": 0,
        "sent": 3,
        "delivered": 1,
        "opened": 1,
        "clicked": 1,
        "converted": 1,
    }
    assert body["nodes"]["wait1"] == {
        "entered": 3,
        "waiting": 2,
        "sent": 0,
        "delivered": 0,
        "opened": 0,
        "clicked": 0,
        "converted": 1,
    }
    assert "check" not in body["nodes"]
    assert body["totals"]["enrolled"] == 3
    assert body["totals"]["active"] == 2
    assert body["totals"]["converted"] == 1


def test_a_cheap_count_is_always_current(api, running, make_customers):
    first = api.get("journeys/onboarding/counts").json()
    (late,) = make_customers(1, prefix="late")
    enrollment_start(journey=running, customer_id=late.pk, now=T0)

    second = api.get("journeys/onboarding/counts").json()

    assert (first["cached"], second["cached"]) == (False, False)
    assert (first["totals"]["enrolled"], second["totals"]["enrolled"]) == (3, 4)


def test_a_costly_count_is_shared_from_the_cache_for_a_while(
    api, running, make_customers, monkeypatch
):
    from apps.builder import selectors

    monkeypatch.setattr(selectors, "COUNTS_CACHED_FROM_S", 0.0)  # every count is "costly"
    first = api.get("journeys/onboarding/counts").json()
    (late,) = make_customers(1, prefix="late")
    enrollment_start(journey=running, customer_id=late.pk, now=T0)

    second = api.get("journeys/onboarding/counts").json()

    assert second["cached"] is True
    assert second["as_of"] == first["as_of"]
    assert second["totals"]["enrolled"] == 3


def test_a_count_lists_the_customers_behind_it(api, running, customer):
    waiting = api.get("journeys/onboarding/nodes/wait1/customers", metric="waiting").json()
    clicked = api.get("journeys/onboarding/nodes/welcome/customers", metric="clicked").json()
    converted = api.get("journeys/onboarding/nodes/welcome/customers", metric="converted").json()

    assert (waiting["total"], waiting["shown"]) == (2, 2)
    assert {r["external_id"] for r in waiting["rows"]} == {"u-1", "c-0"}
    assert all(r["current_node"] == "wait1" for r in waiting["rows"])
    assert "current_node=wait1" in waiting["admin_url"]
    row = waiting["rows"][0]
    assert row["customer_url"].startswith("/admin/customers/customer/")
    assert row["enrollment_url"].startswith("/admin/journeys/enrollment/")
    assert [r["external_id"] for r in clicked["rows"]] == ["u-1"]
    assert clicked["rows"][0]["message_url"].startswith("/admin/messaging/message/")
    assert "clicked_at__isnull=False" in clicked["admin_url"]
    assert [r["external_id"] for r in converted["rows"]] == ["c-1"]
    assert converted["rows"][0]["state"] == "converted"
    assert (waiting["at_label"], clicked["at_label"]) == ("next step due", "clicked")


def test_the_admin_link_of_waiting_customers_lists_exactly_them(api, running, marketer):
    marketer.is_superuser = True
    marketer.save()
    url = api.get("journeys/onboarding/nodes/wait1/customers", metric="waiting").json()["admin_url"]

    page = api.client.get(url)

    assert page.status_code == 200
    assert page.context["cl"].result_count == 2


def test_an_unknown_metric_is_refused_naming_the_choices(api, running):
    response = api.get("journeys/onboarding/nodes/wait1/customers", metric="bounced")

    assert response.status_code == 400
    assert response.json()["error"].startswith("metric: must be one of entered, waiting")


# --- previews, conditions and the catalog ----------------------------------------------------


def test_a_template_preview_renders_for_a_customer(api, sendable, customer):
    email = api.get("templates/welcome/preview", customer="u-1").json()
    sms = api.get("templates/activation-nudge/preview").json()

    assert email["email"]["subject"] == "Hello Ada (welcome)"
    assert "<p>Hi Ada</p>" in email["email"]["html"]
    assert email["customer"]["external_id"] == "u-1"
    assert email["problems"] == []
    assert sms["sms"]["body"] == "Hi from activation-nudge"
    assert sms["sms"]["label"] == "GSM-7, 1 segment"
    assert sms["template"]["channel"] == Channel.SMS


def test_a_preview_names_what_it_cannot_find(api, template, customer):
    unknown_template = api.get("templates/nope/preview")
    unknown_customer = api.get("templates/welcome/preview", customer="nobody")

    assert unknown_template.status_code == 404
    assert unknown_template.json()["error"] == "no template 'nope'"
    assert unknown_customer.status_code == 400
    assert unknown_customer.json()["error"].startswith("customer: no customer has")


def test_a_marketing_email_without_its_footer_previews_with_the_error(api, template, customer):
    body = api.get("templates/welcome/preview").json()

    assert body["error"]
    assert body["email"]["subject"] == "Hello Ada (welcome)"


def test_conditions_are_checked_with_the_path_of_the_problem(api, db):
    ok = api.post("conditions/check", {"condition": {"event": "activated", "op": "since_enrolled"}})
    bad = api.post(
        "conditions/check",
        {"condition": {"all": [{"trait": "plan", "op": "eq", "value": "pro"}, {"trait": "plan"}]}},
    )
    segment_only = api.post(
        "conditions/check",
        {"condition": {"event": "activated", "op": "since_enrolled"}, "context": "segment"},
    )

    assert ok.json() == {"valid": True}
    assert bad.json()["valid"] is False
    assert bad.json()["path"] == "all[1]"
    assert segment_only.json()["valid"] is False


def test_the_catalog_offers_every_node_kind_templates_segments_and_examples(api, template, db):
    from apps.builder.catalog import kind_refusal
    from apps.segments.models import Segment

    Segment.objects.create(
        slug="trialing", name="Trialing", definition={"trait": "plan", "op": "exists"}
    )

    body = api.get("catalog").json()

    kinds = {k["type"]: k for k in body["node_kinds"]}
    assert tuple(kinds) == NODE_TYPES
    assert kinds["branch"]["outputs"] == ["yes", "no"]
    assert kinds["split"]["outputs"] == ["branches"]
    assert kinds["exit"]["outputs"] == []
    for kind in NODE_TYPES:
        refusal = kind_refusal(kind)
        assert kinds[kind]["enabled"] is (refusal is None)
        assert kinds[kind]["disabled_reason"] == (refusal or "")
    assert all(kinds[k]["enabled"] for k in NODE_TYPES)
    assert {(t["slug"], t["channel"]) for t in body["templates"]} == {
        ("welcome", "email"),
        ("activation-nudge", "sms"),
    }
    assert [s["slug"] for s in body["segments"]] == ["trialing"]
    assert body["condition_examples"][: len(EXAMPLES)] == EXAMPLES
    assert [t["type"] for t in body["triggers"]] == [
        "event",
        "segment_entered",
        "segment_exited",
        "date_trait",
        "schedule",
    ]


def test_every_blank_node_of_the_palette_is_a_valid_node_once_its_picks_are_made():
    from apps.builder.catalog import _probe_fields, kind_refusal

    for kind in NODE_TYPES:
        assert kind_refusal(kind) is None, kind
        assert _probe_fields(kind) is not None


# --- the survey picker -------------------------------------------------------------------------


@pytest.fixture
def surveys(db):
    """The demo's survey (email and SMS templates, from the fixture files) and
    one with an email template only."""
    from apps.surveys.models import Survey
    from tests.surveys.conftest import SURVEYS, TEMPLATES, quietly

    quietly("load_templates", str(TEMPLATES), "--only-new")
    quietly("load_surveys", str(SURVEYS), "--only-new")
    demo = Survey.objects.get(slug="nps")
    Survey.objects.create(
        slug="email-only",
        name="Account managers' NPS",
        question="How likely are you to recommend us?",
        email_template=demo.email_template,
    )
    return Survey.objects.order_by("name")


def test_the_catalog_lists_surveys_with_the_template_of_each_channel(api, surveys):
    listed = api.get("catalog").json()["surveys"]

    assert listed == [
        {
            "slug": s.slug,
            "name": s.name,
            "templates": {
                c: t.slug
                for c, t in (("email", s.email_template), ("sms", s.sms_template))
                if t is not None
            },
            "admin_url": f"/admin/surveys/survey/{s.pk}/change/",
        }
        for s in surveys
    ]
    by_slug = {s["slug"]: s["templates"] for s in listed}
    assert by_slug == {
        "email-only": {"email": "nps-survey"},
        "nps": {"email": "nps-survey", "sms": "nps-survey-sms"},
    }


def test_a_surveys_email_previews_with_its_score_links_for_the_picker(api, surveys, customer):
    body = api.get("templates/nps-survey/preview", customer="u-1").json()

    assert body["error"] == ""
    assert body["template"]["slug"] == "nps-survey"
    html = body["email"]["html"]
    assert all(f"score={n}" in html for n in range(11))


def test_an_nps_node_on_a_channel_its_survey_has_no_template_for_is_refused_on_the_channel(
    api, live, surveys
):
    data = copy.deepcopy(BASE_FILE)
    data["nodes"][0] = {"id": "welcome", "type": "nps_survey", "survey": "email-only",
                        "channel": "sms", "next": "wait1"}  # fmt: skip
    unknown = copy.deepcopy(data)
    unknown["nodes"][0].update(survey="ghost", channel="email")

    refused = api.post("journeys/onboarding/validate", data).json()
    missing = api.post("journeys/onboarding/validate", unknown).json()
    data["nodes"][0]["channel"] = "email"
    accepted = api.post("journeys/onboarding/validate", data).json()

    (error,) = refused["errors"]
    assert (error["node"], error["field"]) == ("welcome", "channel")
    assert "has no sms template" in error["message"]
    assert [(e["node"], e["field"]) for e in missing["errors"]] == [("welcome", "survey")]
    assert accepted == {"valid": True, "errors": []}


# --- who may do what ---------------------------------------------------------------------------


def test_a_viewer_reads_but_cannot_change(viewer_api, live):
    loaded = viewer_api.get("journeys/onboarding")
    saved = viewer_api.put("journeys/onboarding/draft", renamed_wait())
    published = viewer_api.post("journeys/onboarding/publish", {"in_flight": "stay"})
    paused = viewer_api.post("journeys/onboarding/pause")
    backtest = viewer_api.post("journeys/onboarding/backtest", {"days": 7})
    created = viewer_api.post("journeys", {**BASE_FILE, "slug": "another"})

    assert loaded.status_code == 200
    assert loaded.json()["can_change"] is False
    for response in (saved, published, paused, backtest, created):
        assert response.status_code == 403
        assert response.json()["error"] == (
            "permission denied: changing journeys needs journeys.change_journey"
        )
    live.refresh_from_db()
    assert live.status == Journey.Status.LIVE
    assert live.draft == journey_export(live)
    assert live.versions.count() == 1
    assert not Journey.objects.filter(slug="another").exists()


def test_staff_without_journey_permissions_cannot_even_read(django_user_model, live):
    intern = django_user_model.objects.create_user("intern", password="pw", is_staff=True)

    response = JsonClient(intern).get("journeys/onboarding")

    assert response.status_code == 403
    assert "journeys.view_journey" in response.json()["error"]


def test_non_staff_and_anonymous_callers_are_refused(django_user_model, live):
    customer_user = django_user_model.objects.create_user("someone", password="pw")
    customer_user.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_journey", "change_journey"])
    )

    not_staff = JsonClient(customer_user).get("journeys/onboarding")
    anonymous = JsonClient(None).get("journeys/onboarding")

    assert not_staff.status_code == 403
    assert not_staff.json()["error"] == "permission denied: the builder is for staff"
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "log in first: the builder is for staff"


def test_a_write_without_the_csrf_token_is_refused(marketer, live):
    browser = JsonClient(marketer, csrf=True)

    response = browser.put("journeys/onboarding/draft", renamed_wait())

    assert response.status_code == 403
    assert response.json()["error"].startswith("CSRF check failed")
    live.refresh_from_db()
    assert live.draft == journey_export(live)


def test_a_write_with_the_pages_csrf_token_is_accepted(marketer, live):
    browser = JsonClient(marketer, csrf=True)
    page = browser.client.get("/builder/journeys/onboarding/")
    token = page.context["boot"]["csrfToken"]

    response = browser.put("journeys/onboarding/draft", renamed_wait(), HTTP_X_CSRFTOKEN=token)

    assert response.status_code == 200
    live.refresh_from_db()
    assert live.draft["nodes"][1]["id"] == "pause"


def test_reads_need_no_csrf_token(marketer, live):
    response = JsonClient(marketer, csrf=True).get("journeys/onboarding/counts")

    assert response.status_code == 200
