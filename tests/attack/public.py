"""Shared pieces of the public-endpoint attacks: arbitrary bytes as tokens,
query strings and form bodies (percent-encoded, so NUL, invalid UTF-8 and
lone surrogates' encodings reach the view), valid tokens for real rows and
their mutations, and the row counts that show whether anything was written."""

from urllib.parse import quote_from_bytes

from django.apps import apps
from hypothesis import strategies as st

OUR_APPS = {"customers", "messaging", "journeys", "tracking", "surveys", "segments"}

# Text a person or a scanner might put anywhere: the odd characters first.
ODD = st.sampled_from(
    [b"\x00", b"\xff", b"\xed\xa0\x80", b"%", b"%00", b"../", b"'", b'"', b"<", b"\n", b"9" * 30]
)
any_bytes = st.one_of(
    st.binary(max_size=64),
    st.lists(ODD, min_size=1, max_size=4).map(b"".join),
    st.text(max_size=40).map(lambda s: s.encode("utf-8", "surrogatepass")),
)


def mutated(token: str) -> st.SearchStrategy[bytes]:
    """A valid token, whole, cut short, with a byte changed or with something added."""
    raw = token.encode()
    return st.one_of(
        st.just(raw),
        st.integers(0, max(len(raw) - 1, 0)).map(lambda n: raw[:n]),
        st.tuples(st.integers(0, max(len(raw) - 1, 0)), st.binary(min_size=1, max_size=1)).map(
            lambda p: raw[: p[0]] + p[1] + raw[p[0] + 1 :]
        ),
        any_bytes.map(lambda extra: raw + extra),
    )


def encoded(value: bytes) -> str:
    return quote_from_bytes(value, safe=b"")


def form_body(pairs: list[tuple[bytes, bytes]]) -> str:
    return "&".join(f"{encoded(k)}={encoded(v)}" for k, v in pairs)


def row_counts() -> dict[str, int]:
    return {
        model._meta.label: model._default_manager.count()
        for model in apps.get_models()
        if model._meta.app_label in OUR_APPS
    }


def changed(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after if after[k] != before.get(k)}
