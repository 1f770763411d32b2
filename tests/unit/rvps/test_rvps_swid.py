"""The RVPS ``swid`` extractor on the real stores: a RIM is verified before anything is stored,
and what it stores is what ``default_gpu`` and upstream's policies read. RIMs derived from the
recorded Hopper report and signed by a synthetic RIM CA (tests/nvidia_rim_support.py), which
this provider is told to trust; the recorded NVIDIA RIM under NVIDIA's pinned root."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from custodes._internal.b64 import b64std_encode
from custodes._internal.clock import FrozenClock
from custodes.attestation.verifiers.nvidia.rim import RimChainInvalid, RimSignatureInvalid
from custodes.rvps.service import ReferenceValueProvider
from custodes.storage.base import Store
from custodes.storage.memory import MemoryStore
from custodes.storage.sqlite import SqliteStore
from custodes.types.json import Json
from nvidia_rim_support import RIM_VALID_AT, derived_rims, recorded_rim, shared_rim_pki

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _swid(document: bytes) -> dict[str, Json]:
    return {"version": "0.1.0", "type": "swid", "payload": b64std_encode(document)}


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "kv.db")
    yield s
    s.close()


def test_derived_rim_pair_registers_what_default_gpu_reads(store: Store) -> None:
    rvps = ReferenceValueProvider(
        store, FrozenClock(NOW.timestamp()), rim_root=shared_rim_pki().root
    )
    vbios, driver = derived_rims()
    ids = rvps.register(_swid(vbios)) + rvps.register(_swid(driver))
    assert "nvidia_rim/vbios/96.00.9f.00.01" in ids and "nvidia_rim/driver/550.90.07" in ids
    golden = rvps.query("nvidia_rim/vbios/96.00.9f.00.01")
    assert isinstance(golden, list) and golden[0] == "1:" + "00" * 48  # RIM index 0
    snapshot = rvps.snapshot()
    assert snapshot["nvidia_rim/driver/550.90.07"] == rvps.query("nvidia_rim/driver/550.90.07")
    assert rvps.get("nvidia_rim/vbios/96.00.9f.00.01").expiration == NOW + timedelta(days=365)


def test_refused_rim_stores_nothing(store: Store) -> None:
    clock = FrozenClock(NOW.timestamp())
    # NVIDIA's pinned root: a derived RIM is refused before any write.
    with pytest.raises(RimChainInvalid):
        ReferenceValueProvider(store, clock).register(_swid(derived_rims()[0]))
    tampered = recorded_rim().replace(b'index="12" active="True"', b'index="12" active="False"')
    rvps = ReferenceValueProvider(store, FrozenClock(RIM_VALID_AT.timestamp()))
    with pytest.raises(RimSignatureInvalid):
        rvps.register(_swid(tampered))
    assert rvps.list() == []


def test_recorded_rim_values_expire_with_its_chain(store: Store) -> None:
    clock = FrozenClock(datetime(2025, 6, 1, tzinfo=UTC).timestamp())
    rvps = ReferenceValueProvider(store, clock)
    rvps.register(_swid(recorded_rim()))
    assert rvps.query("NVIDIA_Corporation.GPU.measurement_12") is not None
    clock.advance(
        (
            datetime(2025, 12, 4, 8, 2, 39, tzinfo=UTC) - datetime(2025, 6, 1, tzinfo=UTC)
        ).total_seconds()
    )
    # The RIM's signer expired: its values are invisible to policies from then on.
    assert rvps.query("nvidia_rim/vbios/96.00.74.00.1c") is None
    assert "nvidia_rim/vbios/96.00.74.00.1c" not in rvps.snapshot()
