"""NVIDIA RIMs through the real broker (HTTP on loopback, real admin client and CLI, real
guest client): a RIM registered as upstream's ``swid`` message is verified by the broker's RVPS
and its golden values decide the GPU's appraisal in ``default_gpu``.

What is real and what is derived:

* upstream's recorded RIM (NVIDIA-signed, VBIOS 96.00.74.00.1C) is registered as is, under
  NVIDIA's pinned RIM root. Its signer's certificate ended on 2025-12-04, so the broker that
  accepts it runs on a clock set to 2024-06-01; the admin's tokens are minted on the real
  clock, so that broker's admin leeway covers the difference (a test setting, nothing else
  changes). Today's broker refuses the same RIM as expired.
* the GPU evidence is the recorded Hopper report re-signed by a synthetic device PKI, with
  this session's nonce (tests/nvidia_support.py), as in test_composite_gpu.py.
* RIMs matching that report (VBIOS 96.00.9f.00.01, driver 550.90.07) are derived and signed
  by a synthetic RIM CA (tests/nvidia_rim_support.py). The broker trusts only NVIDIA's RIM
  root, so their verified values (the same ``verify_rim`` and ``rim_reference_values`` the
  ``swid`` extractor runs) are registered as the ``sample`` message they amount to.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from custodes._internal.b64 import b64std_encode
from custodes._internal.clock import FrozenClock
from custodes._internal.kbs_http import KbsRequestError
from custodes.attestation.verifiers.base import Verifier
from custodes.attestation.verifiers.nvidia import NvidiaVerifier, NvidiaVerifierConfig
from custodes.attestation.verifiers.nvidia.rim import verify_rim
from custodes.attestation.verifiers.sample import SampleVerifier
from custodes.cli import main
from custodes.errors import CustodesError
from custodes.guest.attester.sample import SampleAttester
from custodes.guest.kbs_client import KbsClient
from custodes.kbs.app import create_app
from custodes.kbs.broker import build_broker
from custodes.kbs.config import AdminConfig, AttestationConfig, KbsConfig, ServerConfig
from custodes.kbs.server import serve_in_thread
from custodes.protocol.resource import ResourcePath
from custodes.rvps.swid import rim_reference_values
from custodes.types.json import Json
from custodes.types.tee import Tee
from live_broker import SAMPLE_REFERENCE_VALUES, LiveBroker
from nvidia_rim_support import RIM_VALID_AT, RIM_VECTOR, derived_rims, recorded_rim, shared_rim_pki
from nvidia_support import DerivedNvidiaAttester, shared_pki

SECRET = ResourcePath.parse("default/key/model")
SECRET_VALUE = b"fraud model dataset key"


def _derived_values(
    *, vbios: bool = True, driver: bool = True, change: dict[int, bytes] | None = None
) -> dict[str, Json]:
    pki = shared_rim_pki()
    vbios_rim, driver_rim = derived_rims(pki, change=change)
    chosen = [d for d, wanted in ((vbios_rim, vbios), (driver_rim, driver)) if wanted]
    values: dict[str, Json] = {}
    for document in chosen:
        values.update(
            rim_reference_values(verify_rim(document, now=datetime.now(UTC), root=pki.root))
        )
    return values


@contextlib.contextmanager
def rim_broker(tmp_path: Path, at: datetime | None = None) -> Iterator[LiveBroker]:
    """A broker with the sample TEE, NVIDIA verification under the synthetic device PKI and
    NVIDIA's pinned RIM root; its clock at ``at`` (default: now)."""
    now = datetime.now(UTC)
    behind = 0 if at is None else int((now - at).total_seconds()) + 3600
    config = KbsConfig(
        server=ServerConfig(listen="127.0.0.1:0", data_dir=tmp_path / "data"),
        attestation=AttestationConfig(unsafe_allow_sample_tee=True),
        admin=AdminConfig(leeway_seconds=60 + behind),
    ).validate()
    clock = FrozenClock((at or now).timestamp())
    nvidia = NvidiaVerifier(NvidiaVerifierConfig(clock=clock), root=shared_pki().root)
    verifiers: dict[Tee, Verifier] = {Tee.SAMPLE: SampleVerifier(), Tee.NVIDIA: nvidia}
    b = build_broker(config, clock=clock, verifiers=verifiers)
    with serve_in_thread(create_app(b), config) as url:
        live = LiveBroker(url, b, clock, tmp_path / "data")
        with live.admin() as admin:
            admin.register_reference_values(SAMPLE_REFERENCE_VALUES)
            admin.put_resource(SECRET, SECRET_VALUE)
        yield live
    b.close()


def _client(live: LiveBroker, gpu: DerivedNvidiaAttester | None = None) -> KbsClient:
    return KbsClient(live.url, SampleAttester(), device_attesters=[gpu or DerivedNvidiaAttester()])


def test_rim_pair_matching_the_report_releases(tmp_path: Path) -> None:
    with rim_broker(tmp_path) as live:
        with live.admin() as admin:
            # Only RIM values: no nvidia_gpu_measurements, no allowed_*_versions.
            admin.register_reference_values(_derived_values())
        with _client(live) as guest:
            assert guest.get_resource(SECRET) == SECRET_VALUE
            gpu0 = guest.token().claims()["submods"]["gpu0"]
    assert gpu0["ear.status"] == "affirming"
    vector = gpu0["ear.trustworthiness-vector"]
    assert (vector["hardware"], vector["executables"], vector["configuration"]) == (2, 3, 2)


def test_rim_pair_with_another_golden_measurement_refuses(tmp_path: Path) -> None:
    # The report's measurement 2 (RIM index 1) is not what these RIMs call golden.
    with rim_broker(tmp_path) as live:
        with live.admin() as admin:
            admin.register_reference_values(_derived_values(change={1: b"\x11" * 48}))
        with _client(live) as guest, pytest.raises(KbsRequestError) as info:
            guest.get_resource(SECRET)
        assert info.value.error_type.endswith("/PolicyDeny")
        with _client(live) as guest:
            gpu0 = guest.attest().claims()["submods"]["gpu0"]
    assert gpu0["ear.status"] == "warning"


def test_recorded_rim_for_another_vbios_refuses_naming_the_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with rim_broker(tmp_path, at=RIM_VALID_AT) as live:
        # The real RIM, through the real CLI: checked offline at 2024-06-01, then registered
        # as a swid message, which the broker verifies again on its own clock.
        key = live.data_dir / "admin-key.pem"
        argv = ["rv", "nvidia-rim", "--at", "2024-06-01T00:00:00Z", "--register"]
        code = main([*argv, "--url", live.url, "--key", str(key), str(RIM_VECTOR)])
        assert code == 0, capsys.readouterr().err
        with live.admin() as admin:
            stored = admin.get_reference_value("nvidia_rim/vbios/96.00.74.00.1c")
            assert "NVIDIA_Corporation.GPU.measurement_12" in admin.list_reference_values()
            # The driver is golden (a derived driver RIM); the VBIOS has no RIM of its own.
            admin.register_reference_values(_derived_values(vbios=False))
        assert str(stored["expiration"]).startswith("2025-06-01")
        with _client(live) as guest, pytest.raises(KbsRequestError) as info:
            guest.get_resource(SECRET)
        assert info.value.error_type.endswith("/PolicyDeny")
        with _client(live) as guest:
            submods = guest.attest().claims()["submods"]
        assert submods["cpu0"]["ear.status"] == "affirming"
        assert submods["gpu0"]["ear.status"] == "warning"
        vector = submods["gpu0"]["ear.trustworthiness-vector"]
        assert (vector["hardware"], vector["executables"], vector["configuration"]) == (2, 33, 36)
        # The admin learns why: this GPU's VBIOS has no RIM.
        match = re.search(r"correlation id ([0-9a-f]{32})", info.value.detail)
        assert match is not None
        with live.admin() as admin:
            why = admin.get_denial(match.group(1))
    explanation: Any = why["attestation"]["explanation"]["gpu0"]
    failed = {f["condition"]: f["claims"] for f in explanation["executables"]["failed"]}
    assert failed['rim_registered("vbios", input.nvidia.config.vbios_version)'] == {
        "input.nvidia.config.vbios_version": "96.00.9f.00.01"
    }


def test_recorded_rim_refused_today_as_expired(tmp_path: Path) -> None:
    message = {"version": "0.1.0", "type": "swid", "payload": b64std_encode(recorded_rim())}
    with rim_broker(tmp_path) as live, live.admin() as admin:
        with pytest.raises(CustodesError, match="'HCC RIM L4 Signer' is outside its validity"):
            admin.register_message(message)
        assert not [n for n in admin.list_reference_values() if n.startswith("nvidia_rim/")]
