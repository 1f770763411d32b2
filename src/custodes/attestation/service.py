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
7. The appraisal gets its status (worst tier of the vector). Steps 6 and 7, and the reasons
   for the claims that are not affirming, are :func:`custodes.attestation.appraisal.appraise`,
   the same appraisal ``custodes policy test`` and the dashboard try candidates with.
8. The EAR is signed.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from custodes.attestation.appraisal import Appraisal, appraise
from custodes.attestation.composite import (
    compact_for_token,
    device_runtime_data_claims,
    parse_additional_evidence,
)
from custodes.attestation.ear import Ar4siStatus, EarClaims, EarSigner, worst_status
from custodes.attestation.initdata import InitData
from custodes.attestation.verifiers.base import (
    VerificationRequest,
    VerifiedClaims,
    Verifier,
)
from custodes.errors import PolicyError, UnsupportedTee, VerificationError
from custodes.policy.budget import DEFAULT_SECONDS as DEFAULT_POLICY_SECONDS
from custodes.policy.defaults import default_policy
from custodes.policy.runner import Budgeted
from custodes.policy.store import PolicyStore
from custodes.rvps.service import ReferenceValueProvider
from custodes.types.json import Json, JsonObject
from custodes.types.tee import Tee

logger = logging.getLogger(__name__)

POLICY_ID: Final = "default"
DEFAULT_CPU_POLICY_ID: Final = "default_cpu"
DEFAULT_GPU_POLICY_ID: Final = "default_gpu"


@dataclass(frozen=True, slots=True)
class AttestationOutcome:
    token: str
    claims: JsonObject
    status: Ar4siStatus
    # Why a submodule is not affirming: submodule -> trust claim -> failed conditions. For the
    # workload admin (audit log, denial explanations); never part of the token.
    explanation: JsonObject | None = None
    policy_version: int | None = None

    def ear(self) -> EarClaims:
        """The token's claims, typed (its appraisals by submodule)."""
        return EarClaims.parse(self.claims)


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
        # Tenants' policies run in worker processes under the budget.
        self._runner = Budgeted(policy_seconds)
        self._verifiers = dict(verifiers)
        self._policies = policies
        self._rvps = rvps
        self._signer = signer
        self._allow_sample = allow_sample_tee
        policies.ensure_default(DEFAULT_CPU_POLICY_ID, default_policy(DEFAULT_CPU_POLICY_ID))
        policies.ensure_default(DEFAULT_GPU_POLICY_ID, default_policy(DEFAULT_GPU_POLICY_ID))

    def _appraise(
        self, tee: Tee, verified: VerifiedClaims, annotated: JsonObject, policy: str = POLICY_ID
    ) -> Appraisal:
        # ``policy`` is the requested id (the broker's policy selector); upstream suffixes it
        # with the evidence's class and names the requested id in the appraisal.
        policy_id = f"{policy}_{verified.tee_class}"
        policy_text = self._policies.get(policy_id)
        if policy_text is None:
            raise PolicyError(f"no attestation policy {policy_id!r} for {tee} evidence")
        # The reference values passed as data (one snapshot per tenant, re-read only after a
        # change), not store callbacks: the policy runs in another process.
        return appraise(
            policy_text,
            annotated,
            self._rvps.snapshot(),
            runner=self._runner,
            policy_name=f"policy {policy_id!r}",
        )

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
        appraisals: dict[str, Appraisal] = {}
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
            name = f"{item.tee_class}{index}"
            appraisals[name] = self._appraise(source, item, annotated, policy_id)
            submods[name] = appraisals[name].submodule(annotated, policy_id).to_json()
        status = worst_status(a.status for a in appraisals.values())
        explanation: JsonObject | None = None
        if status is not Ar4siStatus.AFFIRMING:
            explanation = {
                name: a.explanation()
                for name, a in appraisals.items()
                if a.status is not Ar4siStatus.AFFIRMING
            }
        # 8. Sign.
        token, claims = self._signer.sign(compact_for_token(submods))
        # Debug: the audit log records every attestation; info would log each request.
        logger.debug(
            "attestation of %s evidence: %s (%s)",
            tee,
            status,
            ", ".join(f"{name}={a.status}" for name, a in appraisals.items()),
        )
        return AttestationOutcome(
            token=token,
            claims=claims,
            status=status,
            explanation=explanation,
            policy_version=self._policies.active_version(f"{policy_id}_{verified[0].tee_class}"),
        )
