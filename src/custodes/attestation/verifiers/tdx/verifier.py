"""The Intel TDX verifier (``tdx``): a numbered checklist, each step with its own error.

1. **Parse** the evidence JSON, the quote (v4/v5, exact lengths) and its PCK certificate
   -> :class:`~custodes.errors.MalformedEvidence` (:class:`.errors.UnsupportedQuote` for kinds
   not accepted).
2. **DCAP**: collateral for the platform (FMSPC, CA type), current at ``now`` (injectable
   clock), then dcap-qvl checks the PCK chain and CRLs, the QE report signature and the binding
   of the attestation key, the QE identity and the quote signature
   -> :class:`~custodes.errors.CollateralError` (missing, expired, badly signed collateral),
   :class:`~custodes.errors.SignatureInvalid` (quote or QE report signature),
   :class:`~custodes.errors.ChainInvalid` (PCK chain), :class:`~custodes.errors.TcbError`
   (no TCB level matches).
3. **TCB status** -> a claim for the policy. ``Revoked`` is refused outright
   (:class:`.errors.TcbRevoked`; dcap-qvl already refuses it in step 2, with the same error).
   ``UpToDate``, ``SWHardeningNeeded``, ``ConfigurationNeeded``,
   ``ConfigurationAndSWHardeningNeeded``, ``OutOfDate``, ``OutOfDateConfigurationNeeded``,
   ``TDRelaunchAdvised`` and ``TDRelaunchAdvisedConfigurationNeeded`` are reported as
   ``tcb_status`` with ``advisory_ids`` and the policy decides (the default policy wants
   ``UpToDate``); any other status is a :class:`~custodes.errors.TcbError`. The same rules
   apply to the TD's current TCB level of a TDX 1.5 quote (``tcb_status_current``).
4. **Report data**: REPORTDATA must equal the binding digest followed by zeros up to 64 bytes.
   A digest longer than 64 bytes (or empty) is a :class:`~custodes.errors.BindingMismatch`;
   nothing is ever truncated.
5. **Init-data** (when the request has a digest): MRCONFIGID (48 bytes) must equal a SHA-384
   digest exactly, or a SHA-256 digest followed by 16 zero bytes; any other length (SHA-512)
   is an :class:`~custodes.errors.InitDataMismatch` (upstream would truncate it).
6. **Event log** (when sent): parse it (``MalformedEvidence``), replay SHA-384 from zeros into
   CC-MR 1..4 and compare with RTMR0..3 -> :class:`.errors.RtmrReplayMismatch`.
7. **Claims** with upstream's names (:mod:`.claims`).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Final

import httpx

from custodes._internal.clock import Clock, SystemClock
from custodes.attestation.eventlog import ALG_SHA384, CcEventLog
from custodes.attestation.verifiers.base import TeeClass, VerificationRequest, VerifiedClaims
from custodes.attestation.verifiers.settings import VerifierSettings
from custodes.attestation.verifiers.tdx import _dcap
from custodes.attestation.verifiers.tdx.claims import parsed_claims, tcb_claims
from custodes.attestation.verifiers.tdx.collateral import (
    DEFAULT_CACHE_TTL,
    CollateralSource,
    Fetcher,
    FileCollateralSource,
    PccsCollateralSource,
    TcbUpdate,
    httpx_fetcher,
)
from custodes.attestation.verifiers.tdx.errors import RtmrReplayMismatch, TcbRevoked
from custodes.attestation.verifiers.tdx.evidence import TdxEvidence
from custodes.attestation.verifiers.tdx.quote import TdxQuote
from custodes.errors import BindingMismatch, ConfigError, InitDataMismatch, TcbError
from custodes.types.tee import Tee

REPORT_DATA_SIZE: Final = 64
MR_CONFIG_ID_SIZE: Final = 48

# dcap-qvl reports Intel's TCB status names; older bindings used the QVL result names.
_TCB_STATUSES: Final = {
    "UpToDate": "UpToDate",
    "OK": "UpToDate",
    "SWHardeningNeeded": "SWHardeningNeeded",
    "SW_HARDENING_NEEDED": "SWHardeningNeeded",
    "ConfigurationNeeded": "ConfigurationNeeded",
    "CONFIGURATION_NEEDED": "ConfigurationNeeded",
    "CONFIG_NEEDED": "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded": "ConfigurationAndSWHardeningNeeded",
    "CONFIG_AND_SW_HARDENING_NEEDED": "ConfigurationAndSWHardeningNeeded",
    "OutOfDate": "OutOfDate",
    "OUT_OF_DATE": "OutOfDate",
    "OutOfDateConfigurationNeeded": "OutOfDateConfigurationNeeded",
    "OUT_OF_DATE_CONFIG_NEEDED": "OutOfDateConfigurationNeeded",
    "TDRelaunchAdvised": "TDRelaunchAdvised",
    "TD_RELAUNCH_ADVISED": "TDRelaunchAdvised",
    "TDRelaunchAdvisedConfigurationNeeded": "TDRelaunchAdvisedConfigurationNeeded",
    "TD_RELAUNCH_ADVISED_CONFIG_NEEDED": "TDRelaunchAdvisedConfigurationNeeded",
    "Revoked": "Revoked",
    "REVOKED": "Revoked",
}


@dataclass(frozen=True, slots=True)
class TdxVerifierConfig:
    """Where collateral comes from: a file, or a PCS/PCCS base URL with a ``fetcher``.

    ``root_ca_der`` replaces the Intel SGX Root CA built into dcap-qvl (synthetic test PKIs
    only); leave it ``None`` in production.
    """

    collateral_path: Path | None = None
    pccs_url: str | None = None
    fetcher: Fetcher | None = None
    clock: Clock = field(default_factory=SystemClock)
    tcb_update: TcbUpdate = "early"
    cache_ttl: float = DEFAULT_CACHE_TTL
    root_ca_der: bytes | None = None

    def collateral_source(self) -> CollateralSource:
        path, url = self.collateral_path, self.pccs_url
        if path is not None and url is not None:
            raise ConfigError("TDX verifier takes collateral_path or pccs_url, not both")
        if path is not None:
            return FileCollateralSource(path, update=self.tcb_update)
        if url is None:
            raise ConfigError("TDX verifier needs collateral_path or pccs_url")
        if self.fetcher is None:
            raise ConfigError("TDX verifier with a PCCS URL needs a fetcher")
        return PccsCollateralSource(
            url, self.fetcher, update=self.tcb_update, cache_ttl=self.cache_ttl
        )


class TdxVerifier:
    tee: ClassVar[Tee] = Tee.TDX

    def __init__(self, config: TdxVerifierConfig) -> None:
        self._source = config.collateral_source()
        self._clock = config.clock
        self._root_ca_der = config.root_ca_der

    def verify(self, request: VerificationRequest) -> list[VerifiedClaims]:
        now = self._clock.now()
        # 1. Parse.
        evidence = TdxEvidence.from_json(request.evidence)
        quote = TdxQuote.from_bytes(evidence.quote)
        pck = _dcap.pck_info(quote.raw, quote.signature_data.pck_chain_pem)
        # 2. Collateral and DCAP verification.
        collateral = self._source.collateral_for(
            fmspc=pck.fmspc, ca=pck.ca, pck_chain_pem=quote.signature_data.pck_chain_pem, now=now
        )
        collateral.check(now)
        result = _dcap.verify(
            quote.raw,
            pck_crl_issuer_chain=collateral.pck_crl_issuer_chain,
            root_ca_crl=collateral.root_ca_crl,
            pck_crl=collateral.pck_crl,
            tcb_info_issuer_chain=collateral.tcb_info_issuer_chain,
            tcb_info=collateral.tcb_info,
            tcb_info_signature=collateral.tcb_info_signature,
            qe_identity_issuer_chain=collateral.qe_identity_issuer_chain,
            qe_identity=collateral.qe_identity,
            qe_identity_signature=collateral.qe_identity_signature,
            now=int(now),
            root_ca_der=self._root_ca_der,
        )
        # 3. TCB status: at launch, and now (after a TD-preserving update; TDX 1.5 quotes).
        status = tcb_status(result.status)
        current = tcb_status(result.current.status) if result.current is not None else None
        # 4. Report data.
        check_report_data(quote, request.report_data)
        # 5. Init-data.
        if request.init_data_digest is not None:
            check_init_data(quote, request.init_data_digest)
        # 6. Event log.
        eventlog = None
        if evidence.cc_eventlog is not None:
            eventlog = CcEventLog.from_bytes(evidence.cc_eventlog)
            check_rtmrs(quote, eventlog)
        # 7. Claims.
        claims = parsed_claims(quote, eventlog, pck) | tcb_claims(result, status, current)
        return [VerifiedClaims(tee_class=TeeClass.CPU, claims=claims)]


def tcb_status(reported: str) -> str:
    """Step 3: the policy-visible TCB status; ``Revoked`` and unknown statuses are refused."""
    status = _TCB_STATUSES.get(reported)
    if status is None:
        raise TcbError(f"unknown TCB status {reported!r}")
    if status == "Revoked":
        raise TcbRevoked("the platform TCB is revoked")
    return status


def check_report_data(quote: TdxQuote, expected: bytes) -> None:
    """Step 4: REPORTDATA == expected ‖ zeros (64 bytes); never truncates."""
    if not expected or len(expected) > REPORT_DATA_SIZE:
        raise BindingMismatch(f"a {len(expected)}-byte binding digest cannot fill REPORTDATA")
    padded = expected + bytes(REPORT_DATA_SIZE - len(expected))
    if not hmac.compare_digest(padded, quote.report_data):
        raise BindingMismatch("REPORTDATA does not match the session's binding digest")


def check_init_data(quote: TdxQuote, digest: bytes) -> None:
    """Step 5: MRCONFIGID == SHA-384 digest, or SHA-256 digest ‖ 16 zero bytes."""
    if len(digest) not in (32, 48):
        raise InitDataMismatch(f"a {len(digest)}-byte init-data digest cannot fill MRCONFIGID")
    padded = digest + bytes(MR_CONFIG_ID_SIZE - len(digest))
    if not hmac.compare_digest(padded, quote.mr_config_id):
        raise InitDataMismatch("MRCONFIGID does not match the init-data digest")


def check_rtmrs(quote: TdxQuote, eventlog: CcEventLog) -> None:
    """Step 6: replaying CC-MR 1..4 (SHA-384) gives RTMR0..3."""
    for rtmr, value in enumerate(quote.rtmrs):
        if not hmac.compare_digest(eventlog.replay(rtmr + 1, ALG_SHA384), value):
            raise RtmrReplayMismatch(f"the event log does not replay to RTMR{rtmr}")


def from_settings(settings: VerifierSettings, clock: Clock, *, network: bool) -> TdxVerifier:
    """The registry's factory: collateral from the configured file or, only with ``network``,
    from the configured PCCS."""
    pccs_url = settings.tdx_pccs_url if network else None
    return TdxVerifier(
        TdxVerifierConfig(
            collateral_path=settings.tdx_collateral,
            pccs_url=pccs_url,
            fetcher=httpx_fetcher(httpx.Client()) if pccs_url else None,
            clock=clock,
        )
    )
