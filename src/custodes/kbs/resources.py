"""The resource repository: secrets stored by the workload admin, keyed ``repo/type/tag``."""

from __future__ import annotations

import json
from dataclasses import dataclass

from custodes._internal.b64 import b64std_decode, b64std_encode
from custodes._internal.clock import Clock
from custodes.errors import NotFound, StorageError
from custodes.protocol.resource import ResourcePath
from custodes.storage.base import NS_RESOURCES, Store
from custodes.types.secret import Secret

_FORMAT = 1


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    path: str
    size: int
    updated: float


class ResourceRepository:
    def __init__(self, store: Store, clock: Clock, namespace: str = NS_RESOURCES) -> None:
        self._ns = namespace
        self._store = store
        self._clock = clock

    def put(self, path: ResourcePath, data: Secret[bytes]) -> ResourceInfo:
        now = self._clock.now()
        record = {"v": _FORMAT, "updated": now, "data": b64std_encode(data.reveal())}
        self._store.set(self._ns, str(path), json.dumps(record).encode())
        return ResourceInfo(str(path), len(data), now)

    def _load(self, path: ResourcePath) -> dict[str, object]:
        raw = self._store.get(self._ns, str(path), now=self._clock.now())
        if raw is None:
            raise NotFound(f"resource {path} does not exist")
        try:
            record = json.loads(raw)
            if not isinstance(record, dict) or record.get("v") != _FORMAT:
                raise ValueError("unknown record format")
            return record
        except ValueError as e:
            raise StorageError(f"resource {path}: stored record is corrupt") from e

    def _data(self, path: ResourcePath, record: dict[str, object]) -> bytes:
        data = record.get("data")
        try:
            if not isinstance(data, str):
                raise ValueError("no data")
            return b64std_decode(data)
        except ValueError as e:
            raise StorageError(f"resource {path}: stored record is corrupt") from e

    def get(self, path: ResourcePath) -> Secret[bytes]:
        return Secret(self._data(path, self._load(path)))

    def info(self, path: ResourcePath) -> ResourceInfo:
        record = self._load(path)
        data, updated = self._data(path, record), record.get("updated")
        if not isinstance(updated, int | float) or isinstance(updated, bool):
            raise StorageError(f"resource {path}: stored record is corrupt")
        return ResourceInfo(str(path), len(data), float(updated))

    def delete(self, path: ResourcePath) -> None:
        if not self._store.delete(self._ns, str(path)):
            raise NotFound(f"resource {path} does not exist")

    def list(self) -> list[str]:
        return self._store.list(self._ns, now=self._clock.now())
