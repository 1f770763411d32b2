"""The inputs of a policy dry run (``custodes policy test``) and the candidate's decision.

A dry run evaluates a candidate attestation policy on annotated evidence that was not sent to
the broker now: recorded in an ``attestation`` entry of an exported audit stream (replayed,
after its chain and signature are checked when a key is given), or carried by claims (annotated
evidence as given, or the appraisals of an EAR token, whose signature is NOT checked: only its
recorded appraisal is compared). Each source is a :class:`Source`: the annotated evidence per
submodule and, when the broker already decided on it, what it decided (:class:`Recorded`), so
that the candidate's decision (:class:`AttestationResult`) can say whether it would change.

Evidence verified offline is the third source; it reads the evidence options of the command
line, so it is built in :mod:`custodes.cli.policy`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from custodes._internal.b64 import b64url_decode
from custodes.attestation.appraisal import Appraisal
from custodes.attestation.ear import SUBMODS, Ar4siStatus, EarClaims, worst_status
from custodes.audit.entry import AuditEntry, AuditKind
from custodes.audit.errors import AuditChainError
from custodes.audit.verify import MAX_LINE_BYTES, load_public_keys, verify_jsonl
from custodes.errors import ConfigError, ReferenceValueError, TokenError
from custodes.rvps.messages import check_reference_value_id
from custodes.types.json import Json, JsonObject


def _json(raw: bytes, what: str) -> Json:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise ConfigError(f"{what} is not JSON: {e}") from e


def parse_reference_values(raw: bytes, path: Path) -> dict[str, Json]:
    """``{id: value}`` from the bytes of the JSON file ``path``."""
    obj = _json(raw, f"reference values file {path}")
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


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the broker decided for the replayed input (an audit entry or a token)."""

    status: str | None
    vectors: dict[str, Json]
    details: JsonObject = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Source:
    """Annotated evidence per submodule, where it came from, and what was recorded of it."""

    description: str
    annotated: dict[str, JsonObject]
    recorded: Recorded | None = None
    notes: tuple[str, ...] = ()


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


def from_attestation(path: Path, seq: int, audit_key: Path | None) -> Source:
    """Entry ``seq`` of the audit export ``path``, its chain and signatures checked first with
    ``audit_key`` when given."""
    notes: list[str] = []
    if audit_key is not None:
        notes.append(_verify_export(path, audit_key, seq))
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


def from_claims(raw: bytes, name: str) -> Source:
    """The claims file ``name`` (its bytes ``raw``): annotated evidence, or an EAR token."""
    what = f"claims file {name}"
    obj = decode_token_or_json(raw, what)
    if obj.get(SUBMODS) is None:
        # Annotated evidence as given: one CPU appraisal.
        return Source(f"annotated evidence {name}", {"cpu0": obj})
    try:
        ear = EarClaims.parse(obj)
    except TokenError as e:
        raise ConfigError(f"{what}: {e}") from e
    annotated = ear.annotated_evidence()
    for sub in ear.submodules:
        if sub not in annotated:
            raise ConfigError(f"{what}: appraisal {sub} carries no annotated evidence")
    recorded = Recorded(
        str(ear.status),
        ear.trust_vectors(),
        {"token_id": obj.get("jti"), "iat": obj.get("iat")},
    )
    note = "token signature not checked (only its recorded appraisal is compared)"
    return Source(f"EAR token claims {name}", annotated, recorded, (note,))


# --- the candidate's decision ------------------------------------------------------------


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
