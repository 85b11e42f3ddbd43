"""The checks and the bounded display of JSON (apps/core/jsonsafe.py)."""

import json

import pytest

from apps.core.jsonsafe import ELLIPSIS, DeepJSONDecoder, preview, problem


def nested(depth: int):
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ({"a": {"b": "x\x00"}}, "traits.a.b: contains a NUL"),
        ({"a\x00": 1}, "traits: a key contains a NUL"),
        ({"a": [1, 2, "\udc00"]}, "traits.a.2: contains a lone surrogate"),
        ({"a": float("nan")}, "traits.a: must be a finite number"),
        ({"a": [float("-inf")]}, "traits.a.0: must be a finite number"),
        (nested(33), "traits" + ".a" * 32 + ": is nested too deeply"),
    ],
)
def test_problems_are_named_by_their_path(value, found):
    assert problem(value, "traits", max_depth=32).startswith(found)


def test_storable_json_has_no_problem():
    value = {"plan": "pro", "n": 1.5, "ok": True, "none": None, "tags": ["é", "ü"], **nested(31)}

    assert problem(value, "traits", max_depth=32) is None


def test_a_preview_is_bounded_and_says_where_it_was_cut():
    text, cut = preview({"deep": nested(900), "long": "x" * 100_000, "many": list(range(10_000))})

    assert cut
    assert len(text) < 25_000
    assert "{" + ELLIPSIS + "}" in text


def test_a_small_value_is_shown_whole_with_sorted_keys():
    assert preview({"b": 1, "a": [True, None, "é"]}) == (
        json.dumps({"a": [True, None, "é"], "b": 1}, indent=2, ensure_ascii=False).replace(
            '"é"', '"\\u00e9"'
        ),
        False,
    )


def test_deep_json_is_read_even_from_a_deep_stack():
    text = json.dumps(nested(900))

    def deep_read(levels: int):
        if levels:
            return deep_read(levels - 1)
        return json.loads(text, cls=DeepJSONDecoder)

    assert deep_read(400) == nested(900)
