"""The RCAR handshake service (:class:`Handshake`), and what ``/auth`` reads from a
``Request`` besides the TEE: the protocol version each client speaks (counted, and logged when
refused) and the members it sent that this protocol version does not define (logged, then
ignored as upstream ignores them)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass

from custodes.attestation.ear import EarClaims
from custodes.attestation.service import AttestationOutcome
from custodes.errors import CustodesError, SessionError, UnsupportedTee, UnsupportedVersion
from custodes.kbs import errors as kerr
from custodes.kbs.broker import Broker, TenantServices
from custodes.kbs.lanes import Lanes
from custodes.kbs.metrics import Metrics
from custodes.kbs.policy_selector import select_policy
from custodes.kbs.session import Session
from custodes.protocol.binding import (
    DEFAULT_HASH_ALGORITHM,
    HashAlgorithm,
    device_runtime_data_digest,
    runtime_data_digest,
    runtime_data_object,
)
from custodes.protocol.messages import (
    Attestation,
    Challenge,
    Request,
    version_label,
)
from custodes.types.json import Json, JsonObject
from custodes.types.tee import Tee

logger = logging.getLogger(__name__)


def read_request(body: Json, metrics: Metrics) -> Request:
    """Parse ``body`` as a ``Request``; every outcome of the version check is counted in
    ``custodes_protocol_requests{version, result}``."""
    label = version_label(body)
    try:
        request = Request.from_json(body)
    except UnsupportedVersion as exc:
        metrics.protocol_versions.labels(label, "refused").inc()
        logger.info("refused an RCAR client: %s", exc)
        raise
    metrics.protocol_versions.labels(label, "accepted").inc()
    if request.ignored_members:
        # Newer clients announce TEE metadata/topology (trustee #1616): accepted, not used.
        logger.info(
            "RCAR Request (protocol %s, tee %s): ignored members %s",
            request.version,
            request.tee,
            ", ".join(request.ignored_members),
        )
    return request


MAX_AUDITED_EVIDENCE = 24 * 1024


def _replayable(ear: EarClaims) -> JsonObject:
    """The appraised (public) claims, so `custodes policy test` can replay this attestation
    against a candidate policy; left out when too large for an audit entry (e.g. long TDX
    event logs)."""
    annotated = ear.annotated_evidence()
    if len(json.dumps(annotated)) > MAX_AUDITED_EVIDENCE:
        return {"annotated_evidence_omitted": "over the audit entry size budget"}
    return {"annotated_evidence": annotated}


@dataclass(frozen=True, slots=True)
class Started:
    """The answer to ``/auth``: the challenge and the session it belongs to."""

    challenge: Challenge
    session: Session


@dataclass(frozen=True, slots=True)
class Attested:
    """The answer to ``/attest``: the EAR token and the completed session."""

    token: str
    session: Session


class Handshake:
    """The RCAR handshake of one tenant: the session state machine (``/auth`` opens a session
    with a challenge, ``/attest`` claims the challenge once and completes the session with a
    token), the runtime-data binding, the appraisal and the audit entry of every outcome."""

    def __init__(self, broker: Broker, services: TenantServices, lanes: Lanes) -> None:
        self._broker = broker
        self._t = services
        self._lanes = lanes

    async def start(self, body: Json) -> Started:
        broker = self._broker
        req = read_request(body, broker.metrics)
        if req.tee not in broker.enabled_tees:
            if req.tee.device:
                raise UnsupportedTee(
                    f"TEE {req.tee} is not supported by this broker as a session's TEE: it is "
                    "device evidence, sent as additional_evidence next to a CPU TEE's"
                )
            if req.tee.insecure:
                raise UnsupportedTee(
                    f"TEE {req.tee} is refused: the sample TEE proves nothing and is accepted "
                    "only by a broker started with --unsafe-allow-sample-tee"
                )
            raise UnsupportedTee(f"TEE {req.tee} is not supported by this broker")
        offered = req.supported_hash_algorithms()
        algorithm = DEFAULT_HASH_ALGORITHM
        extra: Json = ""
        if offered and DEFAULT_HASH_ALGORITHM not in offered:
            # The client cannot do the default; pick the strongest it offers and say so.
            algorithm = max(offered, key=lambda a: a.digest_size)
            extra = {"selected-hash-algorithm": algorithm.value}
        chosen = select_policy(req.policy_selector(), broker.config.attestation.policy_ids())
        session = await self._lanes.store(
            lambda: self._t.sessions.create(
                req.tee.value,
                algorithm.value,
                policy_id=chosen.policy_id,
                policy_selector=chosen.selector,
                protocol_version=req.version,
            )
        )
        return Started(Challenge(nonce=session.nonce, extra_params=extra), session)

    async def attest(self, session_id: str | None, body: Json) -> Attested:
        # One hop off the loop for the whole request (in the tenant's appraisal quota): the
        # session's claim, the appraisal, the durable audit entry and the session's completion
        # are sequential blocking steps, and each hand-off between threads costs more CPU than
        # a store read does.
        return await self._lanes.appraise(lambda: self._attest(session_id, body))

    def _attest(self, session_id: str | None, body: Json) -> Attested:
        sessions = self._t.sessions
        claimed = sessions.claim_challenge(sessions.get(session_id))
        tee = Tee(claimed.tee)
        metrics = self._broker.metrics
        base: JsonObject = {
            "tee": tee.value,
            "policy_id": f"{claimed.policy_id}_cpu",
            "policy_selector": claimed.policy_selector,
            "protocol_version": claimed.protocol_version,
        }
        try:
            att = Attestation.from_json(
                body, allow_rsa1_5=self._broker.config.attestation.unsafe_allow_rsa1_5
            )
            if not hmac.compare_digest(att.runtime_data.nonce.encode(), claimed.nonce.encode()):
                raise SessionError("runtime-data nonce does not match this session's challenge")
            started = time.perf_counter()
            outcome = self._evaluate(claimed, tee, att)
            metrics.attestation_seconds.observe(time.perf_counter() - started)
        except CustodesError as exc:
            metrics.attestations.labels(tee.value, "error").inc()
            reason = {"status": "error", "error": kerr.classify(exc).variant, "reason": str(exc)}
            self._broker.record(self._t.tenant, "attestation", None, {**base, **reason})
            raise
        metrics.attestations.labels(tee.value, outcome.status.value).inc()
        ear = outcome.ear()
        token_id = ear.token_id
        self._broker.record(
            self._t.tenant,
            "attestation",
            None,
            {
                **base,
                "evidence_sha256": hashlib.sha256(
                    json.dumps(att.tee_evidence.primary_evidence, sort_keys=True).encode()
                ).hexdigest(),
                "status": outcome.status.value,
                "trust_vectors": ear.trust_vectors(),
                "token_id": token_id,
                "correlation_id": token_id,
                "policy_version": outcome.policy_version,
                "explanation": outcome.explanation,
                **_replayable(ear),
            },
        )
        if tee.insecure:
            logger.warning(
                "INSECURE: issued a token for %s evidence, which proves nothing "
                "(broker started with unsafe_allow_sample_tee)",
                tee,
            )
        return Attested(outcome.token, sessions.complete(claimed, outcome.token))

    def _evaluate(self, session: Session, tee: Tee, att: Attestation) -> AttestationOutcome:
        """Verify and appraise (in a worker: verifiers and policies are CPU and I/O bound)."""
        algorithm = HashAlgorithm(session.hash_algorithm)
        nonce = att.runtime_data.nonce
        jwk = att.runtime_data.tee_pubkey.jwk
        additional = att.tee_evidence.additional_evidence
        return self._t.attestation.evaluate(
            tee=tee,
            evidence=att.tee_evidence.primary_evidence,
            report_data=runtime_data_digest(nonce, jwk, additional, algorithm),
            runtime_data_claims=runtime_data_object(nonce, jwk, additional),
            init_data_toml=att.init_data.body if att.init_data else None,
            additional_evidence=additional,
            device_report_data=(
                device_runtime_data_digest(nonce, jwk, algorithm) if additional else None
            ),
            policy_id=session.policy_id,
        )
