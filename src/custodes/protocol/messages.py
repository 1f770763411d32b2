"""KBS protocol 0.4.0 messages (upstream ``kbs-types``), read strictly from untrusted JSON.

Field names are upstream's exactly, including its mix of kebab-case (``extra-params``,
``runtime-data``) and snake_case (``primary_evidence`` inside ``tee-evidence``). Unknown members
are ignored, as upstream's serde does; missing or mistyped members raise
:class:`~custodes.errors.MalformedMessage`.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Final, Self

from custodes._internal import strictjson
from custodes._internal.strictjson import DEFAULT_MAX_DEPTH
from custodes.errors import MalformedMessage, UnsupportedVersion
from custodes.protocol.binding import (
    HashAlgorithm,
    device_runtime_data_digest,
    runtime_data_digest,
    select_hash_algorithm,
)
from custodes.protocol.jwk import TeePublicKey, tee_key_from_jwk
from custodes.types.json import Json, JsonObject
from custodes.types.tee import Tee

PROTOCOL_VERSION: Final = "0.4.0"
# Upstream's released protocol versions: a refused client's version is counted under its own
# name when it is one of these, else as "other" (a metric label must stay a small set).
KNOWN_PROTOCOL_VERSIONS: Final = ("0.1.1", "0.2.0", "0.3.0", "0.4.0")
# The member of ``Request.extra-params`` that names a deployment's attestation policy
# (upstream trustee #1521 and guest-components #1604; named so since trustee #1606). Clients
# send this name; the broker also reads the name #1521 first used.
POLICY_SELECTOR: Final = "attestation-policy-selector"
LEGACY_POLICY_SELECTOR: Final = "policy-selector"
_REQUEST_MEMBERS: Final = frozenset({"version", "tee", "extra-params"})
_SELECTOR: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MAX_RECORDED_MEMBERS: Final = 16
ERROR_TYPE_PREFIX: Final = "https://github.com/confidential-containers/kbs/errors/"
INIT_DATA_FORMAT: Final = "toml"

# --- strict JSON ---------------------------------------------------------------------------


def parse_json_body(body: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Json:
    """Parse an untrusted JSON body strictly, or raise ``MalformedMessage``: the one strict
    reader, :func:`custodes._internal.strictjson.loads`, under the protocol's name."""
    return strictjson.loads(body, max_depth=max_depth)


# --- field helpers -------------------------------------------------------------------------


def _object(obj: object, what: str) -> JsonObject:
    if not isinstance(obj, dict):
        raise MalformedMessage(f"{what} is not a JSON object")
    return obj


def _member(obj: JsonObject, key: str, what: str) -> Json:
    if key not in obj:
        raise MalformedMessage(f"{what} lacks {key!r}")
    return obj[key]


def _string(obj: JsonObject, key: str, what: str) -> str:
    value = _member(obj, key, what)
    if not isinstance(value, str):
        raise MalformedMessage(f"{what}.{key} is not a string")
    return value


# --- messages ------------------------------------------------------------------------------


def version_label(obj: object) -> str:
    """The metric label of a ``Request``'s version: a known version, ``other`` or ``missing``."""
    version = obj.get("version") if isinstance(obj, dict) else None
    if not isinstance(version, str):
        return "missing"
    return version if version in KNOWN_PROTOCOL_VERSIONS else "other"


def _recorded_names(names: list[str]) -> tuple[str, ...]:
    """Member names fit for a log line or an audit entry: printable, short, a bounded few."""
    return tuple(
        name if name.isprintable() and len(name) <= 64 else repr(name[:64])
        for name in sorted(names)[:_MAX_RECORDED_MEMBERS]
    )


@dataclass(frozen=True, slots=True)
class Request:
    """``POST /auth`` body.

    The version must be exactly :data:`PROTOCOL_VERSION`: upstream's KBS requires ``=0.4.0``
    and has no negotiation. Members that upstream's ``Request`` does not know yet (the TEE
    metadata and topology of trustee #1616 / kbs-types#92) are accepted and ignored as
    upstream's serde ignores them; their names are kept in ``ignored_members`` to be logged.
    """

    version: str
    tee: Tee
    extra_params: Json
    ignored_members: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, obj: object) -> Self:
        o = _object(obj, "Request")
        version = _string(o, "version", "Request")
        if version != PROTOCOL_VERSION:
            raise UnsupportedVersion(
                f"KBS protocol version {version[:32]!r} is not supported; "
                f"expected {PROTOCOL_VERSION}"
            )
        tee_name = _string(o, "tee", "Request")
        tee = Tee.parse(tee_name)
        request = cls(
            version=version,
            tee=tee,
            extra_params=_member(o, "extra-params", "Request"),
            ignored_members=_recorded_names([k for k in o if k not in _REQUEST_MEMBERS]),
        )
        request.policy_selector()  # a malformed selector is refused with the message
        return request

    def policy_selector(self) -> str | None:
        """``extra-params.attestation-policy-selector`` (or the earlier ``policy-selector``):
        the name of the attestation policy the client asks for, or ``None`` (the deployment's
        default). Which names exist is the broker's configuration; this only checks the form.
        A request naming two different policies under the two names is refused."""
        if not isinstance(self.extra_params, dict):
            return None
        names = {
            member: self.extra_params[member]
            for member in (POLICY_SELECTOR, LEGACY_POLICY_SELECTOR)
            if self.extra_params.get(member) is not None
        }
        for member, name in names.items():
            if not isinstance(name, str) or not _SELECTOR.fullmatch(name):
                raise MalformedMessage(
                    f"extra-params.{member} must be 1 to 64 characters of A-Z a-z 0-9 . _ -"
                )
        if len(set(names.values())) > 1:
            raise MalformedMessage(
                f"extra-params.{POLICY_SELECTOR} and extra-params.{LEGACY_POLICY_SELECTOR} "
                "name different policies"
            )
        chosen = next(iter(names.values()), None)
        return chosen if isinstance(chosen, str) else None

    def to_json(self) -> JsonObject:
        return {
            "version": self.version,
            "tee": self.tee.value,
            "extra-params": copy.deepcopy(self.extra_params),
        }

    def supported_hash_algorithms(self) -> tuple[HashAlgorithm, ...]:
        """The client's ``supported-hash-algorithms``, known ones only, in its order."""
        if not isinstance(self.extra_params, dict):
            return ()
        names = self.extra_params.get("supported-hash-algorithms")
        if names is None:
            return ()
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise MalformedMessage("supported-hash-algorithms is not a list of strings")
        found: list[HashAlgorithm] = []
        for name in names:
            try:
                alg = HashAlgorithm(name.lower())
            except ValueError:
                continue  # e.g. sm3: advertised by upstream guests, never selected
            if alg not in found:
                found.append(alg)
        return tuple(found)


@dataclass(frozen=True, slots=True)
class Challenge:
    """``/auth`` response. ``extra_params`` is the empty string unless a hash is selected."""

    nonce: str
    extra_params: Json = ""

    @classmethod
    def from_json(cls, obj: object) -> Self:
        o = _object(obj, "Challenge")
        return cls(
            nonce=_string(o, "nonce", "Challenge"),
            extra_params=_member(o, "extra-params", "Challenge"),
        )

    def to_json(self) -> JsonObject:
        return {"nonce": self.nonce, "extra-params": copy.deepcopy(self.extra_params)}

    def hash_algorithm(self) -> HashAlgorithm:
        """The binding hash the client must use (``MalformedMessage`` if unknown)."""
        return select_hash_algorithm(self.extra_params)


@dataclass(frozen=True, slots=True)
class RuntimeData:
    """``runtime-data``: the challenge nonce verbatim and the TEE's public key."""

    nonce: str
    tee_pubkey: TeePublicKey

    @classmethod
    def from_json(cls, obj: object, *, allow_rsa1_5: bool = False) -> Self:
        o = _object(obj, "runtime-data")
        nonce = _string(o, "nonce", "runtime-data")
        jwk = _member(o, "tee-pubkey", "runtime-data")
        return cls(nonce=nonce, tee_pubkey=tee_key_from_jwk(jwk, allow_rsa1_5=allow_rsa1_5))

    def to_json(self) -> JsonObject:
        return {"tee-pubkey": copy.deepcopy(self.tee_pubkey.jwk), "nonce": self.nonce}

    def digest(self, additional_evidence: str, alg: HashAlgorithm) -> bytes:
        """The primary (CPU TEE) binding digest."""
        return runtime_data_digest(self.nonce, self.tee_pubkey.jwk, additional_evidence, alg)

    def device_digest(self, alg: HashAlgorithm) -> bytes:
        """The binding digest of an additional device."""
        return device_runtime_data_digest(self.nonce, self.tee_pubkey.jwk, alg)


@dataclass(frozen=True, slots=True)
class InitData:
    """``init-data``: the TOML text exactly as the guest holds it (its digest is of these bytes)."""

    format: str
    body: str

    @classmethod
    def from_json(cls, obj: object) -> Self:
        o = _object(obj, "init-data")
        fmt = _string(o, "format", "init-data")
        if fmt != INIT_DATA_FORMAT:
            # Upstream's docs also name "json", which its backends reject.
            raise MalformedMessage(f"init-data format {fmt!r} is not supported")
        return cls(format=fmt, body=_string(o, "body", "init-data"))

    def to_json(self) -> JsonObject:
        return {"format": self.format, "body": self.body}


@dataclass(frozen=True, slots=True)
class TeeEvidence:
    """``tee-evidence``. ``additional_evidence`` is a JSON *string* (``""`` if none)."""

    primary_evidence: Json
    additional_evidence: str

    @classmethod
    def from_json(cls, obj: object) -> Self:
        o = _object(obj, "tee-evidence")
        return cls(
            primary_evidence=_member(o, "primary_evidence", "tee-evidence"),
            additional_evidence=_string(o, "additional_evidence", "tee-evidence"),
        )

    def to_json(self) -> JsonObject:
        return {
            "primary_evidence": copy.deepcopy(self.primary_evidence),
            "additional_evidence": self.additional_evidence,
        }


@dataclass(frozen=True, slots=True)
class Attestation:
    """``POST /attest`` body."""

    runtime_data: RuntimeData
    tee_evidence: TeeEvidence
    init_data: InitData | None = None

    @classmethod
    def from_json(cls, obj: object, *, allow_rsa1_5: bool = False) -> Self:
        o = _object(obj, "Attestation")
        runtime_data = RuntimeData.from_json(
            _member(o, "runtime-data", "Attestation"), allow_rsa1_5=allow_rsa1_5
        )
        tee_evidence = TeeEvidence.from_json(_member(o, "tee-evidence", "Attestation"))
        raw_init = o.get("init-data")
        init_data = None if raw_init is None else InitData.from_json(raw_init)
        return cls(runtime_data=runtime_data, tee_evidence=tee_evidence, init_data=init_data)

    def to_json(self) -> JsonObject:
        out: JsonObject = {}
        if self.init_data is not None:
            out["init-data"] = self.init_data.to_json()
        out["runtime-data"] = self.runtime_data.to_json()
        out["tee-evidence"] = self.tee_evidence.to_json()
        return out


@dataclass(frozen=True, slots=True)
class AttestationResult:
    """``/attest`` response: the attestation token (an EAR JWT)."""

    token: str

    @classmethod
    def from_json(cls, obj: object) -> Self:
        return cls(token=_string(_object(obj, "AttestationResult"), "token", "AttestationResult"))

    def to_json(self) -> JsonObject:
        return {"token": self.token}


_VARIANT: Final = re.compile(r"[A-Za-z][A-Za-z0-9]*")


@dataclass(frozen=True, slots=True)
class ErrorInformation:
    """Error body: ``type`` is :data:`ERROR_TYPE_PREFIX` + upstream's error variant name."""

    type: str
    detail: str

    @classmethod
    def for_variant(cls, variant: str, detail: str) -> Self:
        if not _VARIANT.fullmatch(variant):
            raise ValueError(f"not an error variant name: {variant!r}")
        return cls(type=ERROR_TYPE_PREFIX + variant, detail=detail)

    @property
    def variant(self) -> str | None:
        """The variant name when ``type`` has upstream's prefix, else ``None``."""
        if self.type.startswith(ERROR_TYPE_PREFIX):
            return self.type[len(ERROR_TYPE_PREFIX) :]
        return None

    @classmethod
    def from_json(cls, obj: object) -> Self:
        o = _object(obj, "ErrorInformation")
        return cls(
            type=_string(o, "type", "ErrorInformation"),
            detail=_string(o, "detail", "ErrorInformation"),
        )

    def to_json(self) -> JsonObject:
        return {"type": self.type, "detail": self.detail}
