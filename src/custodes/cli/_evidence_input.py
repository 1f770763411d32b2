"""Evidence given on the command line, verified offline: what `custodes evidence verify` and
`custodes policy test --evidence` share.

This module owns the evidence options (their names, types and checks; each command words its
own help), the session binding they give (``--report-data``, or ``--nonce``/``--tee-pubkey``
recomputed as the broker does), reading the evidence and init-data files, the broker's verifier
with every network source off, and how a verification failure is reported (the checklist step
and error class).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from custodes._internal.clock import Clock, FrozenClock, SystemClock
from custodes.attestation.initdata import MAX_INITDATA_BYTES, InitData
from custodes.attestation.verifiers.base import VerificationRequest, VerifiedClaims, Verifier
from custodes.cli._output import rfc3339 as rfc3339  # re-exported for its users
from custodes.errors import (
    BindingMismatch,
    ChainInvalid,
    CollateralError,
    ConfigError,
    CustodesError,
    EvidenceError,
    InitDataMismatch,
    MalformedEvidence,
    SignatureInvalid,
    TcbError,
    VerificationError,
)
from custodes.protocol.binding import DEFAULT_HASH_ALGORITHM, HashAlgorithm
from custodes.types.json import Json
from custodes.types.tee import Tee

if TYPE_CHECKING:
    from custodes.protocol.messages import RuntimeData

# The verifiers (and with them cryptography and the TEE parsers) are imported when evidence is
# verified or a failure reported, not to declare the options: `--help` stays light.

SUPPORTED_TEES: Final = (
    Tee.SNP,
    Tee.TDX,
    Tee.TPM,
    Tee.AZ_SNP_VTPM,
    Tee.AZ_TDX_VTPM,
    Tee.NVIDIA,
    Tee.SAMPLE,
)
COLLATERAL_TEES: Final = frozenset({Tee.TDX, Tee.AZ_TDX_VTPM})
# The largest TDX evidence (a 16 MiB event log in base64) fits with room to spare.
MAX_EVIDENCE_BYTES: Final = 64 * 1024 * 1024
MAX_JWK_BYTES: Final = 64 * 1024
_HEX: Final = re.compile(r"(?:[0-9a-fA-F]{2})+")
_UNIX_SECONDS: Final = re.compile(r"\d+(?:\.\d+)?")
MAX_TIME: Final = 253402300800.0  # 10000-01-01T00:00:00Z

INSECURE_NOTE: Final = (
    "custodes: WARNING: the sample TEE is INSECURE: its evidence is plain JSON that anyone can "
    "write, signed by no hardware; it proves nothing. Only the report-data binding is checked."
)

# The evidence options by dest, in the order add_evidence_arguments defines them.
EVIDENCE_OPTIONS: Final = (
    "tee",
    "report_data",
    "nonce",
    "tee_pubkey",
    "additional_evidence",
    "hash",
    "init_data",
    "collateral",
    "vcek_store",
    "at",
)


@cache
def _steps() -> dict[type[EvidenceError], str]:
    """The checklist step each error class reports, most specific class first (looked up along
    the class's MRO). The shared classes of custodes.errors name the generic steps."""
    from custodes.attestation.verifiers.azure.errors import HclBindingMismatch
    from custodes.attestation.verifiers.nvidia.errors import (
        ArchitectureUnsupported,
        FwidMismatch,
        SpdmMessageInvalid,
    )
    from custodes.attestation.verifiers.snp.errors import (
        HwIdMismatch,
        ProcessorUnsupported,
        ReportVersionUnsupported,
        SignatureAlgorithmUnsupported,
        TcbMismatch,
        VekExtensionInvalid,
        VekUnavailable,
        VmplNotZero,
    )
    from custodes.attestation.verifiers.tdx.errors import RtmrReplayMismatch
    from custodes.attestation.verifiers.tpm.errors import (
        AkPublicKeyInvalid,
        PcrDigestMismatch,
        PcrSelectionUnsupported,
        QuoteHeaderInvalid,
    )

    return {
        ReportVersionUnsupported: "report-version",
        SignatureAlgorithmUnsupported: "signature-algorithm",
        VmplNotZero: "vmpl",
        ProcessorUnsupported: "processor",
        VekUnavailable: "vcek",
        VekExtensionInvalid: "vcek-extensions",
        HwIdMismatch: "vcek-extensions",
        TcbMismatch: "vcek-extensions",
        AkPublicKeyInvalid: "ak-public",
        QuoteHeaderInvalid: "quote-header",
        PcrSelectionUnsupported: "pcrs",
        PcrDigestMismatch: "pcrs",
        RtmrReplayMismatch: "event-log",
        ArchitectureUnsupported: "architecture",
        SpdmMessageInvalid: "spdm-message",
        FwidMismatch: "fwid",
        # Not the session binding: the hardware report does not bind the HCL's runtime data.
        HclBindingMismatch: "hcl-binding",
        MalformedEvidence: "parse",
        CollateralError: "collateral",
        ChainInvalid: "certificate-chain",
        SignatureInvalid: "signature",
        TcbError: "tcb",
        BindingMismatch: "report-data",
        InitDataMismatch: "init-data",
        VerificationError: "verification",
        EvidenceError: "evidence",
    }


# --- the options ---------------------------------------------------------------------------


def add_evidence_arguments(
    options: argparse._ActionsContainer,
    *,
    binding: argparse._ActionsContainer | None = None,
    tee_required: bool,
    wording: Mapping[str, tuple[str | None, str]],
) -> None:
    """Define the evidence options (``EVIDENCE_OPTIONS``, in that order) on ``options``, those
    of the session binding on ``binding`` when given. ``wording`` maps each dest but ``hash``
    to its (metavar, help), so that each command keeps its own help page."""

    def add(target: argparse._ActionsContainer, dest: str, **kwargs: Any) -> None:
        metavar, text = wording[dest]
        target.add_argument("--" + dest.replace("_", "-"), metavar=metavar, help=text, **kwargs)

    b = options if binding is None else binding
    add(options, "tee", required=tee_required, choices=[t.value for t in SUPPORTED_TEES])
    add(b, "report_data", type=hex_bytes)
    add(b, "nonce")
    add(b, "tee_pubkey")
    add(b, "additional_evidence")
    b.add_argument(
        "--hash",
        choices=[a.value for a in HashAlgorithm],
        help=f"hash of the binding (default: {DEFAULT_HASH_ALGORITHM.value})",
    )
    add(options, "init_data", type=Path)
    add(options, "collateral", type=Path)
    add(options, "vcek_store", type=Path)
    add(options, "at", type=timestamp)


def hex_bytes(text: str) -> bytes:
    """Non-empty, even-length hex (``0x`` allowed) as bytes; argparse ``type=``."""
    cleaned = text.removeprefix("0x")
    if not _HEX.fullmatch(cleaned):
        raise argparse.ArgumentTypeError("expected a non-empty, even-length hex string")
    return bytes.fromhex(cleaned)


def parse_time(text: str) -> float:
    """Unix seconds from ``text``: RFC 3339 with an offset (``Z`` allowed) or Unix seconds."""
    if _UNIX_SECONDS.fullmatch(text):
        seconds = float(text)
    else:
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{text!r} is neither RFC 3339 nor Unix seconds") from None
        if when.tzinfo is None:
            raise ValueError(f"{text!r} has no UTC offset (write e.g. 2025-06-01T00:00:00Z)")
        seconds = when.timestamp()
    if not 0 <= seconds < MAX_TIME:
        raise ValueError(f"{text!r} is not between 1970 and 9999")
    return seconds


def timestamp(text: str) -> float:
    """``parse_time`` as an argparse ``type=`` (a usage error otherwise)."""
    try:
        return parse_time(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def check_evidence_usage(
    args: argparse.Namespace, tee: Tee, fail: Callable[[str], None], *, missing_collateral: str
) -> None:
    """Usage errors of the evidence options given for ``tee``; ``missing_collateral`` words
    the error (after the TEE's name) for a quote given without its collateral."""
    derived = args.nonce is not None or args.tee_pubkey is not None
    if args.report_data is not None and derived:
        fail("give either --report-data or --nonce/--tee-pubkey, not both")
    if args.report_data is None:
        if not derived:
            fail("the binding is required: give --report-data HEX, or --nonce and --tee-pubkey")
        if args.nonce is None or args.tee_pubkey is None:
            fail("--nonce and --tee-pubkey go together")
    elif args.additional_evidence is not None or args.hash is not None:
        fail("--additional-evidence and --hash apply to --nonce/--tee-pubkey only")
    if args.collateral is not None and tee not in COLLATERAL_TEES:
        fail("--collateral applies to tdx and az-tdx-vtpm only")
    if tee in COLLATERAL_TEES and args.collateral is None:
        fail(f"{tee} {missing_collateral}")
    if args.vcek_store is not None and tee is not Tee.SNP:
        fail("--vcek-store applies to snp only")


# --- reading inputs ------------------------------------------------------------------------


def read_limited(path: str | Path, limit: int, what: str, *, allow_stdin: bool = False) -> bytes:
    """At most ``limit`` bytes of ``path`` (``-``: standard input, when allowed); a
    ``ConfigError`` naming ``what`` when unreadable or larger."""
    try:
        if str(path) == "-" and allow_stdin:
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror or e}") from e
    if len(data) > limit:
        raise ConfigError(f"{what} {path} is larger than {limit} bytes")
    return data


def _tee_pubkey(value: str) -> Json:
    text: str | bytes = value
    if not value.lstrip().startswith("{"):
        text = read_limited(value, MAX_JWK_BYTES, "TEE public key file")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ConfigError(f"--tee-pubkey is not JSON: {e}") from e


def session_binding(args: argparse.Namespace) -> tuple[bytes, RuntimeData | None]:
    """The report data the evidence must bind: given, or recomputed as the broker does from
    the runtime data, returned too (``None`` with ``--report-data``)."""
    from custodes.protocol.messages import RuntimeData

    if args.report_data is not None:
        digest: bytes = args.report_data
        return digest, None
    runtime = RuntimeData.from_json(
        {"nonce": args.nonce, "tee-pubkey": _tee_pubkey(args.tee_pubkey)},
        # Only a digest is computed here; a broker that allows RSA1_5 keys binds them too.
        allow_rsa1_5=True,
    )
    alg = HashAlgorithm(args.hash) if args.hash else DEFAULT_HASH_ALGORITHM
    if getattr(args, "tee", None) == Tee.NVIDIA.value:
        # Device evidence binds the shorter {"nonce", "tee-pubkey"} object, as upstream's.
        return runtime.device_digest(alg), runtime
    return runtime.digest(args.additional_evidence or "", alg), runtime


def read_init_data(path: Path) -> InitData:
    """The init-data file; its digest is over the file's exact bytes."""
    raw = read_limited(path, MAX_INITDATA_BYTES, "init-data file")
    try:
        return InitData.parse(raw.decode("utf-8"))  # no newline translation
    except UnicodeDecodeError as e:
        raise ConfigError(f"init-data file {path} is not UTF-8") from e
    except EvidenceError as e:
        raise ConfigError(f"init-data file {path}: {e}") from e


# --- verifying -----------------------------------------------------------------------------


def build_verifier(
    tee: Tee, clock: Clock, *, collateral: Path | None = None, vcek_store: Path | None = None
) -> Verifier:
    """The broker's verifier for ``tee`` with every network source off."""
    from custodes.attestation.verifiers.azure import (
        AzSnpVtpmVerifier,
        AzTdxVtpmVerifier,
        AzureVerifierConfig,
    )
    from custodes.attestation.verifiers.nvidia import NvidiaVerifier, NvidiaVerifierConfig
    from custodes.attestation.verifiers.sample import SampleVerifier
    from custodes.attestation.verifiers.snp import SnpVerifier, SnpVerifierConfig
    from custodes.attestation.verifiers.tdx import TdxVerifier, TdxVerifierConfig
    from custodes.attestation.verifiers.tpm import TpmVerifier

    if tee is Tee.SAMPLE:
        return SampleVerifier()
    if tee is Tee.SNP:
        return SnpVerifier(SnpVerifierConfig(vcek_store_dir=vcek_store, clock=clock))
    if tee is Tee.TPM:
        return TpmVerifier()
    if tee is Tee.AZ_SNP_VTPM:
        return AzSnpVtpmVerifier(AzureVerifierConfig(clock=clock))
    if tee is Tee.TDX:
        return TdxVerifier(TdxVerifierConfig(collateral_path=collateral, clock=clock))
    if tee is Tee.AZ_TDX_VTPM:
        return AzTdxVtpmVerifier(AzureVerifierConfig(clock=clock, tdx_collateral_path=collateral))
    if tee is Tee.NVIDIA:
        return NvidiaVerifier(NvidiaVerifierConfig(clock=clock))
    raise ConfigError(f"no offline verifier for {tee}")


def warn_if_insecure(tee: Tee) -> None:
    if tee.insecure:
        print(INSECURE_NOTE, file=sys.stderr)


@dataclass(frozen=True, slots=True)
class OfflineEvidence:
    """The evidence file's bytes and the verifier for them, on the ``--at`` clock."""

    tee: Tee
    path: str
    raw: bytes
    clock: Clock
    verifier: Verifier

    @classmethod
    def from_args(cls, args: argparse.Namespace, tee: Tee) -> OfflineEvidence:
        """The clock, the verifier, then the evidence file (a ``ConfigError`` if unreadable)."""
        clock: Clock = FrozenClock(args.at) if args.at is not None else SystemClock()
        verifier = build_verifier(
            tee, clock, collateral=args.collateral, vcek_store=args.vcek_store
        )
        raw = read_limited(args.evidence, MAX_EVIDENCE_BYTES, "evidence file", allow_stdin=True)
        return cls(tee, args.evidence, raw, clock, verifier)

    def verify(self, report_data: bytes, init_data: InitData | None) -> list[VerifiedClaims]:
        """The verifier's claims; ``MalformedEvidence`` when the file is not JSON, else the
        verifier's own ``EvidenceError`` when the evidence does not verify."""
        try:
            evidence = json.loads(self.raw)
        except (ValueError, RecursionError) as e:
            raise MalformedEvidence(f"{self.path} is not JSON: {e}") from e
        request = VerificationRequest(
            tee=self.tee,
            evidence=evidence,
            report_data=report_data,
            init_data_digest=None if init_data is None else init_data.digest,
        )
        return self.verifier.verify(request)


# --- reporting a failure -------------------------------------------------------------------


def failed_step(error: EvidenceError) -> str:
    """The checklist step an evidence error belongs to (see ``_steps``)."""
    steps = _steps()
    for cls in type(error).__mro__:
        step = steps.get(cls)
        if step is not None:
            return step
    return "evidence"


def describe_failure(error: EvidenceError) -> str:
    """``step S (shared-code[/specific-code, Class])``: what failed, for people and scripts."""
    shared: type[CustodesError] = type(error)
    for cls in type(error).__mro__:
        if issubclass(cls, CustodesError) and cls.__module__ == CustodesError.__module__:
            shared = cls
            break
    detail = shared.code
    if type(error) is not shared:
        detail += f"/{error.code}, {type(error).__name__}"
    return f"step {failed_step(error)} ({detail})"


def print_invalid(error: EvidenceError) -> None:
    """``custodes: evidence invalid: step ...: why`` on standard error."""
    print(f"custodes: evidence invalid: {describe_failure(error)}: {error}", file=sys.stderr)
