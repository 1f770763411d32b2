"""Fuzz reference-value registration messages (Trustee's RVPS wire format and custodes'
``expiration`` extension) and the stored form read back."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import cast

from fuzz_support import (
    FUZZ,
    HOSTILE_JSON,
    KEEP_FAILURES_READABLE,
    check,
    json_inputs,
    mutated,
    mutated_member,
)
from hypothesis import given
from hypothesis import strategies as st

from custodes._internal.b64 import b64std_decode, b64std_encode
from custodes.rvps.messages import ReferenceValue, parse_message
from custodes.types.json import Json, JsonObject

pytest_plugins = ["fuzz_report"]
pytestmark = KEEP_FAILURES_READABLE

NOW = datetime(2026, 1, 1, tzinfo=UTC)
VALUES = {"svn": ["1"], "launch_digest": ["abcde"], "major_version": 1}
MESSAGES: list[JsonObject] = [
    {"version": "0.1.0", "type": "sample", "payload": b64std_encode(json.dumps(VALUES).encode())},
    {
        "type": "sample",
        "payload": b64std_encode(b'{"snp_launch_measurement": ["00ff"]}'),
        "expiration": "2027-01-01T00:00:00+00:00",
    },
]


def test_seeds_parse() -> None:
    assert [len(parse_message(m, now=NOW)) for m in MESSAGES] == [3, 1]


@FUZZ
@given(
    message=st.one_of(
        json_inputs(MESSAGES),
        mutated_member(MESSAGES[0], ("payload",), b64std_decode, b64std_encode),
        st.sampled_from(HOSTILE_JSON).map(lambda b: {**MESSAGES[0], "payload": b64std_encode(b)}),
        mutated([b"2027-01-01T00:00:00+00:00"]).map(
            lambda b: {**MESSAGES[1], "expiration": b.decode("latin-1")}
        ),
    )
)
def test_fuzz_rvps_message(message: object) -> None:
    def parse(obj: object) -> list[ReferenceValue]:
        values = parse_message(cast(Json, obj), now=NOW)
        for value in values:  # what is registered is stored and read back
            assert ReferenceValue.from_stored_json(value.to_stored_json()) == value
        return values

    check("rvps.message", parse, message, list)
