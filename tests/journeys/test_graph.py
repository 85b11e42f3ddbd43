import copy

import pytest

from apps.journeys.graph import (
    JourneyError,
    SplitNode,
    WaitNode,
    canonical_journey,
    cron_fields,
    parse_journey,
)
from apps.messaging.models import Channel

from .conftest import BASE_FILE


def errors_of(data, *, check_refs=False) -> list[tuple[str, str]]:
    with pytest.raises(JourneyError) as info:
        parse_journey(data, check_refs=check_refs)
    return info.value.errors


def paths_of(data, **kwargs) -> list[str]:
    return [path for path, _ in errors_of(data, **kwargs)]


def with_nodes(*nodes, start=None, **top) -> dict:
    data = copy.deepcopy(BASE_FILE)
    data.update(top)
    data["nodes"] = list(nodes)
    data["start"] = start or nodes[0]["id"]
    return data


# --- the happy path ------------------------------------------------------------------


def test_the_design_example_parses_into_typed_nodes_with_successors():
    definition = parse_journey(copy.deepcopy(BASE_FILE), check_refs=False)
    assert definition.slug == "onboarding"
    assert definition.start == "welcome"
    assert definition.reentry.policy == "never"
    assert definition.successors("check") == ["done", "nudge"]
    wait = definition.node("wait1")
    assert isinstance(wait, WaitNode)
    assert wait.duration.timedelta.days == 2
    assert definition.node("done").type == "exit"
    with pytest.raises(KeyError, match="no node 'nope'"):
        definition.node("nope")


def test_every_node_kind_but_surveys_is_accepted():
    data = with_nodes(
        {"id": "a", "type": "email", "template": "t", "over_cap": "defer", "next": "b"},
        {"id": "b", "type": "wait", "duration": {"hours": 1, "minutes": 30}, "next": "c"},
        {"id": "c", "type": "wait_until", "time": "10:00", "weekdays": ["mon", "fri"], "next": "d"},
        {
            "id": "d",
            "type": "wait_for_event",
            "event": "subscription_started",
            "timeout": {"days": 3},
            "where": {"plan": "pro"},
            "yes": "e",
            "no": "f",
        },
        {"id": "e", "type": "update_traits", "traits": {"won_back": True}, "next": "x"},
        {
            "id": "f",
            "type": "split",
            "branches": [{"weight": 2, "next": "g"}, {"weight": 1, "next": "h"}],
        },
        {"id": "g", "type": "sms", "template": "s", "next": "x"},
        {
            "id": "h",
            "type": "webhook",
            "url": "https://hooks.example.com/x",
            "secret": "CRM_WEBHOOK_SECRET",
            "on_failure": "fail",
            "next": "x",
            "ui": {"x": 10, "y": 20},
        },
        {"id": "x", "type": "exit"},
    )
    definition = parse_journey(data, check_refs=False)
    assert definition.successors("f") == ["g", "h"]
    split = definition.node("f")
    assert isinstance(split, SplitNode)
    assert [b.weight for b in split.branches] == [2, 1]
    assert definition.node("h").on_failure == "fail"


def test_reentry_accepts_the_short_form_and_after_n_days():
    assert parse_journey({**BASE_FILE, "reentry": "always"}, check_refs=False).reentry.policy == (
        "always"
    )
    after = parse_journey(
        {**BASE_FILE, "reentry": {"policy": "after", "days": 30}}, check_refs=False
    )
    assert (after.reentry.policy, after.reentry.days) == ("after", 30)


@pytest.mark.parametrize(
    "trigger",
    [
        {"type": "event", "event": "signed_up", "where": {"plan": "pro", "seats": 3}},
        {"type": "segment_entered", "segment": "trialing"},
        {"type": "segment_exited", "segment": "trialing"},
        {"type": "date_trait", "trait": "renewal_at", "offset_days": -30, "at": "10:00"},
        {"type": "schedule", "cron": "0 9 * * 1", "segment": "trialing"},
    ],
)
def test_every_trigger_type_is_accepted(trigger):
    assert (
        parse_journey({**BASE_FILE, "trigger": trigger}, check_refs=False).trigger.type
        == (trigger["type"])
    )


def test_a_node_without_next_ends_the_journey():
    data = with_nodes({"id": "only", "type": "email", "template": "t"})
    assert parse_journey(data, check_refs=False).successors("only") == []


# --- structure -------------------------------------------------------------------------


def test_an_unknown_node_type_is_refused_naming_the_node():
    data = with_nodes(
        {"id": "a", "type": "email", "template": "t", "next": "b"}, {"id": "b", "type": "emial"}
    )
    [(path, message)] = errors_of(data)
    assert path == "nodes[b].type"
    assert "unknown node type 'emial'" in message


@pytest.mark.parametrize("kind", [[], {}, 3, None])
def test_a_node_or_trigger_type_that_is_not_a_name_is_refused_naming_it(kind):
    nodes = with_nodes(
        {"id": "a", "type": "email", "template": "t", "next": "b"}, {"id": "b", "type": kind}
    )
    assert paths_of(nodes) == ["nodes[b].type"]
    assert paths_of({**BASE_FILE, "trigger": {"type": kind}}) == ["trigger.type"]


def test_unknown_fields_are_refused_on_nodes_and_at_the_top():
    data = with_nodes({"id": "a", "type": "exit", "colour": "red"}, owner="me")
    assert errors_of(data) == [("owner", "unknown field"), ("nodes[a].colour", "unknown field")]


def test_duplicate_ids_are_refused():
    data = with_nodes({"id": "a", "type": "exit"}, {"id": "a", "type": "exit"})
    [(path, message)] = errors_of(data)
    assert path == "nodes[a]"
    assert "duplicate id 'a'" in message


def test_edges_to_missing_nodes_are_refused_naming_the_field():
    data = with_nodes(
        {"id": "a", "type": "branch", "condition": {"segment": "x"}, "yes": "b", "no": "c"},
        {"id": "b", "type": "exit"},
    )
    assert errors_of(data) == [("nodes[a].no", "unknown node 'c'")]


def test_a_start_that_is_not_a_node_is_refused():
    data = with_nodes({"id": "a", "type": "exit"}, start="welcome")
    assert errors_of(data) == [("start", "unknown node 'welcome'")]


def test_nodes_the_start_cannot_reach_are_refused():
    data = with_nodes(
        {"id": "a", "type": "email", "template": "t", "next": "b"},
        {"id": "b", "type": "exit"},
        {"id": "orphan", "type": "sms", "template": "s", "next": "b"},
    )
    assert errors_of(data) == [("nodes[orphan]", "unreachable from the start node 'a'")]


def test_a_cycle_without_a_wait_is_refused():
    data = with_nodes(
        {"id": "a", "type": "email", "template": "t", "next": "b"},
        {"id": "b", "type": "branch", "condition": {"segment": "s"}, "yes": "c", "no": "a"},
        {"id": "c", "type": "exit"},
    )
    [(path, message)] = errors_of(data)
    assert path == "nodes[a]"
    assert "a cycle with no wait on it (a → b → a)" in message


def test_a_node_pointing_at_itself_is_a_cycle():
    data = with_nodes({"id": "a", "type": "update_traits", "traits": {"n": 1}, "next": "a"})
    assert paths_of(data) == ["nodes[a]"]


@pytest.mark.parametrize(
    "wait",
    [
        {"type": "wait", "duration": {"days": 1}, "next": "a"},
        {"type": "wait_until", "time": "09:00", "next": "a"},
        {"type": "wait_for_event", "event": "login", "timeout": {"days": 7}, "yes": "a", "no": "a"},
    ],
)
def test_a_cycle_through_a_wait_is_allowed(wait):
    data = with_nodes(
        {"id": "a", "type": "email", "template": "t", "next": "check"},
        {"id": "check", "type": "branch", "condition": {"segment": "s"}, "yes": "w", "no": "x"},
        {"id": "w", **wait},
        {"id": "x", "type": "exit"},
    )
    assert parse_journey(data, check_refs=False).successors("w")[0] == "a"


@pytest.mark.parametrize(
    ("duration", "message"),
    [
        ({"days": 0}, "must be more than zero"),
        ({"days": -1}, "must be at least 0 (got -1)"),
        ({"weeks": 2}, "unknown unit 'weeks'; use days, hours or minutes"),
        ({}, "needs days, hours or minutes"),
        ({"days": "2"}, "must be a whole number, got a string"),
        ({"days": 5000}, "must be at most 3660 days"),
    ],
)
def test_bad_durations_are_refused(duration, message):
    data = with_nodes({"id": "w", "type": "wait", "duration": duration})
    [(path, got)] = errors_of(data)
    assert path.startswith("nodes[w].duration")
    assert got == message


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 9 * *", "must be five fields"),
        ("0 25 * * *", "bad hour field '25'"),
        ("61 * * * *", "bad minute field '61'"),
        ("0 0 32 * *", "bad day of month field '32'"),
        ("0 0 * 13 *", "bad month field '13'"),
        ("0 0 * * funday", "bad day of week field 'funday'"),
    ],
)
def test_bad_cron_is_refused_naming_the_field(cron, message):
    data = {**BASE_FILE, "trigger": {"type": "schedule", "cron": cron, "segment": "s"}}
    [(path, got)] = errors_of(data)
    assert path == "trigger.cron"
    assert message in got


def test_cron_fields_names_the_five_fields():
    assert cron_fields("*/15 9-17 * * mon-fri") == {
        "minute": "*/15",
        "hour": "9-17",
        "day_of_month": "*",
        "month_of_year": "*",
        "day_of_week": "mon-fri",
    }


def test_an_unknown_trigger_type_is_refused():
    [(path, message)] = errors_of({**BASE_FILE, "trigger": {"type": "webhook"}})
    assert path == "trigger.type"
    assert "unknown trigger type 'webhook'" in message


@pytest.mark.parametrize(
    ("node", "path", "fragment"),
    [
        ({"type": "webhook", "url": "ftp://example.com/x"}, "nodes[n].url", "http:// or https://"),
        ({"type": "webhook", "url": "https://"}, "nodes[n].url", "with a host"),
        ({"type": "wait_until", "time": "24:00"}, "nodes[n].time", "HH:MM"),
        ({"type": "wait_until", "time": "09:00", "weekdays": ["moon"]}, "nodes[n].weekdays[0]", ""),
        ({"type": "wait_until", "time": "09:00", "weekdays": []}, "nodes[n].weekdays", "one day"),
        ({"type": "email", "template": "t", "over_cap": "drop"}, "nodes[n].over_cap", "'skip'"),
        ({"type": "split", "branches": [{"weight": 1}]}, "nodes[n].branches", "at least 2"),
        (
            {"type": "split", "branches": [{"weight": 0}, {"weight": 1}]},
            "nodes[n].branches[0].weight",
            "at least 1",
        ),
        ({"type": "update_traits", "traits": {}}, "nodes[n].traits", "at least one trait"),
        ({"type": "update_traits", "traits": {"bad name": 1}}, "nodes[n].traits", "trait name"),
        ({"type": "email"}, "nodes[n].template", "required"),
    ],
)
def test_bad_node_fields_are_refused_with_the_node_and_field(node, path, fragment):
    [(got_path, message)] = errors_of(with_nodes({"id": "n", **node}))
    assert got_path == path
    assert fragment in message


def test_nps_survey_nodes_are_accepted_with_a_survey_and_a_channel():
    # Whether the survey exists is checked with the references (tests/surveys).
    data = with_nodes({"id": "ask", "type": "nps_survey", "survey": "nps", "channel": "email"})
    node = parse_journey(data, check_refs=False).node("ask")
    assert (node.survey, node.channel) == ("nps", "email")
    data["nodes"][0]["channel"] = "fax"
    assert paths_of(data) == ["nodes[ask].channel"]


def test_top_level_values_are_checked():
    data = {**BASE_FILE, "holdout_percent": 101, "reentry": {"policy": "after"}, "slug": "a b"}
    assert dict(errors_of(data)) == {
        "slug": "must be a slug of letters, digits, _ or - (got 'a b')",
        "reentry": "'after' needs days",
        "holdout_percent": "must be at most 100 (got 101)",
    }


def test_exit_on_segment_exit_needs_a_segment_trigger():
    data = {**BASE_FILE, "exit_on_segment_exit": True}
    assert paths_of(data) == ["exit_on_segment_exit"]


def test_missing_required_fields_are_each_named():
    assert paths_of({"name": "x"}) == ["nodes", "slug", "trigger", "start"]


def test_not_an_object_is_refused():
    assert errors_of([1, 2]) == [("journey", "must be a JSON object, got a list")]


def test_every_problem_is_listed_at_once():
    data = with_nodes(
        {"id": "a", "type": "email", "template": "t", "next": "b", "bogus": 1},
        {"id": "b", "type": "wait", "duration": {"days": 0}, "next": "c"},
        {"id": "c", "type": "webhook", "url": "mailto:x"},
        {"id": "d", "type": "sms", "template": "s", "next": "zz"},
        holdout_percent=-1,
    )
    assert paths_of(data) == [
        "holdout_percent",
        "nodes[a].bogus",
        "nodes[b].duration",
        "nodes[c].url",
        "nodes[d].next",
    ]


# --- conditions and references ------------------------------------------------------------


def test_condition_errors_are_repathed_under_the_node():
    data = with_nodes(
        {
            "id": "check",
            "type": "branch",
            "condition": {"all": [{"trait": "plan", "op": "eqq", "value": "pro"}]},
            "yes": "x",
            "no": "x",
        },
        {"id": "x", "type": "exit"},
    )
    [(path, message)] = errors_of(data)
    assert path == "nodes[check].condition.all[0]"
    assert message.startswith("unknown op 'eqq'")


def test_a_bad_goal_is_refused_at_goal():
    [(path, message)] = errors_of({**BASE_FILE, "goal": {"event": "x", "op": "nope"}})
    assert path == "goal"
    assert "unknown op 'nope'" in message


@pytest.mark.django_db
def test_unknown_templates_are_refused_naming_the_node(template):
    data = copy.deepcopy(BASE_FILE)
    data["nodes"][0]["template"] = "welcom"
    assert errors_of(data, check_refs=True) == [
        ("nodes[welcome].template", "unknown template 'welcom'")
    ]


@pytest.mark.django_db
def test_a_template_of_the_other_channel_is_refused(make_template, template):
    make_template("sms-only", Channel.SMS)
    data = copy.deepcopy(BASE_FILE)
    data["nodes"][0]["template"] = "sms-only"
    [(path, message)] = errors_of(data, check_refs=True)
    assert path == "nodes[welcome].template"
    assert (
        message == "template 'sms-only' is an sms template; an email node needs an email template"
    )


@pytest.mark.django_db
def test_unknown_segments_are_refused_in_triggers_and_conditions(template, segment):
    data = copy.deepcopy(BASE_FILE)
    data["trigger"] = {"type": "segment_entered", "segment": "trial"}
    data["nodes"][2]["condition"] = {"not": {"segment": "churned"}}
    assert errors_of(data, check_refs=True) == [
        ("nodes[check].condition.not", "unknown segment 'churned'"),
        ("trigger.segment", "unknown segment 'trial'"),
    ]
    data["trigger"]["segment"] = "trialing"
    data["nodes"][2]["condition"] = {"not": {"segment": "trialing"}}
    assert parse_journey(data).segment == "trialing"


def test_without_check_refs_nothing_is_looked_up():
    data = copy.deepcopy(BASE_FILE)
    data["trigger"] = {"type": "segment_entered", "segment": "nowhere"}
    assert parse_journey(data, check_refs=False).segment == "nowhere"


# --- the canonical form -----------------------------------------------------------------------


def test_the_canonical_form_orders_keys_and_is_a_fixed_point():
    data = copy.deepcopy(BASE_FILE)
    data["reentry"] = "never"
    data["nodes"][0] = {"next": "wait1", "template": "welcome", "type": "email", "id": "welcome"}
    data["nodes"][2]["condition"] = {"op": "since_enrolled", "event": "activated"}
    canonical = canonical_journey(parse_journey(data, check_refs=False))
    assert canonical["reentry"] == {"policy": "never"}
    assert list(canonical["nodes"][0]) == ["id", "type", "next", "template"]
    assert list(canonical["nodes"][2]["condition"]) == ["event", "op"]
    assert canonical_journey(parse_journey(canonical, check_refs=False)) == canonical
    assert "description" not in canonical  # what the file did not say stays unsaid
