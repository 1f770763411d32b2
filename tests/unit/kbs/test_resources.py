"""The resource repository: round trips, NotFound, and corrupt stored records."""

from __future__ import annotations

import json

import pytest

from custodes._internal.clock import FrozenClock
from custodes.errors import NotFound, StorageError
from custodes.kbs.resources import ResourceInfo, ResourceRepository
from custodes.protocol.resource import ResourcePath
from custodes.storage.base import NS_RESOURCES
from custodes.storage.memory import MemoryStore
from custodes.types.secret import Secret

START = 1_700_000_000.5
PATH = ResourcePath("default", "key", "one")


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
def repo(store: MemoryStore, clock: FrozenClock) -> ResourceRepository:
    return ResourceRepository(store, clock)


def test_put_get(repo: ResourceRepository) -> None:
    info = repo.put(PATH, Secret(b"s3cret\x00\xff"))
    assert info == ResourceInfo("default/key/one", 8, START)
    got = repo.get(PATH)
    assert isinstance(got, Secret)
    assert got.reveal() == b"s3cret\x00\xff"


def test_put_empty(repo: ResourceRepository) -> None:
    repo.put(PATH, Secret(b""))
    assert repo.get(PATH).reveal() == b""
    assert repo.info(PATH).size == 0


def test_put_overwrites(repo: ResourceRepository, clock: FrozenClock) -> None:
    repo.put(PATH, Secret(b"one"))
    clock.advance(10)
    repo.put(PATH, Secret(b"second"))
    assert repo.get(PATH).reveal() == b"second"
    assert repo.info(PATH) == ResourceInfo(str(PATH), 6, START + 10)


def test_info(repo: ResourceRepository, clock: FrozenClock) -> None:
    repo.put(PATH, Secret(b"x" * 1000))
    clock.advance(100)
    assert repo.info(PATH) == ResourceInfo("default/key/one", 1000, START)


def test_stored_record_does_not_hold_the_plain_value(
    repo: ResourceRepository, store: MemoryStore
) -> None:
    repo.put(PATH, Secret(b"plain-value"))
    raw = store.get(NS_RESOURCES, str(PATH), now=START)
    assert raw is not None
    record = json.loads(raw)
    assert record["v"] == 1
    assert b"plain-value" not in raw


def test_delete(repo: ResourceRepository) -> None:
    repo.put(PATH, Secret(b"v"))
    repo.delete(PATH)
    with pytest.raises(NotFound):
        repo.get(PATH)
    with pytest.raises(NotFound):
        repo.delete(PATH)


def test_list(repo: ResourceRepository) -> None:
    assert repo.list() == []
    for p in ("b/t/x", "a/t/y", "a/t/x"):
        repo.put(ResourcePath.parse(p), Secret(b"v"))
    assert repo.list() == ["a/t/x", "a/t/y", "b/t/x"]


@pytest.mark.parametrize("op", ["get", "info", "delete"])
def test_missing_is_not_found(repo: ResourceRepository, op: str) -> None:
    repo.put(ResourcePath("default", "key", "other"), Secret(b"v"))
    with pytest.raises(NotFound):
        getattr(repo, op)(PATH)


CORRUPT = [
    b"",
    b"not json",
    b"\xff\xfe",
    b"[]",
    b'"string"',
    b"{}",
    b'{"v": 2, "updated": 1, "data": "AA=="}',
    b'{"v": 1, "updated": 1}',
    b'{"v": 1, "updated": 1, "data": null}',
    b'{"v": 1, "updated": 1, "data": 5}',
    b'{"v": 1, "updated": 1, "data": "not base64!"}',
    b'{"v": 1, "updated": 1, "data": "AA"}',
    b'{"v": 1, "updated": 1, "data": "QR=="}',
]


@pytest.mark.parametrize("raw", CORRUPT)
@pytest.mark.parametrize("op", ["get", "info"])
def test_corrupt_record_is_storage_error(
    repo: ResourceRepository, store: MemoryStore, raw: bytes, op: str
) -> None:
    store.set(NS_RESOURCES, str(PATH), raw)
    with pytest.raises(StorageError):
        getattr(repo, op)(PATH)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"v": 1, "data": "AA=="}',
        b'{"v": 1, "updated": "yesterday", "data": "AA=="}',
        b'{"v": 1, "updated": true, "data": "AA=="}',
        b'{"v": 1, "updated": null, "data": "AA=="}',
    ],
)
def test_corrupt_update_time_is_storage_error(
    repo: ResourceRepository, store: MemoryStore, raw: bytes
) -> None:
    store.set(NS_RESOURCES, str(PATH), raw)
    with pytest.raises(StorageError):
        repo.info(PATH)
    # The data itself is intact, so get() still serves it.
    assert repo.get(PATH).reveal() == b"\x00"


def test_corrupt_record_can_be_deleted(repo: ResourceRepository, store: MemoryStore) -> None:
    store.set(NS_RESOURCES, str(PATH), b"not json")
    repo.delete(PATH)
    assert repo.list() == []
