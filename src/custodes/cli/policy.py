"""`custodes policy test`: try a candidate policy on recorded input before activating it.
(`custodes policy lint FILE` checks a resource policy for conditions that never hold:
:mod:`custodes.policy.lint`.)

Nothing is activated and nothing is sent anywhere: the candidate Rego file is evaluated here,
with the broker's own engine, on one of

* ``--evidence FILE --tee TEE``: evidence as the guest sent it, verified offline with the
  broker's verifier (the helpers of ``custodes evidence verify``), then turned into annotated
  evidence exactly as the Attestation Service does;
* ``--attestation AUDIT.jsonl:SEQ``: an ``attestation`` entry of an exported audit stream,
  whose recorded annotated evidence is replayed (and, with ``--audit-key``, whose chain and
  signature are checked first); the broker's recorded status is compared with the candidate's;
* ``--claims FILE``: for ``--kind attestation`` annotated evidence (or an EAR token, JWT or
  JSON payload, whose appraisals' annotated evidence is replayed); for ``--kind resource`` the
  claims of an EAR token, the input of a resource policy.

Reference values come from ``--reference-values`` (a JSON object ``{id: value}``); an id the
file does not have reads as null, as the broker's ``query_reference_value`` answers for an
unknown id.

Exit codes: 0 the candidate affirms (attestation) or allows (resource); 3 it refuses (an
appraisal that is not ``affirming``, or ``allow`` not true); 1 an error (unreadable input,
a policy that does not compile, evidence that does not verify); 2 the command line is wrong.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Final

from custodes.attestation.appraisal import appraise
from custodes.attestation.service import annotated_evidence
from custodes.audit.entry import MAX_SEQ
from custodes.cli._common import read_limited, resource_arg
from custodes.cli._evidence_input import (
    EVIDENCE_OPTIONS,
    OfflineEvidence,
    add_evidence_arguments,
    check_evidence_usage,
    print_invalid,
    read_init_data,
    rfc3339,
    session_binding,
    warn_if_insecure,
)
from custodes.cli._output import add_output_format, emit
from custodes.cli.policy_render import (
    attestation_json,
    attestation_text,
    resource_json,
    resource_text,
)
from custodes.cli.policy_suggest import Suggested, suggested_values
from custodes.errors import (
    ConfigError,
    CustodesError,
    EvidenceError,
    PolicyError,
)
from custodes.policy.dry_run import (
    AttestationResult,
    Source,
    decode_token_or_json,
    from_attestation,
    from_claims,
    parse_reference_values,
)
from custodes.policy.engine import MAX_POLICY_BYTES, RegoEngine
from custodes.policy.lint import lint_resource_policy
from custodes.policy.release import evaluate_resource
from custodes.policy.runner import InProcess
from custodes.protocol.binding import runtime_data_object
from custodes.types.json import Json, JsonObject
from custodes.types.tee import Tee

logger = logging.getLogger(__name__)

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_REFUSED: Final = 3
KINDS: Final = ("attestation", "resource")
MAX_CLAIMS_BYTES: Final = 16 * 1024 * 1024
MAX_REFERENCE_VALUES_BYTES: Final = 16 * 1024 * 1024
# The candidate runs in this process, on the author's machine: no budget to protect a broker,
# and the reference values it reads are recorded (a worker process cannot report them).
_HERE: Final = InProcess()

EPILOG = """\
input (exactly one):
  --evidence FILE --tee TEE        evidence as the guest sent it (primary_evidence), verified
                                   offline first; binding: --report-data HEX, or --nonce N
                                   --tee-pubkey JWK (also gives the policy runtime_data_claims)
  --attestation AUDIT.jsonl:SEQ    an "attestation" entry of an exported audit stream
                                   (custodes admin audit export); --audit-key PEM checks the
                                   chain and signature first
  --claims FILE                    attestation kind: annotated evidence, or an EAR token (JWT
                                   text or JSON payload); resource kind: EAR token claims

reference values: --reference-values RV.json, a JSON object {id: value}; any other id reads as
null, as at the broker. Nothing is activated, nothing is sent: no broker, no network.

--suggest: also print the reference values that would make this input pass, as the typed
`custodes admin reference-value register` commands that store them (--suggest-message FILE:
as the RVPS message `register --message FILE` sends). TRUST ON FIRST USE: they are copied
from the evidence being judged; approve them only if you trust that machine. Nothing is
registered by this command.

exit codes: 0 the candidate affirms / allows; 3 it refuses (not affirming / not allowed);
1 error (unreadable input, policy does not compile, evidence does not verify); 2 usage.

Examples:
  custodes policy test --policy candidate.rego --evidence ev.json --tee snp \\
      --report-data 7e73... --reference-values rv.json --at 2026-01-01T00:00:00Z
  custodes policy test --policy candidate.rego --attestation audit.jsonl:41 \\
      --reference-values rv.json --audit-key audit.pem
  custodes policy test --kind resource --policy resource.rego --claims token.jwt \\
      --resource default/key/db-password
  custodes policy test --policy default_cpu.rego --attestation audit.jsonl:41 \\
      --suggest --suggest-message rv-message.json
"""

# (metavar, help) of each evidence option on this command's help page: brief, since
# `custodes evidence verify --help` tells more.
_EVIDENCE_WORDING: Final[dict[str, tuple[str | None, str]]] = {
    "tee": (None, "the TEE type"),
    "report_data": ("HEX", "binding digest, hex"),
    "nonce": ("N", "the challenge nonce, verbatim"),
    "tee_pubkey": ("JWK", "the tee-pubkey JWK: a file or JSON text"),
    "additional_evidence": ("S", "additional_evidence as sent"),
    "init_data": ("F", "the init-data TOML sent"),
    "collateral": ("P", "DCAP collateral (tdx)"),
    "vcek_store": ("DIR", "offline VCEK store (snp)"),
    "at": ("TIME", "verify as of TIME"),
}
_MISSING_COLLATERAL: Final = (
    "evidence needs DCAP collateral: pass --collateral FILE (no PCS/PCCS here)"
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "policy",
        help="test a candidate policy against recorded evidence or attestations",
        description="Work with policies offline, before they are activated.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = actions.add_parser(
        "test",
        help="evaluate a candidate policy on recorded evidence, an attestation or claims",
        description=(
            "Evaluate the candidate policy (--policy) on recorded input and print the decision and "
            "why (the trust vector with its AR4SI meanings, the failed conditions, the "
            "reference values consulted). Activates nothing and contacts nothing."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("--policy", required=True, type=Path, metavar="P.rego", help="the candidate")
    t.add_argument(
        "--kind",
        choices=KINDS,
        default="attestation",
        help="attestation policy (trust_claims) or resource policy (allow); default attestation",
    )
    source = t.add_mutually_exclusive_group()
    source.add_argument("--evidence", metavar="FILE", help="evidence JSON ('-' for stdin)")
    source.add_argument(
        "--attestation",
        type=entry_ref,
        metavar="AUDIT.jsonl:SEQ",
        help="an attestation entry of an audit export",
    )
    source.add_argument("--claims", metavar="FILE", help="claims JSON or an EAR token (JWT)")
    t.add_argument(
        "--reference-values", type=Path, metavar="RV.json", help="reference values {id: value}"
    )
    t.add_argument(
        "--resource",
        type=resource_arg,
        metavar="REPO/TYPE/TAG",
        help="resource kind: the resource requested (data.resource-path)",
    )
    t.add_argument(
        "--audit-key",
        type=Path,
        metavar="PEM",
        help="with --attestation: the broker's audit public key; the export is verified first",
    )
    add_output_format(t, legacy_json=True)
    t.add_argument(
        "--suggest",
        action="store_true",
        help="also print the reference values that would make the input pass (trust on first "
        "use; nothing is registered)",
    )
    t.add_argument(
        "--suggest-message",
        type=Path,
        metavar="FILE",
        help="with --suggest: write them as the RVPS message `custodes admin reference-value "
        "register --message FILE` sends",
    )
    e = t.add_argument_group("with --evidence (as custodes evidence verify)")
    add_evidence_arguments(e, tee_required=False, wording=_EVIDENCE_WORDING)
    t.set_defaults(func=_test, usage_error=t.error)
    lint = actions.add_parser(
        "lint",
        help="find conditions of a resource policy that never hold and rules that release "
        "every path",
        description=(
            "Check a resource policy (data.policy.allow) for comparisons whose operands can "
            'never be equal (data["resource-path"] is a list, not a string), default allow '
            ":= true, and rules that release every path, from its AST and by evaluating it on "
            "probe tokens and paths. Exit 0: no findings; 3: findings; 1: an error."
        ),
        examples=[
            "custodes policy lint my-policy.rego",
            "custodes policy lint my-policy.rego -o json",
        ],
    )
    lint.add_argument("policy", type=Path, metavar="P.rego", help="the resource policy")
    add_output_format(lint)
    lint.set_defaults(func=_lint)


# --- usage ---------------------------------------------------------------------------------


def _check_usage(args: argparse.Namespace) -> None:
    fail: Callable[[str], None] = args.usage_error
    sources = [s for s in ("evidence", "attestation", "claims") if getattr(args, s) is not None]
    if not sources:
        if args.kind == "resource":
            fail("give the token claims to test the resource policy on: --claims FILE")
        fail(
            "give what to test the policy on: --evidence FILE --tee TEE, "
            "--attestation AUDIT.jsonl:SEQ, or --claims FILE"
        )
    given = [name for name in EVIDENCE_OPTIONS if getattr(args, name) is not None]
    if args.evidence is None and given:
        options = ", ".join("--" + name.replace("_", "-") for name in given)
        fail(f"{options}: only with --evidence")
    if args.audit_key is not None and args.attestation is None:
        fail("--audit-key: only with --attestation")
    if args.kind == "resource":
        if args.claims is None:
            fail("--kind resource tests a resource policy on token claims: use --claims FILE")
        if args.resource is None:
            fail("--kind resource needs the resource requested: --resource REPO/TYPE/TAG")
        if args.reference_values is not None:
            fail("--reference-values: only with --kind attestation (resource policies read none)")
    elif args.resource is not None:
        fail("--resource: only with --kind resource")
    if args.suggest_message is not None and not args.suggest:
        fail("--suggest-message: only with --suggest")
    if args.suggest and args.kind == "resource":
        fail("--suggest: only with --kind attestation (resource policies read no reference values)")
    if args.evidence is not None:
        if args.tee is None:
            fail("--evidence needs --tee TEE")
        check_evidence_usage(args, Tee(args.tee), fail, missing_collateral=_MISSING_COLLATERAL)


# --- reading inputs ----------------------------------------------------------------------


def read_policy(path: Path) -> str:
    """The candidate's text, compiled once so that a bad policy fails with the compiler's
    message before anything else is read."""
    raw = read_limited(path, MAX_POLICY_BYTES, "policy file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"policy file {path} is not UTF-8") from e
    try:
        RegoEngine.check(text)
    except PolicyError as e:
        raise PolicyError(f"candidate policy {path}: {e}") from e
    return text


def read_reference_values(path: Path | None) -> dict[str, Json]:
    """``{id: value}`` from a JSON file (no file: no reference values at all)."""
    if path is None:
        return {}
    raw = read_limited(path, MAX_REFERENCE_VALUES_BYTES, "reference values file")
    return parse_reference_values(raw, path)


# --- the source built from the command line's evidence options -----------------------------


def _from_evidence(args: argparse.Namespace) -> Source:
    tee = Tee(args.tee)
    notes: list[str] = []
    warn_if_insecure(tee)
    report_data, runtime = session_binding(args)
    runtime_claims: JsonObject = {}
    if runtime is not None:
        runtime_claims = runtime_data_object(
            runtime.nonce, runtime.tee_pubkey.jwk, args.additional_evidence or ""
        )
    else:
        notes.append(
            "runtime_data_claims are empty: with --report-data the nonce and TEE key are not "
            "known (pass --nonce and --tee-pubkey to give them to the policy)"
        )
    if args.additional_evidence:
        notes.append(
            "the broker refuses attestations with additional_evidence (device evidence) for "
            "now; only the CPU evidence is appraised here"
        )
    init_data = None if args.init_data is None else read_init_data(args.init_data)
    evidence = OfflineEvidence.from_args(args, tee)
    verified = evidence.verify(report_data, init_data)
    if not verified:
        raise EvidenceError(f"the {tee} verifier returned no claims")
    init_claims = None if init_data is None else init_data.claims()
    annotated: dict[str, JsonObject] = {}
    counts: dict[str, int] = {}
    for item in verified:
        index = counts.get(item.tee_class, 0)
        counts[item.tee_class] = index + 1
        annotated[f"{item.tee_class}{index}"] = annotated_evidence(
            tee, item.claims, init_data_claims=init_claims, runtime_data_claims=runtime_claims
        )
    description = (
        f"{tee} evidence {args.evidence}, verified offline as of {rfc3339(evidence.clock.now())}"
    )
    return Source(description, annotated, None, tuple(notes))


def entry_ref(text: str) -> tuple[Path, int]:
    """``AUDIT.jsonl:SEQ`` as (path, seq); argparse ``type=`` (a usage error otherwise)."""
    path, sep, seq = text.rpartition(":")
    if not sep or not path or not seq.isascii() or not seq.isdigit() or int(seq) > MAX_SEQ:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected AUDIT.jsonl:SEQ (the export, a colon, an entry's seq)"
        )
    return Path(path), int(seq)


# --- the command -----------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    _check_usage(args)
    policy = read_policy(args.policy)
    if args.kind == "resource":
        raw = read_limited(args.claims, MAX_CLAIMS_BYTES, "claims file", allow_stdin=True)
        claims = decode_token_or_json(raw, f"claims file {args.claims}")
        resource = evaluate_resource(
            policy, claims, args.resource, f"EAR claims {args.claims}", runner=_HERE
        )
        emit(
            args,
            resource_json(args.policy, policy, resource),
            human=lambda: resource_text(args.policy, policy, resource),
        )
        return EXIT_OK if resource.allowed else EXIT_REFUSED
    reference_values = read_reference_values(args.reference_values)
    if args.evidence is not None:
        try:
            source = _from_evidence(args)
        except EvidenceError as e:
            print_invalid(e)
            return EXIT_ERROR
    elif args.attestation is not None:
        path, seq = args.attestation
        source = from_attestation(path, seq, args.audit_key)
    else:
        raw = read_limited(args.claims, MAX_CLAIMS_BYTES, "claims file", allow_stdin=True)
        source = from_claims(raw, args.claims)
    if args.reference_values is None:
        note = "no --reference-values: every reference value reads as null"
        source = replace(source, notes=(*source.notes, note))
    result = AttestationResult(
        source,
        {
            name: appraise(policy, a, reference_values, runner=_HERE)
            for name, a in source.annotated.items()
        },
    )
    report = attestation_json(args.policy, policy, result)
    suggested = _suggest(args, policy, result, reference_values) if args.suggest else None
    if suggested is not None:
        report["suggested"] = suggested.to_json()
        suggested.write_message()

    def human() -> str:
        text = attestation_text(args.policy, policy, result)
        return text if suggested is None else f"{text}\n{suggested.text()}"

    emit(args, report, human=human)
    return EXIT_REFUSED if result.refused else EXIT_OK


def _suggest(
    args: argparse.Namespace,
    policy: str,
    result: AttestationResult,
    reference_values: Mapping[str, Json],
) -> Suggested:
    """The reference values that would make ``result``'s input pass, and the candidate's
    decision with them (evaluated again, not assumed)."""
    weak = {name: list(a.failed) for name, a in result.appraisals.items()}
    values = suggested_values(policy, result.source.annotated, weak, reference_values)
    merged = {**reference_values, **values}
    after = AttestationResult(
        result.source,
        {
            name: appraise(policy, a, merged, runner=_HERE)
            for name, a in result.source.annotated.items()
        },
    )
    still = {name: dict(a.failed) for name, a in after.appraisals.items() if a.failed}
    return Suggested(values, str(after.status), still, args.suggest_message)


def _lint(args: argparse.Namespace) -> int:
    policy = read_policy(args.policy)
    findings = lint_resource_policy(policy)

    def human() -> str:
        lines = [f"{args.policy}: {f}" for f in findings]
        return "\n".join(lines or [f"{args.policy}: no findings"])

    report: JsonObject = {
        "policy": str(args.policy),
        "findings": [f.to_json() for f in findings],
    }
    emit(args, report, human=human)
    return EXIT_REFUSED if findings else EXIT_OK


def _test(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except CustodesError:
        raise  # rendered by custodes.cli.main as "custodes: error: ..."
    except Exception as e:  # never a traceback for a policy author
        logger.debug("policy test failure", exc_info=True)
        print(
            f"custodes: error: internal error ({type(e).__name__}): {e}; nothing was decided "
            "(please report this; -vv shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_ERROR
