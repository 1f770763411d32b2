"""RVPS registration messages and the stored reference-value form."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from custodes.errors import ReferenceValueError, StorageError
from custodes.rvps.messages import (
    DEFAULT_LIFETIME,
    ReferenceValue,
    check_reference_value_id,
    export_messages,
    parse_message,
    sample_message,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)


def _payload(obj: object) -> str:
    return base64.b64encode(json.dumps(obj).encode()).decode()


def _message(obj: object = None, **fields: object) -> dict[str, object]:
    values = {"svn": ["1"], "major_version": 1} if obj is None else obj
    return {"version": "0.1.0", "type": "sample", "payload": _payload(values), **fields}


def test_sample_message() -> None:
    values = parse_message(_message(), now=NOW)
    assert [(v.name, v.value) for v in values] == [("svn", ["1"]), ("major_version", 1)]
    expected = NOW.replace(microsecond=0) + DEFAULT_LIFETIME
    assert all(v.expiration == expected and v.version == "0.1.0" for v in values)


def test_version_defaults_to_0_1_0() -> None:
    message = _message()
    del message["version"]
    assert len(parse_message(message, now=NOW)) == 2


def test_kbs_client_style_message() -> None:
    # What `kbs-client set-sample-reference-value svn 1` sends: the value wrapped in a list.
    message = {"type": "sample", "payload": _payload({"svn": ["1"]})}
    (rv,) = parse_message(message, now=NOW)
    assert (rv.name, rv.value) == ("svn", ["1"])


def test_explicit_expiration() -> None:
    (rv,) = parse_message(_message({"a": 1}, expiration="2026-06-01T00:00:00+02:00"), now=NOW)
    assert rv.expiration == datetime(2026, 5, 31, 22, 0, 0, tzinfo=UTC)
    (rv,) = parse_message(_message({"a": 1}, expiration="2027-01-01T00:00:00Z"), now=NOW)
    assert rv.to_stored_json()["expiration"] == "2027-01-01T00:00:00Z"


@pytest.mark.parametrize(
    "expiration", ["2026-03-01T12:00:00Z", "2020-01-01T00:00:00Z", "2027-01-01T00:00:00", "soon", 5]
)
def test_bad_expiration(expiration: object) -> None:
    with pytest.raises(ReferenceValueError):
        parse_message(_message({"a": 1}, expiration=expiration), now=NOW)


@pytest.mark.parametrize(
    "message",
    [
        _message(version="0.2.0"),
        _message(type="swid"),
        _message(type="corim"),
        _message(type="in-toto"),
        _message(type=None),
        {"version": "0.1.0", "type": "sample"},  # no payload
        _message(payload="not base64!"),
        _message(payload=base64.urlsafe_b64encode(b'{"a":[">?"]}').decode().rstrip("=")),
        _message(payload=base64.b64encode(b"not json").decode()),
        _message(payload=base64.b64encode(b'{"a": NaN}').decode()),
        _message(payload=base64.b64encode(b"\xff\xfe").decode()),
        _message(payload=base64.b64encode(b"[" * 100_000).decode()),
        _message(payload=7),
        _message(["svn", "1"]),  # payload not an object
        _message("svn"),
        _message({}),  # names nothing
        _message({"bad id": 1}),
        _message({"a/../b": 1}),
        _message({"x" * 257: 1}),
        _message({"rvps:///x:tag": 1}),
        _message(extra="field"),
        ["not", "an", "object"],
        "{}",
    ],
)
def test_bad_messages(message: object) -> None:
    with pytest.raises(ReferenceValueError):
        parse_message(message, now=NOW)


def test_corim_says_not_supported_yet() -> None:
    with pytest.raises(ReferenceValueError, match="not supported yet"):
        parse_message(_message(type="corim"), now=NOW)


def test_swid_payload_that_is_not_a_rim_is_refused() -> None:
    # A sample payload sent as swid: decoded, then refused as a RIM (tests/unit/attestation/
    # verifiers/nvidia/test_nvidia_rim.py checks real and derived RIMs).
    with pytest.raises(ReferenceValueError, match="not well-formed XML"):
        parse_message(_message(type="swid"), now=NOW)


@pytest.mark.parametrize(
    "name", ["svn", "snp_launch_measurement", "a.b-c_d", "github.com/org/repo/x", "x" * 256]
)
def test_good_ids(name: str) -> None:
    assert check_reference_value_id(name) == name


def test_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        parse_message(_message(), now=datetime(2026, 1, 1))


def test_stored_form_round_trip() -> None:
    rv = ReferenceValue(
        name="svn",
        value=["1", 2, {"k": None}],
        expiration=datetime(2027, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    stored = rv.to_stored_json()
    assert stored == {
        "version": "0.1.0",
        "name": "svn",
        "expiration": "2027-01-02T03:04:05Z",
        "value": ["1", 2, {"k": None}],
    }
    assert ReferenceValue.from_stored_json(json.loads(json.dumps(stored))) == rv


def test_expired() -> None:
    rv = ReferenceValue(name="a", value=1, expiration=NOW)
    assert rv.expired(NOW) and rv.expired(NOW + timedelta(seconds=1))
    assert not rv.expired(NOW - timedelta(seconds=1))


@pytest.mark.parametrize(
    "stored",
    [
        None,
        {"name": "a", "value": 1},
        {"version": "0.1.0", "name": "a", "expiration": "tomorrow", "value": 1},
        {"version": "0.1.0", "name": 5, "expiration": "2027-01-02T03:04:05Z", "value": 1},
    ],
)
def test_bad_stored_form(stored: object) -> None:
    with pytest.raises(StorageError):
        ReferenceValue.from_stored_json(stored)


def test_sample_message_is_read_back_with_types_and_expiration() -> None:
    values = {"svn": ["1"], "major_version": 1, "debug": False, "digest": "00ab"}
    when = datetime(2027, 1, 31, tzinfo=UTC)
    message = sample_message(values, expiration=when)
    assert message["type"] == "sample" and message["version"] == "0.1.0"
    assert message["expiration"] == "2027-01-31T00:00:00Z"
    parsed = parse_message(message, now=NOW)
    assert {v.name: v.value for v in parsed} == values
    assert all(v.expiration == when for v in parsed)
    assert "expiration" not in sample_message(values)


def test_export_groups_by_expiration_and_leaves_out_expired_values() -> None:
    soon, later = NOW + timedelta(days=1), NOW + timedelta(days=30)
    soon, later = soon.replace(microsecond=0), later.replace(microsecond=0)
    stored = [
        ReferenceValue("svn", ["1"], later),
        ReferenceValue("major_version", 1, soon),
        ReferenceValue("launch_digest", ["abcde"], later),
        ReferenceValue("old", ["x"], NOW - timedelta(seconds=1)),
    ]
    messages = export_messages(stored, now=NOW)
    assert [m["expiration"] for m in messages] == [
        soon.strftime("%Y-%m-%dT%H:%M:%SZ"),
        later.strftime("%Y-%m-%dT%H:%M:%SZ"),
    ]
    back = [rv for m in messages for rv in parse_message(m, now=NOW)]
    assert sorted((rv.name, rv.value, rv.expiration) for rv in back) == [
        ("launch_digest", ["abcde"], later),
        ("major_version", 1, soon),
        ("svn", ["1"], later),
    ]
    assert export_messages([ReferenceValue("old", 1, NOW)], now=NOW) == []
