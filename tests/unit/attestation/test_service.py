"""The Attestation Service end to end: sample evidence -> verifier -> policy -> signed EAR."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import ClassVar

import pytest
import rfc8785

from custodes._internal.clock import FrozenClock
from custodes.attestation.ear import (
    TRUST_CLAIM_NAMES,
    Ar4siStatus,
    EarSigner,
    EarVerifier,
    generate_signing_key,
)
from custodes.attestation.initdata import InitDataError
from custodes.attestation.service import (
    AttestationOutcome,
    AttestationService,
    annotated_evidence,
)
from custodes.attestation.verifiers.base import (
    TeeClass,
    VerificationRequest,
    VerifiedClaims,
)
from custodes.attestation.verifiers.sample import SampleVerifier
from custodes.errors import (
    BindingMismatch,
    MalformedEvidence,
    PolicyError,
    UnsupportedTee,
    VerificationError,
)
from custodes.guest.attester.sample import SampleAttester
from custodes.policy.defaults import default_policy
from custodes.policy.store import PolicyStore
from custodes.rvps.service import ReferenceValueProvider
from custodes.storage.base import NS_ATTESTATION_POLICY
from custodes.storage.memory import MemoryStore
from custodes.types.json import JsonObject
from custodes.types.tee import Tee

T0 = 1_772_000_000.0
TEE_PUBKEY = {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "eA", "y": "eQ"}
RUNTIME: JsonObject = {"additional-evidence": "", "nonce": "bm9uY2U", "tee-pubkey": TEE_PUBKEY}
DIGEST = hashlib.sha384(rfc8785.dumps(RUNTIME)).digest()
SAMPLE_RVS = {
    "launch_digest": ["abcde"],
    "svn": ["1"],
    "major_version": 1,
    "minimum_minor_version": 0,
}
INTEGRATION = "trustee/integration-tests/tests/init-data-with-policy.toml"


class World:
    def __init__(self, *, allow_sample_tee: bool = True, store: MemoryStore | None = None) -> None:
        self.clock = FrozenClock(T0)
        self.store = store or MemoryStore()
        self.key = generate_signing_key()
        self.policies = PolicyStore(self.store, NS_ATTESTATION_POLICY, self.clock)
        self.rvps = ReferenceValueProvider(self.store, self.clock)
        self.service = AttestationService(
            verifiers={Tee.SAMPLE: SampleVerifier()},
            policies=self.policies,
            rvps=self.rvps,
            signer=EarSigner(self.key, clock=self.clock),
            allow_sample_tee=allow_sample_tee,
        )
        self.verifier = EarVerifier([self.key.public_key()], clock=self.clock)

    def register(self, values: JsonObject, **fields: object) -> None:
        payload = base64.b64encode(json.dumps(values).encode()).decode()
        self.rvps.register({"version": "0.1.0", "type": "sample", "payload": payload, **fields})

    def attest(self, **kw: object) -> AttestationOutcome:
        args: dict[str, object] = {
            "tee": Tee.SAMPLE,
            "evidence": SampleAttester().evidence(DIGEST),
            "report_data": DIGEST,
            "runtime_data_claims": RUNTIME,
        }
        args.update(kw)
        return self.service.evaluate(**args)  # type: ignore[arg-type]


def test_sample_refused_by_default() -> None:
    world = World(allow_sample_tee=False)
    with pytest.raises(UnsupportedTee, match="allow_sample_tee"):
        world.attest()
    with pytest.raises(UnsupportedTee):
        world.attest(tee=Tee.SAMPLEDEVICE)


def test_tee_without_verifier() -> None:
    with pytest.raises(UnsupportedTee):
        World().attest(tee=Tee.SNP)


def test_default_policy_is_installed() -> None:
    assert World().policies.get("default_cpu") == default_policy("default_cpu")


def test_contraindicated_without_reference_values() -> None:
    world = World()
    outcome = world.attest()
    assert outcome.status is Ar4siStatus.CONTRAINDICATED
    claims = world.verifier.verify(outcome.token)
    assert claims == outcome.claims
    appraisal = claims["submods"]["cpu0"]
    assert appraisal["ear.status"] == "contraindicated"
    vector = appraisal["ear.trustworthiness-vector"]
    assert list(vector) == list(TRUST_CLAIM_NAMES)
    assert (vector["executables"], vector["hardware"], vector["configuration"]) == (33, 97, 2)


def test_affirming_with_reference_values() -> None:
    world = World()
    world.register(SAMPLE_RVS)
    outcome = world.attest()
    assert outcome.status is Ar4siStatus.AFFIRMING
    claims = world.verifier.verify(outcome.token)
    appraisal = claims["submods"]["cpu0"]
    assert appraisal["ear.status"] == "affirming"
    vector = appraisal["ear.trustworthiness-vector"]
    assert (vector["executables"], vector["hardware"], vector["configuration"]) == (3, 2, 2)
    assert appraisal["ear.appraisal-policy-id"] == "default"
    assert appraisal["ear.trustee.identifiers"] == {"validated": {}}
    assert set(claims["submods"]) == {"cpu0"}


def test_expired_reference_values_count_as_absent() -> None:
    world = World()
    world.register(SAMPLE_RVS, expiration="2026-03-01T00:00:00Z")
    assert world.attest().status is Ar4siStatus.AFFIRMING
    world.clock.advance(365 * 86_400)
    assert world.attest().status is Ar4siStatus.CONTRAINDICATED


def test_annotated_evidence_layout() -> None:
    world = World()
    claims = world.verifier.verify(world.attest().token)
    annotated = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    assert annotated == {
        "sample": {
            "svn": "1",
            "launch_digest": "abcde",
            "platform_version": {"major": 1, "minor": 4},
            "debug": False,
        },
        "report_data": base64.b64encode(DIGEST).decode(),
        "runtime_data_claims": RUNTIME,
    }


def test_init_data_claims_and_identifiers(vectors: Path) -> None:
    toml = (vectors / INTEGRATION).read_bytes().decode()
    world = World()
    world.register(SAMPLE_RVS)
    outcome = world.attest(init_data_toml=toml)
    appraisal = world.verifier.verify(outcome.token)["submods"]["cpu0"]
    annotated = appraisal["ear.veraison.annotated-evidence"]
    assert (
        annotated["init_data"] == base64.b64encode(hashlib.sha256(toml.encode()).digest()).decode()
    )
    args = annotated["init_data_claims"]["agent_policy_claims"]["containers"][1]["OCI"]["Process"]
    assert args["Args"][0] == "/opt/bitnami/scripts/nginx/entrypoint.sh"
    assert appraisal["ear.trustee.identifiers"] == {
        "validated": {
            "container_images": ["bitnami/nginx:latest"],
            "container_uids": [65535, 1001],
        }
    }
    assert outcome.status is Ar4siStatus.AFFIRMING


def test_malformed_init_data_refused() -> None:
    with pytest.raises(InitDataError):
        World().attest(init_data_toml='version = "0.2.0"\nalgorithm = "sha256"\n[data]\n')


def test_device_evidence_without_a_device_verifier_refused() -> None:
    # Composite evidence is accepted (tests/unit/attestation/test_composite.py); a device TEE
    # this broker has no verifier for is refused, as is a CPU TEE posing as a device.
    with pytest.raises(UnsupportedTee, match="no verifier for device TEE nvidia"):
        World().attest(additional_evidence='{"nvidia": {}}', device_report_data=DIGEST)
    with pytest.raises(UnsupportedTee, match="device evidence only"):
        World().attest(additional_evidence='{"snp": {}}', device_report_data=DIGEST)


def test_binding_checked() -> None:
    other = hashlib.sha384(b"other session").digest()
    with pytest.raises(BindingMismatch):
        World().attest(evidence=SampleAttester().evidence(other))


def test_malformed_evidence_refused() -> None:
    with pytest.raises(MalformedEvidence):
        World().attest(evidence={"svn": "1"})


def test_uploaded_policy_is_used_and_survives_restart() -> None:
    world = World()
    policy = (
        "package policy\nimport rego.v1\n"
        'trust_claims := {"hardware": 2, "executables": 3, "configuration": 2}\n'
        'extensions := [{"name": "custodes.test", "key": -70000, "value": {"n": 1}}]\n'
    )
    world.policies.set("default_cpu", policy)
    restarted = World(store=world.store)
    outcome = restarted.attest()
    assert outcome.status is Ar4siStatus.AFFIRMING
    assert outcome.claims["submods"]["cpu0"]["custodes.test"] == {"n": 1}


@pytest.mark.parametrize(
    "rules",
    [
        "x := 1\n",  # no trust_claims
        'trust_claims := {"hardware": 0}\n',  # nothing asserted
        'trust_claims := {"firmware": 2}\n',  # unknown claim
        'trust_claims := {"hardware": 300}\n',
        'trust_claims := {"hardware": 2}\nextensions := {"name": "x"}\n',
        'trust_claims := {"hardware": 2}\nextensions := [{"name": "x", "key": "k", "value": 1}]\n',
        'trust_claims := {"hardware": 2}\n'
        'extensions := [{"name": "ear.status", "key": 1, "value": 1}]\n',
        'trust_claims := {"hardware": 2}\nextensions := [{"name": "", "key": 1, "value": 1}]\n',
        'trust_claims := {"hardware": 2}\nextensions := [{"name": "a", "key": 1}]\n',
        'trust_claims := {"hardware": 2}\n'
        'extensions := [{"name": "a", "key": 1, "value": 1},'
        ' {"name": "a", "key": 2, "value": 2}]\n',
        "trust_claims := 1 / 0\n",
    ],
)
def test_bad_policy_output_refused(rules: str) -> None:
    world = World()
    world.policies.set("default_cpu", "package policy\nimport rego.v1\n" + rules)
    with pytest.raises(PolicyError):
        world.attest()


def test_missing_policy_for_tee_class() -> None:
    # A fake: custodes has no NVSwitch verifier, and this checks only that evidence of a class
    # with no policy ("default_switch") is refused rather than appraised by another class's
    # policy.
    class SwitchLikeVerifier:
        tee: ClassVar[Tee] = Tee.SAMPLE

        def verify(self, request: VerificationRequest) -> list[VerifiedClaims]:
            return [VerifiedClaims(tee_class=TeeClass.SWITCH, claims={"report_data": "x"})]

    world = World()
    service = AttestationService(
        verifiers={Tee.SAMPLE: SwitchLikeVerifier()},
        policies=world.policies,
        rvps=world.rvps,
        signer=EarSigner(world.key, clock=world.clock),
        allow_sample_tee=True,
    )
    with pytest.raises(PolicyError, match="default_switch"):
        service.evaluate(
            tee=Tee.SAMPLE, evidence={}, report_data=DIGEST, runtime_data_claims=RUNTIME
        )


def test_verifier_returning_nothing_is_refused() -> None:
    # A fake verifier standing for a broken one (no real verifier returns an empty list).
    class EmptyVerifier:
        tee: ClassVar[Tee] = Tee.SAMPLE

        def verify(self, request: VerificationRequest) -> list[VerifiedClaims]:
            return []

    world = World()
    service = AttestationService(
        verifiers={Tee.SAMPLE: EmptyVerifier()},
        policies=world.policies,
        rvps=world.rvps,
        signer=EarSigner(world.key, clock=world.clock),
        allow_sample_tee=True,
    )
    with pytest.raises(VerificationError):
        service.evaluate(
            tee=Tee.SAMPLE, evidence={}, report_data=DIGEST, runtime_data_claims=RUNTIME
        )


def test_annotated_evidence_does_not_alias_verifier_claims() -> None:
    claims = {"svn": "1", "report_data": "cg==", "init_data": "aQ==", "nested": {"a": 1}}
    annotated = annotated_evidence(
        Tee.SNP, claims, init_data_claims={"k": "v"}, runtime_data_claims=RUNTIME
    )
    assert annotated == {
        "snp": {"svn": "1", "nested": {"a": 1}},
        "init_data": "aQ==",
        "init_data_claims": {"k": "v"},
        "report_data": "cg==",
        "runtime_data_claims": RUNTIME,
    }
    annotated["snp"]["nested"]["a"] = 2
    assert claims["nested"] == {"a": 1} and "report_data" in claims
    # Without init_data from the verifier, no init-data claims appear (they are unproven).
    bare = annotated_evidence(
        Tee.SNP, {"x": 1}, init_data_claims={"k": "v"}, runtime_data_claims=RUNTIME
    )
    assert bare == {"snp": {"x": 1}}


def test_an_attestation_policy_over_its_budget_fails_clearly() -> None:
    from custodes.policy.budget import PolicyBudgetExceeded

    world = World()
    world.service = AttestationService(
        verifiers={Tee.SAMPLE: SampleVerifier()},
        policies=world.policies,
        rvps=world.rvps,
        signer=EarSigner(world.key, clock=world.clock),
        allow_sample_tee=True,
        policy_seconds=0.5,
    )
    world.policies.set(
        "default_cpu",
        "package policy\nimport rego.v1\n"
        'trust_claims := {"hardware": 2} if {\n'
        "    some i in numbers.range(1, 100000)\n"
        "    some j in numbers.range(1, 100000)\n"
        "    i == j + 1000000\n"
        "}\n",
    )
    with pytest.raises(PolicyBudgetExceeded, match="budget"):
        world.attest()


def test_reference_values_registered_after_an_attestation_are_seen_by_the_next() -> None:
    world = World()
    assert world.attest().status is not Ar4siStatus.AFFIRMING  # none registered yet
    world.register(
        {"svn": ["1"], "launch_digest": ["abcde"], "major_version": 1, "minimum_minor_version": 0}
    )
    assert world.attest().status is Ar4siStatus.AFFIRMING


def test_the_explanation_names_each_weak_claim_of_each_weak_submodule() -> None:
    # The audit log's shape: submodule -> trust claim -> {"value", "failed": [condition]}.
    world = World()
    outcome = world.attest()
    assert outcome.explanation is not None
    assert set(outcome.explanation) == {"cpu0"}
    cpu0 = outcome.explanation["cpu0"]
    assert set(cpu0) == {"executables", "hardware"}
    assert cpu0["hardware"]["value"] == 97
    (condition, *_) = cpu0["executables"]["failed"]
    assert set(condition) == {"rule", "line", "condition", "claims", "reference_values"}
    assert condition["rule"] == "executables"
    assert condition["reference_values"] == {"launch_digest": None}
    # Affirming: nothing to explain.
    world.register(SAMPLE_RVS)
    assert world.attest().explanation is None


def test_the_outcome_reads_its_claims_typed() -> None:
    world = World()
    world.register(SAMPLE_RVS)
    outcome = world.attest()
    ear = outcome.ear()
    assert ear.status is outcome.status is Ar4siStatus.AFFIRMING
    assert ear.token_id == outcome.claims["jti"]
    assert ear.tee_pubkey() == TEE_PUBKEY
    cpu0 = ear.submodules["cpu0"]
    assert cpu0.policy_id == "default"
    assert dict(cpu0.extensions) == {"ear.trustee.identifiers": {"validated": {}}}
    assert ear.trust_vectors() == {
        "cpu0": outcome.claims["submods"]["cpu0"]["ear.trustworthiness-vector"]
    }
    assert ear.annotated_evidence()["cpu0"]["runtime_data_claims"] == RUNTIME
