"""ReferenceValueProvider.add_to_list (how an enrolled TPM AK joins trusted_aks): atomic on the
real stores, never undoes a concurrent admin change, never revives an expired value."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from custodes._internal.clock import FrozenClock
from custodes.errors import ReferenceValueError, StorageError
from custodes.rvps.service import ReferenceValueProvider
from custodes.storage.base import Store
from custodes.storage.memory import MemoryStore
from custodes.storage.sqlite import SqliteStore

T0 = datetime(2026, 3, 1, tzinfo=UTC).timestamp()


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


def test_creates_then_appends(rvps: ReferenceValueProvider) -> None:
    assert rvps.add_to_list("trusted_aks", "a") is True
    stored = rvps.get("trusted_aks")
    assert stored.value == ["a"]
    assert stored.expiration == datetime.fromtimestamp(T0, UTC) + timedelta(days=365)
    assert rvps.add_to_list("trusted_aks", "b") is True
    assert rvps.add_to_list("trusted_aks", "a") is False
    assert rvps.query("trusted_aks") == ["a", "b"]


def test_keeps_the_admins_values_and_expiration(rvps: ReferenceValueProvider) -> None:
    rvps.register(_message({"trusted_aks": ["admin"]}, expiration="2026-04-01T00:00:00Z"))
    rvps.add_to_list("trusted_aks", "enrolled")
    stored = rvps.get("trusted_aks")
    assert stored.value == ["admin", "enrolled"]
    assert stored.expiration == datetime(2026, 4, 1, tzinfo=UTC)


def test_an_expired_value_is_not_revived(rvps: ReferenceValueProvider, clock: FrozenClock) -> None:
    rvps.register(_message({"trusted_aks": ["old"]}, expiration="2026-03-02T00:00:00Z"))
    clock.advance(2 * 86_400)
    assert rvps.query("trusted_aks") is None
    rvps.add_to_list("trusted_aks", "new")
    assert rvps.query("trusted_aks") == ["new"]


def test_refusals(rvps: ReferenceValueProvider) -> None:
    rvps.register(_message({"trusted_aks": "not a list"}))
    with pytest.raises(ReferenceValueError, match="not a list"):
        rvps.add_to_list("trusted_aks", "a")
    with pytest.raises(ReferenceValueError, match="invalid reference value id"):
        rvps.add_to_list("../x", "a")


class Interleaving:
    """A real store on which ``before_write`` runs just before each write of add_to_list: the
    only way to put a concurrent admin change between its read and its write. ``times`` writes
    are interleaved, then the store behaves normally."""

    def __init__(self, inner: Store, before_write: Callable[[], object], times: int) -> None:
        self.inner = inner
        self.before_write = before_write
        self.times = times

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def _interleave(self) -> None:
        if self.times > 0:
            self.times -= 1
            self.before_write()

    def insert(self, *args: Any, **kwargs: Any) -> bool:
        self._interleave()
        return self.inner.insert(*args, **kwargs)

    def compare_and_swap(self, *args: Any, **kwargs: Any) -> bool:
        self._interleave()
        return self.inner.compare_and_swap(*args, **kwargs)


@pytest.mark.parametrize("existing", [None, ["admin-old"]])
def test_a_concurrent_admin_change_is_never_undone(
    store: Store, clock: FrozenClock, existing: list[str] | None
) -> None:
    admin = ReferenceValueProvider(store, clock)
    if existing is not None:
        admin.register(_message({"trusted_aks": existing}))
    # The admin replaces the list (dropping admin-old) between the broker's read and write.
    racing = Interleaving(
        store, lambda: admin.register(_message({"trusted_aks": ["admin-new"]})), times=1
    )
    broker = ReferenceValueProvider(racing, clock)  # type: ignore[arg-type]
    assert broker.add_to_list("trusted_aks", "enrolled") is True
    assert admin.query("trusted_aks") == ["admin-new", "enrolled"]


def test_gives_up_when_the_value_keeps_changing(store: Store, clock: FrozenClock) -> None:
    admin = ReferenceValueProvider(store, clock)
    admin.register(_message({"trusted_aks": []}))
    changes = iter(range(1000))
    racing = Interleaving(
        store,
        lambda: admin.register(_message({"trusted_aks": [str(next(changes))]})),
        times=1000,
    )
    broker = ReferenceValueProvider(racing, clock)  # type: ignore[arg-type]
    with pytest.raises(StorageError, match="kept changing"):
        broker.add_to_list("trusted_aks", "enrolled")
    assert "enrolled" not in str(admin.query("trusted_aks"))
