"""`custodes evidence verify`: verify one piece of TEE evidence offline, as an auditor would.

The evidence goes through exactly the verifier the broker uses (same checklist, same claims),
with every network source switched off: AMD KDS and Intel PCS/PCCS are never contacted, so the
VCEK must be in the evidence or in ``--vcek-store`` and TDX collateral must come from
``--collateral``. ``--at`` pins the verifier's clock, so that old evidence can be checked
against the certificate and collateral windows of its own time.

Exit codes: 0 the evidence verified (claims on stdout, JSON); 1 it did not (the failed step and
error class on stderr) or an input file is unusable; 2 the command line is wrong.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from custodes._internal.clock import Clock, FrozenClock, SystemClock
from custodes.attestation.initdata import MAX_INITDATA_BYTES, InitData
from custodes.attestation.verifiers.azure import (
    AzSnpVtpmVerifier,
    AzTdxVtpmVerifier,
    AzureVerifierConfig,
)
from custodes.attestation.verifiers.azure.errors import HclBindingMismatch
from custodes.attestation.verifiers.base import VerificationRequest, VerifiedClaims, Verifier
from custodes.attestation.verifiers.sample import SampleVerifier
from custodes.attestation.verifiers.snp import SnpVerifier, SnpVerifierConfig
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
from custodes.attestation.verifiers.tdx import TdxVerifier, TdxVerifierConfig
from custodes.attestation.verifiers.tdx.errors import RtmrReplayMismatch
from custodes.attestation.verifiers.tpm import TpmVerifier
from custodes.attestation.verifiers.tpm.errors import (
    AkPublicKeyInvalid,
    PcrDigestMismatch,
    PcrSelectionUnsupported,
    QuoteHeaderInvalid,
)
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
from custodes.protocol.messages import RuntimeData
from custodes.types.json import Json, JsonObject
from custodes.types.tee import Tee

logger = logging.getLogger(__name__)

EXIT_INVALID: Final = 1
SUPPORTED_TEES: Final = (
    Tee.SNP,
    Tee.TDX,
    Tee.TPM,
    Tee.AZ_SNP_VTPM,
    Tee.AZ_TDX_VTPM,
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

# The checklist step each error class reports, most specific class first (looked up along the
# class's MRO). The shared classes of custodes.errors name the generic steps.
_STEPS: Final[dict[type[EvidenceError], str]] = {
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

EPILOG = """\
binding (exactly one form):
  --report-data HEX                the binding digest itself (e.g. 48 bytes for SHA-384)
  --nonce N --tee-pubkey JWK       recompute it as the broker does:
                                   HASH(JCS({"additional-evidence", "nonce", "tee-pubkey"}))

network: none. AMD KDS and Intel PCS/PCCS are never contacted; the SNP VCEK must be in the
evidence or in --vcek-store, and tdx / az-tdx-vtpm need --collateral.

exit codes: 0 verified (claims as JSON on stdout); 1 not verified (step and error on stderr) or
an input file is unusable; 2 usage error.

examples:
  custodes evidence verify --tee snp evidence.json --report-data 7e7320... --at 2026-01-01T00:00:00Z
  custodes evidence verify --tee tdx quote.json --collateral collateral.json \\
      --nonce "$NONCE" --tee-pubkey tee-key.jwk --init-data initdata.toml
  custodes evidence verify --tee az-snp-vtpm evidence.json --report-data 982f5c...
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "evidence",
        help="verify TEE evidence offline (auditors)",
        description="Work with TEE evidence outside the broker.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    v = actions.add_parser(
        "verify",
        help="verify one piece of evidence with the broker's verifier, offline",
        description=(
            "Verify EVIDENCE_FILE (the TEE's evidence JSON, as the guest sends it in "
            "tee-evidence.primary_evidence) with the same verifier the broker runs, and print "
            "its claims. No network access: KDS and PCCS are never used."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    v.add_argument(
        "--tee",
        required=True,
        choices=[t.value for t in SUPPORTED_TEES],
        help="the TEE type of the evidence (sample is INSECURE: it proves nothing)",
    )
    v.add_argument(
        "evidence", metavar="EVIDENCE_FILE", help="evidence JSON file ('-' for standard input)"
    )
    b = v.add_argument_group("binding to the session")
    b.add_argument(
        "--report-data",
        metavar="HEX",
        type=_hex_bytes,
        help="the exact binding digest (unpadded), in hex",
    )
    b.add_argument("--nonce", metavar="N", help="the challenge nonce, verbatim")
    b.add_argument(
        "--tee-pubkey",
        metavar="JWK_FILE_OR_JSON",
        help="the tee-pubkey JWK exactly as the guest sent it: a file, or the JSON text",
    )
    b.add_argument(
        "--additional-evidence",
        metavar="S",
        help="the additional_evidence string as sent (default: the empty string)",
    )
    b.add_argument(
        "--hash",
        choices=[a.value for a in HashAlgorithm],
        help=f"hash of the binding (default: {DEFAULT_HASH_ALGORITHM.value})",
    )
    v.add_argument(
        "--init-data",
        metavar="FILE",
        type=Path,
        help="the init-data TOML the guest sent; its digest must be bound by the evidence",
    )
    v.add_argument(
        "--collateral",
        metavar="PATH",
        type=Path,
        help="DCAP collateral JSON (dcap-qvl or PcsClientTool form): tdx, az-tdx-vtpm",
    )
    v.add_argument(
        "--vcek-store",
        metavar="DIR",
        type=Path,
        help="offline VCEK store (vcek/<hwid>/...vcek.der), when the SNP evidence has no VCEK",
    )
    v.add_argument(
        "--at",
        metavar="TIME",
        type=_timestamp,
        help="verify as of TIME (RFC 3339 or Unix seconds) instead of now: certificate and "
        "collateral validity windows are checked at that time",
    )
    v.set_defaults(func=_verify, usage_error=v.error)


# --- argument types ----------------------------------------------------------------------


def _hex_bytes(text: str) -> bytes:
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


def _timestamp(text: str) -> float:
    try:
        return parse_time(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


# --- the command -------------------------------------------------------------------------


def _check_usage(args: argparse.Namespace, tee: Tee) -> None:
    fail = args.usage_error
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
        fail(
            f"{tee} evidence needs DCAP collateral for its quote: pass --collateral FILE "
            "(this command never contacts Intel PCS or a PCCS)"
        )
    if args.vcek_store is not None and tee is not Tee.SNP:
        fail("--vcek-store applies to snp only")


def _read_limited(path: str, limit: int, what: str, *, allow_stdin: bool = False) -> bytes:
    try:
        if path == "-" and allow_stdin:
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
        text = _read_limited(value, MAX_JWK_BYTES, "TEE public key file")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ConfigError(f"--tee-pubkey is not JSON: {e}") from e


def binding_digest(args: argparse.Namespace) -> bytes:
    """The report data the evidence must bind: given, or recomputed as the broker does."""
    if args.report_data is not None:
        digest: bytes = args.report_data
        return digest
    runtime = RuntimeData.from_json(
        {"nonce": args.nonce, "tee-pubkey": _tee_pubkey(args.tee_pubkey)},
        # Only a digest is computed here; a broker that allows RSA1_5 keys binds them too.
        allow_rsa1_5=True,
    )
    alg = HashAlgorithm(args.hash) if args.hash else DEFAULT_HASH_ALGORITHM
    return runtime.digest(args.additional_evidence or "", alg)


def _init_data(path: Path) -> tuple[InitData, JsonObject]:
    """The init-data and its claims; its digest is over the file's exact bytes."""
    raw = _read_limited(str(path), MAX_INITDATA_BYTES, "init-data file")
    try:
        init_data = InitData.parse(raw.decode("utf-8"))  # no newline translation
        return init_data, init_data.claims()
    except UnicodeDecodeError as e:
        raise ConfigError(f"init-data file {path} is not UTF-8") from e
    except EvidenceError as e:
        raise ConfigError(f"init-data file {path}: {e}") from e


def build_verifier(
    tee: Tee, clock: Clock, *, collateral: Path | None = None, vcek_store: Path | None = None
) -> Verifier:
    """The broker's verifier for ``tee`` with every network source off."""
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
    raise ConfigError(f"no offline verifier for {tee}")


def failed_step(error: EvidenceError) -> str:
    """The checklist step an evidence error belongs to (see ``_STEPS``)."""
    for cls in type(error).__mro__:
        step = _STEPS.get(cls)
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


def _load_evidence(raw: bytes, path: str) -> Json:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise MalformedEvidence(f"{path} is not JSON: {e}") from e


def _verify(args: argparse.Namespace) -> int:
    tee = Tee(args.tee)
    _check_usage(args, tee)
    if tee.insecure:
        print(INSECURE_NOTE, file=sys.stderr)
    report_data = binding_digest(args)
    init_data = None if args.init_data is None else _init_data(args.init_data)
    clock: Clock = FrozenClock(args.at) if args.at is not None else SystemClock()
    verifier = build_verifier(tee, clock, collateral=args.collateral, vcek_store=args.vcek_store)
    raw = _read_limited(args.evidence, MAX_EVIDENCE_BYTES, "evidence file", allow_stdin=True)
    at = clock.now()
    try:
        evidence = _load_evidence(raw, args.evidence)
        request = VerificationRequest(
            tee=tee,
            evidence=evidence,
            report_data=report_data,
            init_data_digest=None if init_data is None else init_data[0].digest,
        )
        results = verifier.verify(request)
    except EvidenceError as e:
        print(f"custodes: evidence invalid: {describe_failure(e)}: {e}", file=sys.stderr)
        return EXIT_INVALID
    except CustodesError:
        raise
    except Exception as e:  # a verifier bug must still not end in a traceback for an auditor
        logger.debug("verifier failure", exc_info=True)
        print(
            f"custodes: error: internal error in the {tee} verifier ({type(e).__name__}): {e}; "
            "the evidence was NOT verified (please report this; -vv shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_INVALID
    output: JsonObject = {
        "tee": tee.value,
        "verified": True,
        "at": rfc3339(at),
        "report_data": report_data.hex(),
        "init_data_digest": None if init_data is None else init_data[0].digest.hex(),
        "claims": _by_submodule(results),
    }
    if init_data is not None:
        output["init_data_claims"] = init_data[1]
    if tee.insecure:
        output["insecure"] = True
    print(json.dumps(output, indent=2, sort_keys=True))
    return 0


def _by_submodule(results: list[VerifiedClaims]) -> JsonObject:
    """Claims keyed as the EAR token's submodules are: ``cpu0``, ``gpu0``, ``gpu1``, ..."""
    out: JsonObject = {}
    counts: dict[str, int] = {}
    for result in results:
        index = counts.get(result.tee_class.value, 0)
        counts[result.tee_class.value] = index + 1
        out[f"{result.tee_class.value}{index}"] = result.claims
    return out
