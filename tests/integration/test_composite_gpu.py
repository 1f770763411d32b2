"""Composite CPU + GPU attestation through the real broker (HTTP on loopback, real client).

The CPU side is the sample TEE; the GPU side is real NVIDIA verification on derived Hopper
reports: upstream's recorded report, its SPDM nonce set to this session's device digest and
re-signed by a synthetic device PKI (tests/nvidia_support.py), which this broker's NVIDIA
verifier trusts instead of NVIDIA's pinned root. That substitution is the only fake: a
recorded report carries the nonce of the session it was captured in, so it cannot bind a new
one (one test sends upstream's recorded report as-is, with the pinned root, and it is refused
for exactly that).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from custodes._internal.clock import FrozenClock
from custodes._internal.kbs_http import KbsRequestError
from custodes.attestation.verifiers.base import Verifier
from custodes.attestation.verifiers.nvidia import NvidiaVerifier, NvidiaVerifierConfig
from custodes.attestation.verifiers.sample import SampleVerifier
from custodes.guest.attester.sample import SampleAttester
from custodes.guest.kbs_client import KbsClient
from custodes.kbs.app import create_app
from custodes.kbs.broker import build_broker
from custodes.kbs.config import AttestationConfig, KbsConfig, ServerConfig
from custodes.kbs.server import serve_in_thread
from custodes.protocol.binding import (
    HashAlgorithm,
    device_runtime_data_digest,
    runtime_data_digest,
)
from custodes.protocol.resource import ResourcePath
from custodes.protocol.tee_key import TeeKeyPair
from custodes.types.json import JsonObject
from custodes.types.tee import Tee
from live_broker import SAMPLE_REFERENCE_VALUES, LiveBroker
from nvidia_support import (
    DerivedNvidiaAttester,
    evidence,
    recorded_chain,
    recorded_claims,
    recorded_report,
    shared_pki,
)

SECRET = ResourcePath.parse("default/key/model")
SECRET_VALUE = b"fraud model dataset key"


def gpu_reference_values() -> JsonObject:
    """What default_gpu needs for the recorded report: its versions and golden measurements."""
    claims = recorded_claims()
    measurements = claims["measurements"]
    assert isinstance(measurements, dict)
    return {
        "allowed_driver_versions": ["550.90.07"],
        "allowed_vbios_versions": ["96.00.9f.00.01"],
        "nvidia_gpu_measurements": [f"{i}:{v}" for i, v in measurements.items()],
    }


@contextlib.contextmanager
def gpu_broker(tmp_path: Path, *, pinned_root: bool = False) -> Iterator[LiveBroker]:
    config = KbsConfig(
        server=ServerConfig(listen="127.0.0.1:0", data_dir=tmp_path / "data"),
        attestation=AttestationConfig(unsafe_allow_sample_tee=True),
    ).validate()
    clock = FrozenClock(time.time())
    nvidia = NvidiaVerifier(
        NvidiaVerifierConfig(clock=clock), root=None if pinned_root else shared_pki().root
    )
    verifiers: dict[Tee, Verifier] = {Tee.SAMPLE: SampleVerifier(), Tee.NVIDIA: nvidia}
    b = build_broker(config, clock=clock, verifiers=verifiers)
    with serve_in_thread(create_app(b), config) as url:
        live = LiveBroker(url, b, clock, tmp_path / "data")
        with live.admin() as admin:
            admin.register_reference_values({**SAMPLE_REFERENCE_VALUES, **gpu_reference_values()})
            admin.put_resource(SECRET, SECRET_VALUE)
        yield live
    b.close()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveBroker]:
    with gpu_broker(tmp_path) as live:
        yield live


def _client(live: LiveBroker, *devices: Any) -> KbsClient:
    return KbsClient(live.url, SampleAttester(), device_attesters=devices)


def test_cpu_and_gpu_affirming_released(live: LiveBroker) -> None:
    with _client(live, DerivedNvidiaAttester()) as guest:
        assert guest.get_resource(SECRET) == SECRET_VALUE
        claims = guest.token().claims()
    assert list(claims["submods"]) == ["cpu0", "gpu0"]
    gpu0 = claims["submods"]["gpu0"]
    assert gpu0["ear.status"] == "affirming"
    assert gpu0["ear.trustworthiness-vector"]["configuration"] == 2
    annotated = gpu0["ear.veraison.annotated-evidence"]
    # Upstream's shape: the verifier's claims under "nvidia", no runtime data for a GPU.
    assert set(annotated) == {"nvidia"}
    # The token stays small: the measurements travel as one digest.
    assert "measurements" not in annotated["nvidia"]
    assert len(annotated["nvidia"]["measurements_sha384"]) == 96
    assert annotated["nvidia"]["config"]["driver_version"] == "550.90.07"


def test_token_stays_small_with_a_gpu(live: LiveBroker) -> None:
    with _client(live, DerivedNvidiaAttester()) as guest:
        token = guest.attest().value
    with _client(live) as cpu_only:
        cpu_token = cpu_only.attest().value
    # A GPU adds about 1 KiB, not the ~9 KiB its measurements and counts would.
    assert len(token) - len(cpu_token) < 2048


def test_gpu_not_affirming_refused(live: LiveBroker) -> None:
    # A derived report whose measurement 2 is not golden (a debug-mode or unapproved firmware
    # GPU measures differently): cryptographically valid, appraised not affirming.
    gpu = DerivedNvidiaAttester(measurements={2: bytes(48)})
    with _client(live, gpu) as guest, pytest.raises(KbsRequestError) as info:
        guest.get_resource(SECRET)
    assert info.value.status == 401
    assert info.value.error_type.endswith("/PolicyDeny")
    with _client(live, gpu) as guest:
        submods = guest.attest().claims()["submods"]
    assert submods["cpu0"]["ear.status"] == "affirming"
    assert submods["gpu0"]["ear.status"] == "warning"
    vector = submods["gpu0"]["ear.trustworthiness-vector"]
    assert (vector["hardware"], vector["executables"], vector["configuration"]) == (2, 33, 36)


def test_cpu_not_affirming_refused_even_with_an_affirming_gpu(live: LiveBroker) -> None:
    class OldFirmware(SampleAttester):
        def evidence(self, report_data: bytes) -> JsonObject:
            ev = super().evidence(report_data)
            ev["svn"] = "0"
            return ev

    with (
        KbsClient(live.url, OldFirmware(), device_attesters=[DerivedNvidiaAttester()]) as guest,
        pytest.raises(KbsRequestError) as info,
    ):
        guest.get_resource(SECRET)
    assert info.value.error_type.endswith("/PolicyDeny")


def test_gpu_evidence_bound_to_another_session_refused(live: LiveBroker) -> None:
    # GPU evidence produced for one session, replayed in another: the device nonce is that
    # session's, so attestation fails (the CPU report binds the replayed text, validly).
    captured: list[str] = []

    class Replaying(DerivedNvidiaAttester):
        def evidence(self, report_data: bytes) -> JsonObject:
            if not captured:
                ev = super().evidence(report_data)
                captured.append(json.dumps(ev))
            loaded: JsonObject = json.loads(captured[0])
            return loaded

    replaying = Replaying()
    with _client(live, replaying) as first:
        first.attest()
    with _client(live, replaying) as second, pytest.raises(KbsRequestError) as info:
        second.attest()
    assert info.value.status == 401
    assert "not this session's device binding digest" in info.value.detail


def test_recorded_upstream_report_is_bound_to_its_own_session(tmp_path: Path) -> None:
    # Upstream's recorded report and chain, NVIDIA's pinned root: genuine, but its nonce is the
    # one it was captured with, not this session's.
    class Recorded:
        tee = Tee.NVIDIA

        def evidence(self, report_data: bytes) -> JsonObject:
            return evidence(recorded_report(), recorded_chain())

    with gpu_broker(tmp_path, pinned_root=True) as live:
        with _client(live, Recorded()) as guest, pytest.raises(KbsRequestError) as info:
            guest.attest()
    assert "device binding digest" in info.value.detail


def test_gpu_as_the_sessions_own_tee_refused(live: LiveBroker) -> None:
    response = httpx.post(
        f"{live.url}/kbs/v0/auth", json={"version": "0.4.0", "tee": "nvidia", "extra-params": ""}
    )
    assert response.status_code == 400  # custodes answers an unsupported TEE with 400
    assert "TEE nvidia is not supported by this broker" in response.json()["detail"]
    assert "sent as additional_evidence next to a CPU TEE's" in response.json()["detail"]


def test_cpu_evidence_must_cover_the_device_evidence(live: LiveBroker) -> None:
    # The device map is changed after the CPU evidence bound its text: the GPU evidence is
    # still valid for this session, but the CPU's report data no longer matches.
    challenge = httpx.post(
        f"{live.url}/kbs/v0/auth", json={"version": "0.4.0", "tee": "sample", "extra-params": ""}
    )
    nonce = challenge.json()["nonce"]
    jwk = TeeKeyPair.generate().public_jwk()
    gpu = DerivedNvidiaAttester().evidence(
        device_runtime_data_digest(nonce, jwk, HashAlgorithm.SHA384)
    )
    signed_over = json.dumps({"nvidia": gpu})
    sent = json.dumps({"nvidia": gpu}, indent=1)  # same devices, other text
    cpu = SampleAttester().evidence(
        runtime_data_digest(nonce, jwk, signed_over, HashAlgorithm.SHA384)
    )
    body = {
        "runtime-data": {"nonce": nonce, "tee-pubkey": jwk},
        "tee-evidence": {"primary_evidence": cpu, "additional_evidence": sent},
    }
    response = httpx.post(f"{live.url}/kbs/v0/attest", json=body, cookies=challenge.cookies)
    assert response.status_code == 401
    assert "does not match this session's digest" in response.json()["detail"]
