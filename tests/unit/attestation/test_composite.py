"""Composite evidence in the Attestation Service: parsing ``additional_evidence``, one
submodule per device with upstream's naming, devices bound to the device digest, small tokens.

The GPU evidence is derived (tests/nvidia_support.py): upstream's recorded Hopper report with
this test's nonce, re-signed by a synthetic device PKI the NVIDIA verifier is given as root.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import rfc8785

from custodes._internal.clock import FrozenClock
from custodes.attestation.composite import compact_for_token, parse_additional_evidence
from custodes.attestation.ear import EarSigner, generate_signing_key
from custodes.attestation.service import AttestationService
from custodes.attestation.verifiers.nvidia import NvidiaVerifier, NvidiaVerifierConfig
from custodes.attestation.verifiers.nvidia.errors import NonceMismatch
from custodes.attestation.verifiers.sample import SampleVerifier
from custodes.errors import MalformedEvidence, UnsupportedTee
from custodes.guest.attester.sample import SampleAttester
from custodes.policy.defaults import default_policy
from custodes.policy.store import PolicyStore
from custodes.rvps.service import ReferenceValueProvider
from custodes.storage.base import NS_ATTESTATION_POLICY
from custodes.storage.memory import MemoryStore
from custodes.types.json import JsonObject
from custodes.types.tee import Tee
from nvidia_support import DerivedNvidiaAttester, recorded_claims, shared_pki

T0 = 1_780_000_000.0
JWK = {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "eA", "y": "eQ"}
NONCE = "bm9uY2U"
DEVICE_DIGEST = hashlib.sha384(rfc8785.dumps({"nonce": NONCE, "tee-pubkey": JWK})).digest()


def _service(*, allow_sample: bool = True) -> AttestationService:
    clock = FrozenClock(T0)
    store = MemoryStore()
    return AttestationService(
        verifiers={
            Tee.SAMPLE: SampleVerifier(),
            Tee.NVIDIA: NvidiaVerifier(NvidiaVerifierConfig(clock=clock), root=shared_pki().root),
        },
        policies=PolicyStore(store, NS_ATTESTATION_POLICY, clock),
        rvps=ReferenceValueProvider(store, clock),
        signer=EarSigner(generate_signing_key(), clock=clock),
        allow_sample_tee=allow_sample,
    )


def _attest(service: AttestationService, devices: JsonObject, device_digest: bytes) -> JsonObject:
    additional = json.dumps(devices)
    runtime: JsonObject = {"additional-evidence": additional, "nonce": NONCE, "tee-pubkey": JWK}
    digest = hashlib.sha384(rfc8785.dumps(runtime)).digest()
    outcome = service.evaluate(
        tee=Tee.SAMPLE,
        evidence=SampleAttester().evidence(digest),
        report_data=digest,
        runtime_data_claims=runtime,
        additional_evidence=additional,
        device_report_data=device_digest,
    )
    return outcome.claims


def test_one_submodule_per_device_in_upstreams_naming() -> None:
    gpu = DerivedNvidiaAttester().evidence(DEVICE_DIGEST)
    two = {"device_evidence_list": gpu["device_evidence_list"] * 2}
    claims = _attest(_service(), {"nvidia": two}, DEVICE_DIGEST)
    submods = claims["submods"]
    assert isinstance(submods, dict)
    assert list(submods) == ["cpu0", "gpu0", "gpu1"]
    gpu0 = submods["gpu0"]
    assert isinstance(gpu0, dict)
    assert gpu0["ear.appraisal-policy-id"] == "default"
    # No reference values registered: nothing about the GPU is trusted yet.
    assert gpu0["ear.status"] != "affirming"


def test_token_carries_a_digest_of_the_measurements() -> None:
    claims = _attest(
        _service(), {"nvidia": DerivedNvidiaAttester().evidence(DEVICE_DIGEST)}, DEVICE_DIGEST
    )
    gpu = claims["submods"]["gpu0"]["ear.veraison.annotated-evidence"]["nvidia"]
    expected = recorded_claims()
    config = expected["config"]
    assert isinstance(config, dict)
    measured = {
        "measurements": expected["measurements"],
        "measurement_count": config["measurement_count"],
    }
    assert gpu["measurements_sha384"] == hashlib.sha384(rfc8785.dumps(measured)).hexdigest()
    assert "measurement_count" not in gpu["config"]
    cpu_runtime = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"][
        "runtime_data_claims"
    ]
    assert set(cpu_runtime) == {"nonce", "tee-pubkey"}


def test_device_bound_to_the_cpu_digest_refused() -> None:
    # The device must bind H({nonce, tee-pubkey}), not the CPU's digest over the device text.
    other = hashlib.sha384(b"the cpu digest").digest()
    gpu = DerivedNvidiaAttester().evidence(other)
    with pytest.raises(NonceMismatch):
        _attest(_service(), {"nvidia": gpu}, DEVICE_DIGEST)


def test_device_evidence_without_device_digest_refused() -> None:
    with pytest.raises(UnsupportedTee, match="binding digest"):
        _service().evaluate(
            tee=Tee.SAMPLE,
            evidence={},
            report_data=b"",
            runtime_data_claims={},
            additional_evidence='{"nvidia": {}}',
        )


def test_device_tee_as_primary_refused() -> None:
    with pytest.raises(UnsupportedTee, match="send it as additional_evidence"):
        _service().evaluate(
            tee=Tee.NVIDIA, evidence={}, report_data=DEVICE_DIGEST, runtime_data_claims={}
        )


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("{", MalformedEvidence, "not a JSON string"),
        ("[]", MalformedEvidence, "non-empty object"),
        ("{}", MalformedEvidence, "non-empty object"),
        ('{"gpu": {}}', UnsupportedTee, "unknown TEE type"),
        ('{"tdx": {}}', UnsupportedTee, "device evidence only"),
        ('{"nvidia":1,"hygondcu":1,"sampledevice":1,"a":1,"b":1}', MalformedEvidence, "at most 4"),
    ],
)
def test_additional_evidence_parsed_strictly(
    text: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        parse_additional_evidence(text)


def test_no_devices_is_the_empty_string() -> None:
    assert parse_additional_evidence("") == []


def test_compaction_leaves_cpu_only_tokens_alone() -> None:
    submods: dict[str, JsonObject] = {
        "cpu0": {
            "ear.veraison.annotated-evidence": {
                "sample": {"svn": "1"},
                "runtime_data_claims": {"additional-evidence": "", "nonce": "n"},
            }
        }
    }
    assert compact_for_token(submods) == submods


def test_default_gpu_policy_is_installed() -> None:
    clock = FrozenClock(T0)
    store = MemoryStore()
    policies = PolicyStore(store, NS_ATTESTATION_POLICY, clock)
    AttestationService(
        verifiers={},
        policies=policies,
        rvps=ReferenceValueProvider(store, clock),
        signer=EarSigner(generate_signing_key(), clock=clock),
    )
    assert policies.get("default_gpu") == default_policy("default_gpu")
