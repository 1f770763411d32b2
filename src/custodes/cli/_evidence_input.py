"""Evidence given on the command line, verified offline: what `custodes evidence verify` and
`custodes policy test --evidence` share.

This module owns the evidence options (their names, types and checks; each command words its
own help), the session binding they give (``--report-data``, or ``--nonce``/``--tee-pubkey``
recomputed as the broker does), reading the evidence and init-data files (the evidence as
strictly as the broker reads it), and how a verification failure is reported (the checklist
step each error names, and its error class). The verifier is the registry's
(``attestation/verifiers/registry.py``), as the broker's, with every network source off.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from custodes._internal import strictjson
from custodes._internal.clock import Clock, FrozenClock, SystemClock
from custodes.attestation.initdata import MAX_INITDATA_BYTES, InitData
from custodes.attestation.verifiers.base import VerificationRequest, VerifiedClaims, Verifier
from custodes.attestation.verifiers.registry import REGISTRY, VerifierSettings, build_verifier
from custodes.cli._common import read_limited
from custodes.cli._output import rfc3339 as rfc3339  # re-exported for its users
from custodes.errors import (
    ConfigError,
    CustodesError,
    EvidenceError,
    MalformedEvidence,
)
from custodes.protocol.binding import DEFAULT_HASH_ALGORITHM, HashAlgorithm
from custodes.types.json import Json
from custodes.types.tee import Tee

if TYPE_CHECKING:
    from custodes.protocol.messages import RuntimeData

# The verifiers (and with them cryptography and the TEE parsers) are imported when evidence is
# verified or a failure reported, not to declare the options: `--help` stays light.

# The verifier registry's table, not its verifiers: reading it imports none of them.
SUPPORTED_TEES: Final = tuple(REGISTRY)
COLLATERAL_TEES: Final = frozenset(t for t, r in REGISTRY.items() if r.tdx_collateral)
VCEK_STORE_TEES: Final = frozenset(t for t, r in REGISTRY.items() if r.vcek_store)
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
        fail(f"--collateral applies to {_names(COLLATERAL_TEES)} only")
    if tee in COLLATERAL_TEES and args.collateral is None:
        fail(f"{tee} {missing_collateral}")
    if args.vcek_store is not None and tee not in VCEK_STORE_TEES:
        fail(f"--vcek-store applies to {_names(VCEK_STORE_TEES)} only")


def _names(tees: frozenset[Tee]) -> str:
    """``a``, ``a and b``, ``a, b and c``: in the registry's order."""
    names = [t.value for t in SUPPORTED_TEES if t in tees]
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


# --- reading inputs ------------------------------------------------------------------------


def _tee_pubkey(value: str) -> Json:
    if value.lstrip().startswith("{"):
        # The argument's own bytes (argv that is not UTF-8 arrives surrogate-escaped).
        raw = value.encode("utf-8", "surrogateescape")
    else:
        raw = read_limited(value, MAX_JWK_BYTES, "TEE public key file")
    return strictjson.loads(raw, error=lambda why: ConfigError(f"--tee-pubkey is not JSON: {why}"))


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
    tee = getattr(args, "tee", None)
    if tee is not None and Tee(tee).device:
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
        # Offline: the registry's verifier with every network source off.
        settings = VerifierSettings(
            snp_vcek_store_dir=args.vcek_store, tdx_collateral=args.collateral
        )
        verifier = build_verifier(tee, settings, clock, network=False)
        raw = read_limited(args.evidence, MAX_EVIDENCE_BYTES, "evidence file", allow_stdin=True)
        return cls(tee, args.evidence, raw, clock, verifier)

    def verify(self, report_data: bytes, init_data: InitData | None) -> list[VerifiedClaims]:
        """The verifier's claims; ``MalformedEvidence`` when the file is not JSON, else the
        verifier's own ``EvidenceError`` when the evidence does not verify. The file is read
        as strictly as the broker reads a request (duplicate keys, NaN, its depth limit)."""
        evidence = strictjson.loads(
            self.raw, error=lambda why: MalformedEvidence(f"{self.path} is not JSON: {why}")
        )
        request = VerificationRequest(
            tee=self.tee,
            evidence=evidence,
            report_data=report_data,
            init_data_digest=None if init_data is None else init_data.digest,
        )
        return self.verifier.verify(request)


# --- reporting a failure -------------------------------------------------------------------


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
    return f"step {error.step} ({detail})"


def print_invalid(error: EvidenceError) -> None:
    """``custodes: evidence invalid: step ...: why`` on standard error."""
    print(f"custodes: evidence invalid: {describe_failure(error)}: {error}", file=sys.stderr)
