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
import hashlib
import json
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

from custodes._internal.b64 import b64url_decode
from custodes.attestation.appraisal import Appraisal, appraise
from custodes.attestation.ear import (
    Ar4siStatus,
    tier_of,
    worst_status,
)
from custodes.attestation.service import annotated_evidence
from custodes.audit.errors import AuditChainError
from custodes.audit.log import (
    MAX_LINE_BYTES,
    MAX_SEQ,
    AuditEntry,
    AuditKind,
    load_public_keys,
    verify_jsonl,
)
from custodes.cli._common import resource_arg
from custodes.cli._evidence_input import (
    EVIDENCE_OPTIONS,
    OfflineEvidence,
    add_evidence_arguments,
    check_evidence_usage,
    print_invalid,
    read_init_data,
    read_limited,
    rfc3339,
    session_binding,
    warn_if_insecure,
)
from custodes.cli._output import add_output_format, emit
from custodes.cli.policy_suggest import Suggested, suggested_values
from custodes.errors import (
    ConfigError,
    CustodesError,
    EvidenceError,
    PolicyError,
    ReferenceValueError,
)
from custodes.policy.engine import MAX_POLICY_BYTES, UNDEFINED, RegoEngine
from custodes.policy.explain import FailedCondition
from custodes.policy.lint import lint_resource_policy
from custodes.policy.release import ResourceResult, evaluate_resource
from custodes.protocol.appraisal import appraisal_summary
from custodes.protocol.binding import runtime_data_object
from custodes.rvps.messages import check_reference_value_id
from custodes.types.json import Json, JsonObject
from custodes.types.tee import Tee

logger = logging.getLogger(__name__)

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_REFUSED: Final = 3
KINDS: Final = ("attestation", "resource")
MAX_CLAIMS_BYTES: Final = 16 * 1024 * 1024
MAX_REFERENCE_VALUES_BYTES: Final = 16 * 1024 * 1024
_TRUST_CLAIMS: Final = "data.policy.trust_claims"
_EXTENSIONS: Final = "data.policy.extensions"
_ALLOW: Final = "data.policy.allow"
_STATUS: Final = "ear.status"
_VECTOR: Final = "ear.trustworthiness-vector"
_EVIDENCE: Final = "ear.veraison.annotated-evidence"
_TEXT_VALUE_CHARS: Final = 160

# AR4SI (draft-ietf-rats-ar4si) meanings of the trust-claim values, in our own words. Values
# without an entry are implementation-specific; their tier still says what they mean.
_COMMON_MEANINGS: Final[dict[int, str]] = {
    0: "no claim made",
    1: "verifier malfunction",
    -1: "unexpected evidence, not parsed",
    99: "cryptographic validation of the evidence failed",
}
AR4SI_MEANINGS: Final[dict[str, dict[int, str]]] = {
    "instance-identity": {
        2: "trustworthy instance",
        96: "untrustworthy instance (known but compromised)",
        97: "unrecognized instance",
    },
    "configuration": {
        2: "approved configuration",
        3: "no known vulnerabilities in the configuration",
        32: "unsafe configuration (known vulnerabilities)",
        36: "configuration elements unavailable to the verifier",
        96: "unsupportable configuration",
    },
    "executables": {
        2: "approved runtime (only approved executables, before and after boot)",
        3: "approved boot (only approved executables were loaded)",
        32: "unsafe runtime (known vulnerabilities)",
        33: "unrecognized runtime (executables not recognised)",
        96: "contraindicated runtime",
    },
    "file-system": {
        2: "approved file system",
        32: "unrecognized file system",
        96: "contraindicated file system",
    },
    "hardware": {
        2: "genuine hardware",
        32: "unsafe hardware (known vulnerabilities)",
        96: "contraindicated hardware",
        97: "unrecognized hardware (not genuine, or not recognised)",
    },
    "runtime-opaque": {
        2: "encrypted memory",
        32: "isolated memory",
        96: "memory visible to others",
    },
    "storage-opaque": {
        2: "secrets encrypted with hardware keys",
        32: "secrets encrypted with software keys",
        96: "secrets unencrypted",
    },
    "sourced-data": {
        2: "trusted data sources",
        32: "untrusted data sources",
        96: "contraindicated data sources",
    },
}

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


def _json(raw: bytes, what: str) -> Json:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise ConfigError(f"{what} is not JSON: {e}") from e


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
    obj = _json(
        read_limited(path, MAX_REFERENCE_VALUES_BYTES, "reference values file"),
        f"reference values file {path}",
    )
    if not isinstance(obj, dict):
        raise ConfigError(f"reference values file {path} must be a JSON object {{id: value}}")
    for name in obj:
        try:
            check_reference_value_id(name)
        except ReferenceValueError as e:
            raise ConfigError(f"reference values file {path}: {e}") from e
    return obj


def decode_token_or_json(raw: bytes, what: str) -> JsonObject:
    """A JSON object, or the payload of a compact JWS (its signature is NOT checked)."""
    text = raw.decode("utf-8", errors="replace").strip()
    if not text.startswith("{") and text.count(".") == 2:
        try:
            payload = b64url_decode(text.split(".")[1])
        except ValueError as e:
            raise ConfigError(f"{what} is not JSON, nor a JWT with a base64url payload") from e
        obj = _json(payload, f"the payload of the token in {what}")
    else:
        obj = _json(raw, what)
    if not isinstance(obj, dict):
        raise ConfigError(f"{what} must be a JSON object")
    return obj


# --- appraising one piece of annotated evidence --------------------------------------------


# --- the sources of annotated evidence ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the broker decided for the replayed input (an audit entry or a token)."""

    status: str | None
    vectors: dict[str, Json]
    details: JsonObject = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Source:
    description: str
    annotated: dict[str, JsonObject]
    recorded: Recorded | None = None
    notes: tuple[str, ...] = ()


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


def find_entry(path: Path, seq: int) -> AuditEntry:
    """Entry ``seq`` of an audit export (JSON Lines); ``ConfigError`` when absent or twice."""
    found: AuditEntry | None = None
    unreadable = 0
    try:
        with path.open("rb") as fp:
            number = 0
            while line := fp.readline(MAX_LINE_BYTES + 1):
                number += 1
                if len(line) > MAX_LINE_BYTES:
                    raise ConfigError(f"{path}: line {number} is longer than {MAX_LINE_BYTES}")
                if not line.strip():
                    continue
                try:
                    entry = AuditEntry.from_bytes(line.rstrip(b"\r\n"), seq_hint=number - 1)
                except AuditChainError:
                    unreadable += 1
                    continue
                if entry.seq != seq:
                    continue
                if found is not None:
                    raise ConfigError(
                        f"{path} has two entries {seq} (several streams?); export one stream"
                    )
                found = entry
    except OSError as e:
        raise ConfigError(f"cannot read audit export {path}: {e.strerror or e}") from e
    if found is None:
        extra = f" ({unreadable} lines are not audit entries)" if unreadable else ""
        raise ConfigError(f"{path} has no entry {seq}{extra}")
    return found


def _verify_export(path: Path, key_path: Path, seq: int) -> str:
    keys = load_public_keys([key_path])
    try:
        with path.open("rb") as fp:
            report = verify_jsonl(fp, keys, start_seq=None)
    except OSError as e:
        raise ConfigError(f"cannot read audit export {path}: {e.strerror or e}") from e
    if report.ok:
        span = (
            "no entries" if report.head is None else f"entries {report.first_seq}..{report.head[0]}"
        )
        return f"audit export verified ({span}): chain and signatures good"
    bad = report.first_bad_seq
    if bad is not None and seq < bad and report.first_seq is not None and report.first_seq <= seq:
        return (
            f"audit export verified up to entry {bad - 1}; broken at entry {bad}: "
            f"{report.reason} (entry {seq} is before it)"
        )
    raise ConfigError(
        f"audit export {path} is broken at entry {bad}: {report.reason}; entry {seq} is not "
        "covered by a verified chain, refusing to replay it"
    )


def _vectors_of(obj: Json) -> dict[str, Json]:
    return dict(obj) if isinstance(obj, dict) else {}


def _from_attestation(args: argparse.Namespace) -> Source:
    path, seq = args.attestation
    notes: list[str] = []
    if args.audit_key is not None:
        notes.append(_verify_export(path, args.audit_key, seq))
    else:
        notes.append("entry not verified (pass --audit-key to check the chain and signature)")
    entry = find_entry(path, seq)
    if entry.kind is not AuditKind.ATTESTATION:
        raise ConfigError(
            f"entry {seq} of {path} is not an attestation (kind {entry.kind!s}); pick an "
            '"attestation" entry'
        )
    event = entry.event
    if event.get("status") == "error":
        raise ConfigError(
            f"entry {seq} records an attestation that failed before appraisal "
            f"({event.get('error')}: {event.get('reason')}); there is nothing to replay"
        )
    if "annotated_evidence" not in event:
        why = event.get("annotated_evidence_omitted", "recorded by a broker that kept none")
        raise ConfigError(f"entry {seq} has no annotated evidence to replay ({why})")
    recorded_evidence = event["annotated_evidence"]
    if not isinstance(recorded_evidence, dict) or not recorded_evidence:
        raise ConfigError(f"entry {seq}: annotated_evidence is not an object of submodules")
    annotated: dict[str, JsonObject] = {}
    for name, item in recorded_evidence.items():
        if not isinstance(item, dict):
            raise ConfigError(f"entry {seq}: the annotated evidence of {name} is not an object")
        annotated[name] = item
    details: JsonObject = {
        "seq": entry.seq,
        "time": entry.time,
        "tee": event.get("tee"),
        "token_id": event.get("token_id"),
        "policy_id": event.get("policy_id"),
        "policy_version": event.get("policy_version"),
    }
    status = event.get("status")
    recorded = Recorded(
        status if isinstance(status, str) else None,
        _vectors_of(event.get("trust_vectors")),
        details,
    )
    description = f"attestation entry {seq} of {path} ({event.get('tee')}, {entry.time})"
    return Source(description, annotated, recorded, tuple(notes))


def _from_claims(args: argparse.Namespace) -> Source:
    what = f"claims file {args.claims}"
    obj = decode_token_or_json(
        read_limited(args.claims, MAX_CLAIMS_BYTES, "claims file", allow_stdin=True), what
    )
    submods = obj.get("submods")
    if submods is None:
        # Annotated evidence as given: one CPU appraisal.
        return Source(f"annotated evidence {args.claims}", {"cpu0": obj})
    if not isinstance(submods, dict) or not submods:
        raise ConfigError(f"{what}: submods is not an object of appraisals")
    annotated: dict[str, JsonObject] = {}
    vectors: dict[str, Json] = {}
    statuses: list[Ar4siStatus] = []
    for name, appraisal in submods.items():
        evidence = appraisal.get(_EVIDENCE) if isinstance(appraisal, dict) else None
        if not isinstance(evidence, dict):
            raise ConfigError(f"{what}: appraisal {name} carries no annotated evidence")
        annotated[name] = evidence
        vectors[name] = appraisal.get(_VECTOR)
        try:
            statuses.append(Ar4siStatus(appraisal.get(_STATUS)))
        except ValueError:
            pass
    recorded = Recorded(
        str(worst_status(statuses)) if statuses else None,
        vectors,
        {"token_id": obj.get("jti"), "iat": obj.get("iat")},
    )
    note = "token signature not checked (only its recorded appraisal is compared)"
    return Source(f"EAR token claims {args.claims}", annotated, recorded, (note,))


# --- output --------------------------------------------------------------------------------


def meaning(claim: str, value: int) -> str:
    """The AR4SI meaning of one trust-claim value."""
    known = AR4SI_MEANINGS.get(claim, {}).get(value) or _COMMON_MEANINGS.get(value)
    return known or f"implementation-specific ({tier_of(value)} range)"


def _short(value: Json) -> str:
    text = json.dumps(value, sort_keys=True)
    if len(text) > _TEXT_VALUE_CHARS:
        return text[: _TEXT_VALUE_CHARS - 1] + "…"
    return text


def _recorded_vector(recorded: Recorded | None, submod: str) -> dict[str, int]:
    vector = recorded.vectors.get(submod) if recorded is not None else None
    if not isinstance(vector, dict):
        return {}
    return {k: v for k, v in vector.items() if isinstance(v, int) and not isinstance(v, bool)}


def _policy_json(policy_path: Path, policy: str) -> JsonObject:
    return {"path": str(policy_path), "sha256": hashlib.sha256(policy.encode()).hexdigest()}


@dataclass(frozen=True, slots=True)
class AttestationResult:
    """The candidate's decision on every submodule of one input."""

    source: Source
    appraisals: dict[str, Appraisal]

    @property
    def status(self) -> Ar4siStatus:
        return worst_status(a.status for a in self.appraisals.values())

    @property
    def refused(self) -> bool:
        return self.status is not Ar4siStatus.AFFIRMING

    @property
    def would_change(self) -> str | None:
        """``"affirming -> warning"`` when the recorded status differs from the candidate's."""
        recorded = self.source.recorded
        if recorded is None or recorded.status == str(self.status):
            return None
        return f"{recorded.status} -> {self.status}"


def attestation_json(policy_path: Path, policy: str, result: AttestationResult) -> JsonObject:
    submods: JsonObject = {}
    for name, a in result.appraisals.items():
        recorded_vector = _recorded_vector(result.source.recorded, name)
        vector: JsonObject = {}
        for claim, value in a.vector.items():
            entry: JsonObject = {
                "value": value,
                "tier": str(tier_of(value)),
                "meaning": meaning(claim, value),
            }
            if claim in recorded_vector:
                entry["recorded"] = recorded_vector[claim]
            vector[claim] = entry
        sub: JsonObject = {
            "status": str(a.status),
            "trust_vector": vector,
            "extensions": dict(a.extensions),
            "failed": {
                claim: [c.to_json() for c in conditions] for claim, conditions in a.failed.items()
            },
            "reference_values_consulted": dict(a.consulted),
        }
        if a.trace_error is not None:
            sub["trace_error"] = a.trace_error
        submods[name] = sub
    report: JsonObject = {
        "kind": "attestation",
        "policy": _policy_json(policy_path, policy),
        "input": result.source.description,
        "decision": str(result.status),
        "refused": result.refused,
        "submods": submods,
        "notes": list(result.source.notes),
        "activated": False,
    }
    recorded = result.source.recorded
    if recorded is not None:
        report["recorded"] = {"status": recorded.status, **recorded.details}
        report["would_change"] = result.would_change
    return report


def _condition_lines(c: FailedCondition, indent: str) -> list[str]:
    where = f"rule {c.rule}" if c.via is None else f"rule {c.rule} via {c.via}"
    lines = [f"{indent}failed condition ({where}, line {c.line}): {c.condition}"]
    for path, value in c.claims.items():
        lines.append(f"{indent}  claim {path} = {_short(value)}")
    for rv, value in c.reference_values.items():
        lines.append(f"{indent}  reference value {rv} = {_short(value)}")
    return lines


def attestation_text(policy_path: Path, policy: str, result: AttestationResult) -> str:
    digest = hashlib.sha256(policy.encode()).hexdigest()
    out = [
        f"candidate policy: {policy_path} (sha256 {digest})",
        f"input: {result.source.description}",
        f"decision: {result.status}",
    ]
    for name, a in result.appraisals.items():
        recorded_vector = _recorded_vector(result.source.recorded, name)
        out.append(f"{name}: {a.status}")
        out.append("  trust vector:")
        for claim, value in a.vector.items():
            was = recorded_vector.get(claim, value)
            change = f"  (recorded: {was})" if was != value else ""
            out.append(
                f"    {claim:<18} {value:>4}  {tier_of(value)!s:<16} {meaning(claim, value)}"
                f"{change}"
            )
        for ext_name, ext_value in a.extensions.items():
            out.append(f"  extension {ext_name} = {_short(ext_value)}")
        if a.failed:
            out.append("  why:")
        for claim, conditions in a.failed.items():
            value = a.vector[claim]
            out.append(f"    {claim} = {value}: {meaning(claim, value)}")
            if not conditions and a.trace_error is None:
                out.append(
                    "      the rule kept its default; no failed condition located (none of its "
                    "conditions reads a claim this evidence has or a reference value)"
                )
                absent = [rv for rv, rv_value in a.consulted.items() if rv_value is None]
                if absent:
                    out.append(
                        f"      reference values the policy read as null: {', '.join(absent)}"
                    )
            for c in conditions:
                out.extend(_condition_lines(c, "      "))
        if a.trace_error is not None:
            out.append(f"  trace unavailable: {a.trace_error}")
        if a.consulted:
            out.append("  reference values consulted:")
            for rv, rv_value in a.consulted.items():
                shown = "null (not provided)" if rv_value is None else _short(rv_value)
                out.append(f"    {rv} = {shown}")
        else:
            out.append("  reference values consulted: none")
    recorded = result.source.recorded
    if recorded is not None:
        version = recorded.details.get("policy_version")
        by = f" (policy version {version})" if version is not None else ""
        out.append(f"recorded by the broker{by}: {recorded.status}")
        verdict = result.would_change
        out.append(f"would change: {verdict}" if verdict else f"would not change: {result.status}")
    out.extend(f"note: {note}" for note in result.source.notes)
    out.append("nothing was activated or sent anywhere")
    return "\n".join(out)


_RESOURCE_NOTE: Final = "token signature and lifetime not checked (an offline test of the policy)"


def resource_json(policy_path: Path, policy: str, result: ResourceResult) -> JsonObject:
    report: JsonObject = {
        "kind": "resource",
        "policy": _policy_json(policy_path, policy),
        "input": result.description,
        "resource": str(result.resource),
        "decision": "allow" if result.allowed else "deny",
        "allow": None if result.allow is UNDEFINED else result.allow,
        "refused": not result.allowed,
        "appraisal": appraisal_summary(result.claims),
        "failed": [c.to_json() for c in result.failed],
        "notes": [_RESOURCE_NOTE],
        "activated": False,
    }
    if result.trace_error is not None:
        report["trace_error"] = result.trace_error
    return report


def resource_text(policy_path: Path, policy: str, result: ResourceResult) -> str:
    digest = hashlib.sha256(policy.encode()).hexdigest()
    out = [
        f"candidate policy: {policy_path} (sha256 {digest})",
        f"input: {result.description}",
        f"resource: {result.resource}",
        f"appraisal: {appraisal_summary(result.claims)}",
        f"decision: {'allow' if result.allowed else 'deny'}",
    ]
    if not result.allowed:
        if result.allow is not False:
            shown = "undefined" if result.allow is UNDEFINED else _short(result.allow)
            out.append(f"  (allow is {shown}, not true)")
        if result.trace_error is not None:
            out.append(f"trace unavailable: {result.trace_error}")
        elif not result.failed:
            out.append("why: no failed condition located (allow keeps its default)")
        for c in result.failed:
            out.extend(_condition_lines(c, ""))
    out.append(f"note: {_RESOURCE_NOTE}")
    out.append("nothing was activated or sent anywhere")
    return "\n".join(out)


# --- the command -----------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    _check_usage(args)
    policy = read_policy(args.policy)
    if args.kind == "resource":
        raw = read_limited(args.claims, MAX_CLAIMS_BYTES, "claims file", allow_stdin=True)
        claims = decode_token_or_json(raw, f"claims file {args.claims}")
        resource = evaluate_resource(policy, claims, args.resource, f"EAR claims {args.claims}")
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
        source = _from_attestation(args)
    else:
        source = _from_claims(args)
    if args.reference_values is None:
        note = "no --reference-values: every reference value reads as null"
        source = replace(source, notes=(*source.notes, note))
    result = AttestationResult(
        source,
        {name: appraise(policy, a, reference_values) for name, a in source.annotated.items()},
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
        {name: appraise(policy, a, merged) for name, a in result.source.annotated.items()},
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
