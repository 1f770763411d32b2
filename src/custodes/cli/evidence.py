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
import logging
import sys
from pathlib import Path
from typing import Final

from custodes.attestation.initdata import InitData
from custodes.attestation.verifiers.base import VerifiedClaims
from custodes.cli._evidence_input import (
    OfflineEvidence,
    add_evidence_arguments,
    check_evidence_usage,
    print_invalid,
    read_init_data,
    rfc3339,
    session_binding,
    warn_if_insecure,
)

# describe_failure and parse_time are imported from here by other modules.
from custodes.cli._evidence_input import describe_failure as describe_failure
from custodes.cli._evidence_input import parse_time as parse_time
from custodes.cli._output import add_output_format, emit
from custodes.errors import ConfigError, CustodesError, EvidenceError
from custodes.types.json import JsonObject
from custodes.types.tee import Tee

logger = logging.getLogger(__name__)

EXIT_INVALID: Final = 1

# (metavar, help) of each evidence option on this command's help page.
_WORDING: Final[dict[str, tuple[str | None, str]]] = {
    "tee": (None, "the TEE type of the evidence (sample is INSECURE: it proves nothing)"),
    "report_data": ("HEX", "the exact binding digest (unpadded), in hex"),
    "nonce": ("N", "the challenge nonce, verbatim"),
    "tee_pubkey": (
        "JWK_FILE_OR_JSON",
        "the tee-pubkey JWK exactly as the guest sent it: a file, or the JSON text",
    ),
    "additional_evidence": (
        "S",
        "the additional_evidence string as sent (default: the empty string)",
    ),
    "init_data": (
        "FILE",
        "the init-data TOML the guest sent; its digest must be bound by the evidence",
    ),
    "collateral": (
        "PATH",
        "DCAP collateral JSON (dcap-qvl or PcsClientTool form): tdx, az-tdx-vtpm",
    ),
    "vcek_store": (
        "DIR",
        "offline VCEK store (vcek/<hwid>/...vcek.der), when the SNP evidence has no VCEK",
    ),
    "at": (
        "TIME",
        "verify as of TIME (RFC 3339 or Unix seconds) instead of now: certificate and "
        "collateral validity windows are checked at that time",
    ),
}
_MISSING_COLLATERAL: Final = (
    "evidence needs DCAP collateral for its quote: pass --collateral FILE "
    "(this command never contacts Intel PCS or a PCCS)"
)

EPILOG = """\
binding (exactly one form):
  --report-data HEX                the binding digest itself (e.g. 48 bytes for SHA-384)
  --nonce N --tee-pubkey JWK       recompute it as the broker does:
                                   HASH(JCS({"additional-evidence", "nonce", "tee-pubkey"}))

network: none. AMD KDS and Intel PCS/PCCS are never contacted; the SNP VCEK must be in the
evidence or in --vcek-store, and tdx / az-tdx-vtpm need --collateral.

exit codes: 0 verified (claims as JSON on stdout); 1 not verified (step and error on stderr) or
an input file is unusable; 2 usage error.

Examples:
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
    binding = v.add_argument_group("binding to the session")
    add_evidence_arguments(v, binding=binding, tee_required=True, wording=_WORDING)
    v.add_argument(
        "evidence", metavar="EVIDENCE_FILE", help="evidence JSON file ('-' for standard input)"
    )
    # The claims are a nested document: JSON is the readable default, YAML the alternative.
    add_output_format(v, formats=("json", "yaml"), default="json")
    v.set_defaults(func=_verify, usage_error=v.error)


# --- the command -------------------------------------------------------------------------


def _init_data(path: Path) -> tuple[InitData, JsonObject]:
    """The init-data and its claims, both checked before anything else is read."""
    init_data = read_init_data(path)
    try:
        return init_data, init_data.claims()
    except EvidenceError as e:
        raise ConfigError(f"init-data file {path}: {e}") from e


def _verify(args: argparse.Namespace) -> int:
    tee = Tee(args.tee)
    check_evidence_usage(args, tee, args.usage_error, missing_collateral=_MISSING_COLLATERAL)
    warn_if_insecure(tee)
    report_data, _ = session_binding(args)
    init_data = None if args.init_data is None else _init_data(args.init_data)
    evidence = OfflineEvidence.from_args(args, tee)
    at = evidence.clock.now()
    try:
        results = evidence.verify(report_data, None if init_data is None else init_data[0])
    except EvidenceError as e:
        print_invalid(e)
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
    emit(args, output)
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
