"""Journey files (apps/journeys/graph/, imported by journey_import) mutated
from a valid one: any file is either refused with a JourneyError listing
(path, message) pairs, writing nothing, or imports (and publishes when
asked). Never another exception."""

import copy
from datetime import UTC, datetime

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from apps.journeys.graph import JourneyError
from apps.journeys.services import journey_import
from apps.messaging.models import Channel, Template
from apps.segments.models import Segment
from tests.attack.conftest import rolled_back, shows
from tests.attack.public import changed, row_counts
from tests.journeys.conftest import BASE_FILE

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

odd = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["", "\x00", "welcome", "done", "nudge", "x" * 300, "0 9 * * 1",
                     "61 25 * * 8", "* * * * * *", "http://127.0.0.1:6379/", "ftp://x",
                     "http://169.254.169.254/latest/meta-data", "https://example.com/hook",
                     "10:00", "25:99", 2**63, 10**20, -1]),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=5), st.integers()),
)  # fmt: skip
durations = st.one_of(
    st.fixed_dictionaries(
        {"days": st.integers(0, 4000)}, optional={"minutes": st.integers(0, 10**6)}
    ),
    st.dictionaries(
        st.sampled_from(["days", "hours", "minutes", "weeks"]),
        st.one_of(st.integers(-1, 10**12), odd),
        max_size=3,
    ),
)
NODE_TYPES = ["email", "sms", "wait", "wait_until", "wait_for_event", "branch", "split",
              "update_traits", "webhook", "exit", "nps_survey", "emial"]  # fmt: skip
FIELDS = ["id", "type", "template", "next", "yes", "no", "duration", "timeout", "time",
          "weekdays", "event", "where", "condition", "branches", "traits", "url", "method",
          "survey", "ui", "colour"]  # fmt: skip


@st.composite
def journey_files(draw):
    data = copy.deepcopy(BASE_FILE)
    # Few mutations, mostly of one kind: a good share of files stay importable.
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2, 3]))):
        what = draw(st.sampled_from(["node field", "new node", "drop node", "top field",
                                     "trigger", "duration", "duration", "duration"]))  # fmt: skip
        nodes = data["nodes"] if isinstance(data.get("nodes"), list) else []
        if what == "node field" and nodes:
            node = draw(st.sampled_from(nodes))
            if isinstance(node, dict):
                node[draw(st.sampled_from(FIELDS))] = draw(st.one_of(odd, durations))
        elif what == "new node":
            node = {"id": draw(st.sampled_from(["n1", "n2", "welcome", "\x00", ""])),
                    "type": draw(st.sampled_from(NODE_TYPES))}  # fmt: skip
            for field in draw(st.lists(st.sampled_from(FIELDS[2:]), max_size=4, unique=True)):
                node[field] = draw(st.one_of(odd, durations))
            nodes.append(node)
            if draw(st.booleans()) and nodes:
                nodes[0]["next"] = node["id"]
        elif what == "drop node" and nodes:
            nodes.pop(draw(st.integers(0, len(nodes) - 1)))
        elif what == "top field":
            key = draw(st.sampled_from([*BASE_FILE, "owner"]))
            data[key] = draw(odd)
        elif what == "trigger":
            data["trigger"] = draw(
                st.fixed_dictionaries(
                    {
                        "type": st.sampled_from(
                            [
                                "event",
                                "segment_entered",
                                "segment_exited",
                                "date_trait",
                                "schedule",
                                "nope",
                            ]
                        )
                    },
                    optional={
                        "event": odd,
                        "segment": odd,
                        "trait": odd,
                        "offset_days": odd,
                        "at": odd,
                        "cron": odd,
                        "where": odd,
                    },
                )
            )
        elif what == "duration" and nodes and isinstance(nodes[0], dict):
            # A wait right after the start, reachable: its duration is what is tried.
            nodes.insert(1, {"id": "w", "type": "wait", "duration": draw(durations),
                             "next": nodes[0].get("next")})  # fmt: skip
            nodes[0]["next"] = "w"
    return data


@pytest.fixture
def references(db):
    Template.objects.create(slug="welcome", name="W", channel=Channel.EMAIL, subject="Hi",
                            html="<p>Hi</p>")  # fmt: skip
    Template.objects.create(slug="activation-nudge", name="N", channel=Channel.SMS, body="Hi")
    Segment.objects.create(slug="trialing", name="T", definition={"trait": "plan", "op": "exists"})


@given(data=journey_files(), publish=st.booleans())
def test_any_journey_file_is_refused_with_its_paths_or_imports(references, data, publish):
    with shows(data=data, publish=publish), rolled_back():
        before = row_counts()
        try:
            journey_import(data, now=NOW, publish=publish)
            event("imported")
        except JourneyError as exc:
            assert exc.errors and all(
                isinstance(path, str) and isinstance(message, str) and message
                for path, message in exc.errors
            ), exc.errors
            assert not changed(before, row_counts()), "a refused file wrote rows"
            event("refused")
