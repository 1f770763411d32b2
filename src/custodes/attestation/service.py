"""The Attestation Service: evidence in, signed EAR token out.

One evaluation is a checklist:

1. The TEE is enabled (the insecure sample TEEs only when the broker allows them) and has a
   verifier.
2. The init-data TOML, if sent, parses; its digest is computed.
3. Device evidence (``additional_evidence``, see ``composite.py``) parses; a device TEE is
   never the session's own TEE.
4. The verifier checks the evidence, its binding to the session and to the init-data digest;
   then each device's verifier checks its evidence and its binding (the device digest).
5. The annotated evidence is built exactly as Trustee builds it (§3.4 of the reference).
6. The attestation policy ``<policy id>_<tee class>`` (``default_cpu`` unless the client's
   policy selector chose another id) turns it into AR4SI trust claims, reading reference
   values through ``query_reference_value`` (answered from the tenant's reference values,
   passed as data); its ``extensions`` join the appraisal, and ``ear.appraisal-policy-id``
   names the id. It runs in a worker process under a time budget
   (:mod:`custodes.policy.budget`): a policy over it fails the attestation with a clear error.
7. The appraisal gets its status (worst tier of the vector).
8. The EAR is signed.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from custodes.attestation.composite import (
    compact_for_token,
    device_runtime_data_claims,
    parse_additional_evidence,
)
from custodes.attestation.ear import (
    Ar4siStatus,
    EarSigner,
    appraisal_status,
    tier_of,
    validate_trust_claims,
    worst_status,
)
from custodes.attestation.initdata import InitData
from custodes.attestation.verifiers.base import (
    VerificationRequest,
    VerifiedClaims,
    Verifier,
)
from custodes.errors import PolicyError, UnsupportedTee, VerificationError
from custodes.policy.budget import DEFAULT_SECONDS as DEFAULT_POLICY_SECONDS
from custodes.policy.budget import (
    PolicyBudgetExceeded,
    evaluate_rules_within_budget,
    explain_within_budget,
)
from custodes.policy.defaults import default_policy
from custodes.policy.engine import UNDEFINED
from custodes.policy.store import PolicyStore
from custodes.rvps.service import ReferenceValueProvider
from custodes.types.json import Json, JsonObject
from custodes.types.tee import Tee

logger = logging.getLogger(__name__)

POLICY_ID: Final = "default"
DEFAULT_CPU_POLICY_ID: Final = "default_cpu"
DEFAULT_GPU_POLICY_ID: Final = "default_gpu"
_STATUS: Final = "ear.status"
_VECTOR: Final = "ear.trustworthiness-vector"
_POLICY_ID_CLAIM: Final = "ear.appraisal-policy-id"
_EVIDENCE: Final = "ear.veraison.annotated-evidence"
_RESERVED: Final = frozenset({_STATUS, _VECTOR, _POLICY_ID_CLAIM, _EVIDENCE})


@dataclass(frozen=True, slots=True)
class AttestationOutcome:
    token: str
    claims: JsonObject
    status: Ar4siStatus
    # Why a submodule is not affirming: submodule -> trust claim -> failed conditions. For the
    # workload admin (audit log, denial explanations); never part of the token.
    explanation: JsonObject | None = None
    policy_version: int | None = None


def annotated_evidence(
    tee: Tee,
    claims: JsonObject,
    *,
    init_data_claims: JsonObject | None,
    runtime_data_claims: JsonObject,
) -> JsonObject:
    """Trustee's annotated evidence: the TEE's claims under its wire name, with ``init_data``
    and ``report_data`` lifted out next to the init-data and runtime-data claims they prove."""
    tee_claims = copy.deepcopy(claims)
    init_data = tee_claims.pop("init_data", None)
    report_data = tee_claims.pop("report_data", None)
    annotated: JsonObject = {str(tee): tee_claims}
    if init_data is not None:
        annotated["init_data"] = init_data
        annotated["init_data_claims"] = init_data_claims
    if report_data is not None:
        annotated["report_data"] = report_data
        annotated["runtime_data_claims"] = copy.deepcopy(runtime_data_claims)
    return annotated


def _extensions(value: Json) -> dict[str, Json]:
    """The policy's ``extensions``: a list of ``{"name", "key", "value"}``, by name."""
    if value is UNDEFINED:
        return {}
    if not isinstance(value, list):
        raise PolicyError("policy extensions must be a list")
    merged: dict[str, Json] = {}
    for ext in value:
        if not isinstance(ext, dict) or set(ext) != {"name", "key", "value"}:
            raise PolicyError('each policy extension must be {"name", "key", "value"}')
        name, key = ext["name"], ext["key"]
        if not isinstance(name, str) or not name:
            raise PolicyError("policy extension name must be a non-empty string")
        if not isinstance(key, int) or isinstance(key, bool):
            raise PolicyError(f"policy extension {name!r}: key must be an integer")
        if name in _RESERVED or name in merged:
            raise PolicyError(f"policy extension {name!r} collides with another appraisal claim")
        merged[name] = ext["value"]
    return merged


_TRUST_CLAIMS = "data.policy.trust_claims"
_EXTENSIONS = "data.policy.extensions"


class AttestationService:
    def __init__(
        self,
        *,
        verifiers: Mapping[Tee, Verifier],
        policies: PolicyStore,
        rvps: ReferenceValueProvider,
        signer: EarSigner,
        allow_sample_tee: bool = False,
        policy_seconds: float = DEFAULT_POLICY_SECONDS,
    ) -> None:
        self._policy_seconds = policy_seconds
        self._verifiers = dict(verifiers)
        self._policies = policies
        self._rvps = rvps
        self._signer = signer
        self._allow_sample = allow_sample_tee
        policies.ensure_default(DEFAULT_CPU_POLICY_ID, default_policy(DEFAULT_CPU_POLICY_ID))
        policies.ensure_default(DEFAULT_GPU_POLICY_ID, default_policy(DEFAULT_GPU_POLICY_ID))

    def _appraise(
        self, tee: Tee, verified: VerifiedClaims, annotated: JsonObject, policy: str = POLICY_ID
    ) -> JsonObject:
        # ``policy`` is the requested id (the broker's policy selector); upstream suffixes it
        # with the evidence's class and names the requested id in the appraisal.
        policy_id = f"{policy}_{verified.tee_class}"
        policy_text = self._policies.get(policy_id)
        if policy_text is None:
            raise PolicyError(f"no attestation policy {policy_id!r} for {tee} evidence")
        # In a worker process under the policy budget, the reference values passed as data
        # (one snapshot per tenant, re-read only after a change), not store callbacks.
        results = evaluate_rules_within_budget(
            policy_text,
            [_TRUST_CLAIMS, _EXTENSIONS],
            input=annotated,
            reference_values=self._rvps.snapshot(),
            seconds=self._policy_seconds,
        )
        if results[_TRUST_CLAIMS] is UNDEFINED:
            raise PolicyError(f"policy {policy_id!r} does not define trust_claims")
        vector = validate_trust_claims(results[_TRUST_CLAIMS])
        extensions = _extensions(results[_EXTENSIONS])
        appraisal: JsonObject = {
            _STATUS: str(appraisal_status(vector)),
            _VECTOR: vector,
            _POLICY_ID_CLAIM: policy,
            _EVIDENCE: annotated,
        }
        appraisal.update(extensions)
        return appraisal

    def _explain(
        self,
        item: VerifiedClaims,
        annotated: JsonObject,
        appraisal: JsonObject,
        policy_id: str = POLICY_ID,
    ) -> JsonObject:
        """The failed conditions behind every trust claim that is not affirming."""
        policy = self._policies.get(f"{policy_id}_{item.tee_class}") or ""
        vector = appraisal[_VECTOR]
        weak = {
            name: v
            for name, v in vector.items()
            if tier_of(v) is not Ar4siStatus.AFFIRMING and tier_of(v) is not Ar4siStatus.NONE
        }
        try:
            failed = explain_within_budget(
                policy,
                [name.replace("-", "_") for name in weak],
                input=annotated,
                reference_values=self._rvps.snapshot(),
                seconds=self._policy_seconds,
            )
        except PolicyBudgetExceeded:
            failed = []  # an explanation never turns an appraisal into an error
        return {
            name: {
                "value": value,
                "failed": [
                    f
                    for f in failed
                    if isinstance(f, dict) and f.get("rule") == name.replace("-", "_")
                ],
            }
            for name, value in weak.items()
        }

    def _verify_devices(
        self, devices: list[tuple[Tee, Json]], report_data: bytes | None
    ) -> list[tuple[Tee, VerifiedClaims]]:
        """Step 4 for each device: every one must verify, or the whole attestation fails."""
        out: list[tuple[Tee, VerifiedClaims]] = []
        for device, evidence in devices:
            if device.insecure and not self._allow_sample:
                raise UnsupportedTee(f"the {device} TEE proves nothing and is disabled")
            verifier = self._verifiers.get(device)
            if verifier is None or report_data is None:
                raise UnsupportedTee(f"no verifier for device TEE {device} on this broker")
            claims = verifier.verify(
                VerificationRequest(tee=device, evidence=evidence, report_data=report_data)
            )
            if not claims:
                raise VerificationError(f"the {device} verifier returned no claims")
            out.extend((device, item) for item in claims)
        return out

    def evaluate(
        self,
        *,
        tee: Tee,
        evidence: Json,
        report_data: bytes,
        runtime_data_claims: JsonObject,
        init_data_toml: str | None = None,
        additional_evidence: str = "",
        policy_id: str = POLICY_ID,
        device_report_data: bytes | None = None,
    ) -> AttestationOutcome:
        """``device_report_data`` is the devices' binding digest; required with device
        evidence."""
        # 1. The TEE is enabled and has a verifier.
        if tee.insecure and not self._allow_sample:
            raise UnsupportedTee(
                f"the {tee} TEE proves nothing and is disabled; enable it only for tests and "
                "demos (broker configuration: attestation.unsafe_allow_sample_tee = true)"
            )
        verifier = self._verifiers.get(tee)
        if verifier is None:
            raise UnsupportedTee(f"no verifier for TEE {tee} on this broker")
        # 2. Init-data.
        init_data = InitData.parse(init_data_toml) if init_data_toml is not None else None
        # 3. Device evidence.
        if tee.device:
            raise UnsupportedTee(
                f"{tee} is device evidence: send it as additional_evidence next to a CPU TEE"
            )
        devices = parse_additional_evidence(additional_evidence)
        if devices and device_report_data is None:
            raise UnsupportedTee("device evidence needs the devices' binding digest")
        # 4. Verification.
        verified = verifier.verify(
            VerificationRequest(
                tee=tee,
                evidence=evidence,
                report_data=report_data,
                init_data_digest=init_data.digest if init_data is not None else None,
            )
        )
        if not verified:
            raise VerificationError(f"the {tee} verifier returned no claims")
        entries = [(tee, item) for item in verified]
        entries += self._verify_devices(devices, device_report_data)
        init_data_claims = init_data.claims() if init_data is not None else None
        # 5-7. Annotated evidence, policy, appraisal: one submodule per piece of evidence.
        submods: dict[str, JsonObject] = {}
        counts: dict[str, int] = {}
        for source, item in entries:
            primary = source is tee
            annotated = annotated_evidence(
                source,
                item.claims,
                init_data_claims=init_data_claims if primary else None,
                runtime_data_claims=(
                    runtime_data_claims
                    if primary
                    else device_runtime_data_claims(runtime_data_claims)
                ),
            )
            index = counts.get(item.tee_class, 0)
            counts[item.tee_class] = index + 1
            submods[f"{item.tee_class}{index}"] = self._appraise(source, item, annotated, policy_id)
        status = worst_status(Ar4siStatus(a[_STATUS]) for a in submods.values())
        explanation: JsonObject | None = None
        if status is not Ar4siStatus.AFFIRMING:
            explanation = {
                name: self._explain(item, a[_EVIDENCE], a, policy_id)
                for (name, a), (_, item) in zip(submods.items(), entries, strict=True)
                if a[_STATUS] != Ar4siStatus.AFFIRMING
            }
        # 8. Sign.
        token, claims = self._signer.sign(compact_for_token(submods))
        # Debug: the audit log records every attestation; info would log each request.
        logger.debug(
            "attestation of %s evidence: %s (%s)",
            tee,
            status,
            ", ".join(f"{name}={a[_STATUS]}" for name, a in submods.items()),
        )
        return AttestationOutcome(
            token=token,
            claims=claims,
            status=status,
            explanation=explanation,
            policy_version=self._policies.active_version(f"{policy_id}_{verified[0].tee_class}"),
        )
