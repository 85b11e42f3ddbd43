"""No input makes the builder API answer 500 (issue 15): deep nesting, NUL
characters, numbers no duration can hold, odd path and query values. Each
is a 400 naming the field."""

import copy
import json

import pytest

from .conftest import BASE_FILE, T0  # noqa: F401

pytestmark = pytest.mark.django_db


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def raw_put(api, path: str, text: str):
    return api.client.put(api._url(path), data=text, content_type="application/json")


def raw_post(api, path: str, text: str):
    return api.client.post(api._url(path), data=text, content_type="application/json")


def assert_400_naming(response, *words: str) -> dict:
    assert response.status_code == 400, (response.status_code, response.content[:300])
    body = response.json()
    for word in words:
        assert word in json.dumps(body), (word, body)
    return body


@pytest.fixture
def live(make_journey, sendable):
    return make_journey()


@pytest.mark.parametrize(
    "path,method",
    [
        ("journeys/onboarding/draft", "put"),
        ("journeys/onboarding/validate", "post"),
        ("journeys", "post"),
        ("journeys/onboarding/publish", "post"),
        ("journeys/onboarding/backtest", "post"),
        ("conditions/check", "post"),
    ],
)
def test_a_deeply_nested_body_is_a_400(api, live, path, method):
    send = raw_put if method == "put" else raw_post
    response = send(api, path, nested(100_000))

    assert_400_naming(response, "body", "nested")


def test_a_deeply_nested_node_field_is_a_400_naming_the_node(api, live):
    data = copy.deepcopy(BASE_FILE)
    data["nodes"][1]["duration"] = "DEEP"
    text = json.dumps(data).replace('"DEEP"', nested(200))

    response = raw_put(api, "journeys/onboarding/draft", text)

    assert_400_naming(response, "nodes[wait1].duration", "nested more than 64 levels deep")


def test_a_condition_nested_within_the_body_limit_but_too_deep_to_check_is_a_400(api, live):
    depth = 300  # under the body's nesting limit, over what a condition may nest
    text = '{"condition": ' + '{"not": ' * depth + '{"trait": "plan", "op": "exists"}'
    text += "}" * depth + "}"

    response = raw_post(api, "conditions/check", text)

    assert response.status_code in (200, 400)
    assert response.json().get("valid") is not True


@pytest.mark.parametrize(
    "field,value",
    [
        ("name", "On\x00boarding"),
        ("slug", "onboarding\x00"),
    ],
)
def test_a_nul_character_in_a_draft_is_a_400_naming_the_field(api, live, field, value):
    data = copy.deepcopy(BASE_FILE)
    data[field] = value

    response = api.put("journeys/onboarding/draft", data)

    assert_400_naming(response, field)


def test_a_nul_character_in_a_node_is_a_400_naming_the_node(api, live):
    data = copy.deepcopy(BASE_FILE)
    data["nodes"][1]["ui"] = {"x": 1, "y": 2, "label": "wa\x00it"}

    response = api.put("journeys/onboarding/draft", data)

    assert_400_naming(response, "nodes[wait1]", "NUL")


@pytest.mark.parametrize(
    "duration",
    [{"days": 1e20}, {"days": 10**20}, {"hours": 10**30}, {"minutes": 2**64}, {"days": -(10**20)}],
)
def test_a_duration_no_clock_can_hold_is_a_400_naming_the_node(api, live, duration):
    data = copy.deepcopy(BASE_FILE)
    data["nodes"][1]["duration"] = duration

    response = api.put("journeys/onboarding/draft", data)

    assert_400_naming(response, "nodes[wait1].duration")


def test_a_backtest_with_huge_numbers_is_a_400_naming_the_field(api, live):
    response = api.post("journeys/onboarding/backtest", {"days": 10**30})
    assert_400_naming(response, "days")


@pytest.mark.parametrize("node", ["%00", "a%00b", "%ff%fe", "x" * 5000])
def test_an_odd_node_id_in_the_path_is_a_400_or_404_never_a_500(api, live, node):
    response = api.client.get(f"/builder/api/journeys/onboarding/nodes/{node}/customers")

    assert response.status_code in (400, 404), response.content[:300]
    assert "node" in response.json()["error"]


@pytest.mark.parametrize("term", ["%00", "ada%00", "%ED%A0%80", "x" * 5000])
def test_an_odd_preview_customer_is_a_400_naming_the_field(api, live, term):
    response = api.client.get(f"/builder/api/templates/welcome/preview?customer={term}")

    assert_400_naming(response, "customer")


def test_a_metric_with_a_nul_is_a_400_naming_it(api, live):
    response = api.get("journeys/onboarding/nodes/wait1/customers", metric="wait\x00ing")
    assert_400_naming(response, "metric")


def test_a_webhook_to_the_metadata_service_is_refused_on_save_naming_the_node(api, live):
    data = copy.deepcopy(BASE_FILE)
    data["nodes"][0]["next"] = "leak"
    welcome_next = BASE_FILE["nodes"][0]["next"]
    data["nodes"].append(
        {"id": "leak", "type": "webhook", "url": "http://169.254.169.254/", "next": welcome_next}
    )

    response = api.put("journeys/onboarding/draft", data)

    body = assert_400_naming(response, "may not post to 169.254.169.254")
    assert [(e["node"], e["field"]) for e in body["errors"]] == [("leak", "url")]
