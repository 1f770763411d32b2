"""The fast JCS writer against the reference (``rfc8785``): the same bytes, or the same
refusal, for every value."""

from __future__ import annotations

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from custodes._internal import jcs
from custodes.types.json import Json

# Every character, lone surrogates included (the reference refuses them).
_TEXT = st.text(st.characters(codec=None, categories=None))
_KEYS = st.one_of(st.text(max_size=6), _TEXT)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(allow_nan=True, allow_infinity=True),
    _TEXT,
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(_KEYS, inner, max_size=5)),
    max_leaves=25,
)


def _reference(value: Json) -> bytes | type[Exception]:
    try:
        out: bytes = rfc8785.dumps(value)
    except Exception as e:
        return type(e)
    return out


def _fast(value: Json) -> bytes | type[Exception]:
    try:
        return jcs.dumps(value)
    except Exception as e:
        return type(e)


@settings(max_examples=2000, deadline=None)
@given(_VALUES)
def test_same_bytes_or_same_refusal_as_the_reference(value: Json) -> None:
    assert _fast(value) == _reference(value)


def test_the_cases_where_the_standard_encoder_differs_from_jcs() -> None:
    # Each of these is written differently by json.dumps: the fast path must not take them.
    cases: list[Json] = [
        {"a": 1.0},  # JCS: 1
        [1e-07],  # JCS: 1e-7
        [123456789012345680000.0],  # JCS: 123456789012345680000
        {"\U0001f600": 1, "\uff01": 2},  # UTF-16 order puts the emoji first
        [2**53],  # outside the safe integers: refused
        ["a\ud800"],  # a lone surrogate: refused
    ]
    for value in cases:
        assert _fast(value) == _reference(value), value
    assert jcs.dumps({"\U0001f600": 1, "\uff01": 2}) == rfc8785.dumps(
        {"\U0001f600": 1, "\uff01": 2}
    )


def test_plain_values_take_the_standard_encoder() -> None:
    value: Json = {"b": [1, True, None, "x\n\u2028\u007f"], "a": {"é": "ü"}}
    # Non-ASCII keys go to the reference; the bytes are the reference's either way.
    assert jcs.dumps(value) == rfc8785.dumps(value)
    plain: Json = {"b": [1, True, None, "x\n\u2028\u007f\x01"], "a": {"k": "ü"}}
    assert jcs._plain(plain)
    assert jcs.dumps(plain) == rfc8785.dumps(plain)
