"""The Reference Value Provider Service: register, query and list reference values.

Values live in the store's ``reference_value`` namespace, one entry per id, in upstream's
stored form. Unlike upstream, expiry is enforced: an expired value is invisible to policies
(``query`` returns ``None`` and logs a warning naming the id) but stays visible to the admin
(``get``) until it is replaced.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from custodes._internal.clock import Clock
from custodes.errors import NotFound, ReferenceValueError, StorageError
from custodes.rvps.messages import (
    DEFAULT_LIFETIME,
    ReferenceValue,
    check_reference_value_id,
    parse_message,
)
from custodes.storage.base import NS_REFERENCE_VALUES, Store
from custodes.types.json import Json

if TYPE_CHECKING:
    from cryptography import x509

logger = logging.getLogger(__name__)

ADD_ATTEMPTS = 8  # compare-and-swap rounds of add_to_list before giving up


# A fresh random marker written after every change: readers of the whole set (policies, through
# :meth:`ReferenceValueProvider.snapshot`) read only this key while it is unchanged. Not a
# valid reference-value id ('#'), so it can never collide with one.
_VERSION_KEY: Final = "#version"


class ReferenceValueProvider:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        namespace: str = NS_REFERENCE_VALUES,
        *,
        rim_root: x509.Certificate | None = None,
    ) -> None:
        """``rim_root`` replaces NVIDIA's pinned RIM root for ``swid`` messages (tests)."""
        self._ns = namespace
        self._rim_root = rim_root
        self._store = store
        self._clock = clock
        self._snapshot: tuple[bytes | None, dict[str, ReferenceValue]] | None = None
        self._snapshot_lock = threading.Lock()

    def _changed(self) -> None:
        self._store.set(self._ns, _VERSION_KEY, secrets.token_hex(16).encode())

    def snapshot(self) -> dict[str, Json]:
        """Every value policies may see (unexpired), by id: what ``query`` answers, read with
        one store read while nothing changed (a change by any replica is seen at once)."""
        version = self._store.get(self._ns, _VERSION_KEY, now=self._clock.now())
        if version is None:  # a store written before the marker existed
            self._changed()
            version = self._store.get(self._ns, _VERSION_KEY, now=self._clock.now())
        cached = self._snapshot
        if cached is None or cached[0] != version:
            # Read the marker first, the values after: a change made meanwhile writes a new
            # marker, so a snapshot is never kept under a marker older than its values.
            values: dict[str, ReferenceValue] = {}
            for name in self.list():
                rv = self._load(name)
                if rv is not None:
                    values[name] = rv
            cached = (version, values)
            with self._snapshot_lock:
                self._snapshot = cached
        now = self._now()
        return {name: rv.value for name, rv in cached[1].items() if not rv.expired(now)}

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.now(), UTC)

    def register(self, message: Json) -> list[str]:
        """Store every value of ``message`` (replacing older ones); the ids registered."""
        values = parse_message(message, now=self._now(), rim_root=self._rim_root)
        for rv in values:
            encoded = json.dumps(rv.to_stored_json(), separators=(",", ":"), allow_nan=False)
            self._store.set(self._ns, rv.name, encoded.encode("utf-8"))
        self._changed()
        ids = [rv.name for rv in values]
        logger.info("registered reference values %s", ids)
        return ids

    def _load(self, name: str) -> ReferenceValue | None:
        raw = self._store.get(self._ns, name, now=self._clock.now())
        if raw is None:
            return None
        try:
            obj = json.loads(raw)
        except ValueError as e:
            raise StorageError(f"stored reference value {name!r} is not JSON") from e
        return ReferenceValue.from_stored_json(obj)

    def query(self, name: str) -> Json | None:
        """The value for policies: ``None`` when the id is unknown, invalid or expired."""
        try:
            check_reference_value_id(name)
        except ReferenceValueError:
            return None
        rv = self._load(name)
        if rv is None:
            return None
        if rv.expired(self._now()):
            logger.warning(
                "reference value %r expired at %s; policies see it as absent",
                name,
                rv.to_stored_json()["expiration"],
            )
            return None
        return rv.value

    def get(self, name: str) -> ReferenceValue:
        """The stored value with its expiration (expired ones included); ``NotFound``."""
        check_reference_value_id(name)
        rv = self._load(name)
        if rv is None:
            raise NotFound(f"no reference value {name!r}")
        return rv

    def list(self) -> list[str]:
        return [k for k in self._store.list(self._ns, now=self._clock.now()) if k != _VERSION_KEY]

    def add_to_list(self, name: str, item: Json) -> bool:
        """Add ``item`` to the list value ``name``, atomically; ``False`` if already listed.

        For values the broker adds itself (an enrolled TPM AK joins ``trusted_aks``). A
        compare-and-swap on the stored bytes, so a concurrent admin ``register`` is never
        undone: a value replaced meanwhile is read again. An absent or expired value starts a
        new list with the default lifetime; an expired one is never revived.
        """
        check_reference_value_id(name)
        for _ in range(ADD_ATTEMPTS):
            raw = self._store.get(self._ns, name, now=self._clock.now())
            now = self._now()
            current = None if raw is None else self._decode(name, raw)
            if current is None or current.expired(now):
                values: list[Json] = []
                expiration = now + DEFAULT_LIFETIME
            elif isinstance(current.value, list):
                values, expiration = current.value, current.expiration
            else:
                raise ReferenceValueError(f"reference value {name!r} is not a list")
            if item in values:
                return False
            updated = ReferenceValue(name=name, value=[*values, item], expiration=expiration)
            encoded = json.dumps(updated.to_stored_json(), separators=(",", ":"), allow_nan=False)
            if raw is None:
                done = self._store.insert(self._ns, name, encoded.encode(), now=self._clock.now())
            else:
                done = self._store.compare_and_swap(
                    self._ns, name, raw, encoded.encode(), now=self._clock.now()
                )
            if done:
                self._changed()
                logger.info("added a value to reference value %s", name)
                return True
        raise StorageError(f"reference value {name!r} kept changing; try again")

    @staticmethod
    def _decode(name: str, raw: bytes) -> ReferenceValue:
        try:
            obj = json.loads(raw)
        except ValueError as e:
            raise StorageError(f"stored reference value {name!r} is not JSON") from e
        return ReferenceValue.from_stored_json(obj)
