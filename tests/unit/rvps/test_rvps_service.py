"""ReferenceValueProvider on the real stores: register, query, expiry, admin view."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from custodes._internal.clock import FrozenClock
from custodes.errors import NotFound, ReferenceValueError, StorageError
from custodes.rvps.service import ReferenceValueProvider
from custodes.storage.base import NS_REFERENCE_VALUES, Store
from custodes.storage.memory import MemoryStore
from custodes.storage.sqlite import SqliteStore

T0 = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
DAY = 86_400.0


def _message(values: object, **fields: object) -> dict[str, object]:
    payload = base64.b64encode(json.dumps(values).encode()).decode()
    return {"version": "0.1.0", "type": "sample", "payload": payload, **fields}


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "kv.db")
    yield s
    s.close()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
def rvps(store: Store, clock: FrozenClock) -> ReferenceValueProvider:
    return ReferenceValueProvider(store, clock)


def test_register_and_query(rvps: ReferenceValueProvider) -> None:
    ids = rvps.register(_message({"svn": ["1"], "major_version": 1, "cfg": {"k": [True]}}))
    assert ids == ["svn", "major_version", "cfg"]
    assert rvps.query("svn") == ["1"]
    assert rvps.query("major_version") == 1
    assert rvps.query("cfg") == {"k": [True]}
    assert rvps.query("unknown") is None
    assert rvps.list() == ["cfg", "major_version", "svn"]


def test_register_overwrites(rvps: ReferenceValueProvider) -> None:
    rvps.register(_message({"svn": ["1"]}))
    rvps.register(_message({"svn": ["2", "3"]}))
    assert rvps.query("svn") == ["2", "3"]


def test_null_value_is_stored(rvps: ReferenceValueProvider) -> None:
    rvps.register(_message({"empty": None}))
    assert rvps.get("empty").value is None
    assert rvps.query("empty") is None


def test_stored_in_upstream_form(rvps: ReferenceValueProvider, store: Store) -> None:
    rvps.register(_message({"svn": ["1"]}))
    raw = store.get(NS_REFERENCE_VALUES, "svn", now=T0)
    assert raw is not None
    assert json.loads(raw) == {
        "version": "0.1.0",
        "name": "svn",
        "expiration": "2027-03-01T00:00:00Z",
        "value": ["1"],
    }


def test_default_expiry_is_enforced(
    rvps: ReferenceValueProvider, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    rvps.register(_message({"svn": ["1"]}))
    clock.advance(365 * DAY - 1)
    assert rvps.query("svn") == ["1"]
    clock.advance(1)
    with caplog.at_level(logging.WARNING, logger="custodes.rvps.service"):
        assert rvps.query("svn") is None
    assert any("'svn'" in r.getMessage() and "expired" in r.getMessage() for r in caplog.records)
    # The admin still sees it, with its expiration.
    rv = rvps.get("svn")
    assert rv.value == ["1"]
    assert rv.expiration == datetime(2027, 3, 1, tzinfo=UTC)
    assert rvps.list() == ["svn"]


def test_explicit_expiry(rvps: ReferenceValueProvider, clock: FrozenClock) -> None:
    rvps.register(_message({"svn": ["1"]}, expiration="2026-03-02T00:00:00Z"))
    assert rvps.query("svn") == ["1"]
    clock.advance(DAY)
    assert rvps.query("svn") is None
    # Re-registering renews it.
    rvps.register(_message({"svn": ["1"]}))
    assert rvps.query("svn") == ["1"]


def test_get_unknown_is_not_found(rvps: ReferenceValueProvider) -> None:
    with pytest.raises(NotFound):
        rvps.get("svn")


def test_invalid_ids(rvps: ReferenceValueProvider) -> None:
    assert rvps.query("a/../b") is None
    assert rvps.query("") is None
    with pytest.raises(ReferenceValueError):
        rvps.get("a b")


def test_bad_message_registers_nothing(rvps: ReferenceValueProvider) -> None:
    with pytest.raises(ReferenceValueError):
        rvps.register(_message({"good": 1, "bad id": 2}))
    assert rvps.list() == []


def test_corrupt_stored_value_is_a_storage_error(
    rvps: ReferenceValueProvider, store: Store
) -> None:
    store.set(NS_REFERENCE_VALUES, "svn", b"not json")
    with pytest.raises(StorageError):
        rvps.query("svn")
    store.set(NS_REFERENCE_VALUES, "svn", b'{"value": 1}')
    with pytest.raises(StorageError):
        rvps.get("svn")


def test_snapshot_follows_changes_made_by_another_replica(store: Store, clock: FrozenClock) -> None:
    here = ReferenceValueProvider(store, clock)
    there = ReferenceValueProvider(store, clock)  # another replica on the same store
    here.register(_message({"svn": ["1"]}))
    assert here.snapshot() == {"svn": ["1"]}
    assert here.snapshot() == {"svn": ["1"]}  # unchanged: from the cache
    there.register(_message({"svn": ["2"], "cfg": 1}))
    assert here.snapshot() == {"svn": ["2"], "cfg": 1}
    assert there.add_to_list("svn", "3")
    assert here.snapshot()["svn"] == ["2", "3"]
    assert here.list() == ["cfg", "svn"]  # the change marker is not a reference value


def test_snapshot_hides_expired_values(rvps: ReferenceValueProvider, clock: FrozenClock) -> None:
    rvps.register(_message({"svn": ["1"]}, expiration="2026-03-02T00:00:00Z"))
    assert rvps.snapshot() == {"svn": ["1"]}
    clock.advance(2 * DAY)
    assert rvps.snapshot() == {}
