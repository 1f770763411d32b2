"""EAR attestation results (draft-fv-rats-ear): AR4SI tiers, the signer and the verifier.

Tokens are compact JWS, ES256 only, with the shape Trustee issues: header
``{"alg":"ES256","typ":"JWT","jwk":{...}}``; claims ``eat_profile``, ``iat``, ``exp``, ``iss``,
``ear.verifier-id`` and ``submods`` (one appraisal per piece of evidence, ``cpu0``, …). custodes
adds ``jti`` (a random id for the audit log) and, when the broker runs in an insecure mode,
``custodes.insecure`` (the list of what is insecure), so that such tokens say so themselves.

The verifier never trusts a key because the token carries it: a header ``jwk`` must be the very
key that verified the signature, and that key must be one of the configured trusted keys.

The claims are read through one typed view, :class:`EarClaims` (``submods`` as
:class:`Submodule` objects), so that the EAR claim names are spelled here and nowhere else.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec

from custodes import __version__
from custodes._internal.b64 import b64url_encode
from custodes._internal.clock import Clock
from custodes._internal.jws import ES256, sign_compact, verify_compact_with_key
from custodes.errors import ConfigError, PolicyError, TokenError
from custodes.types.json import Json, JsonObject

TRUST_CLAIM_NAMES: Final = (
    "instance-identity",
    "configuration",
    "executables",
    "file-system",
    "hardware",
    "runtime-opaque",
    "storage-opaque",
    "sourced-data",
)
DEFAULT_PROFILE: Final = "tag:github.com,2024:confidential-containers/Trustee"
DEFAULT_VERIFIER_ID: Final[JsonObject] = {
    "build": f"custodes {__version__}",
    "developer": "custodes",
}
INSECURE_CLAIM: Final = "custodes.insecure"
_P256_BYTES: Final = 32


class Ar4siStatus(StrEnum):
    """AR4SI trust tiers, in increasing order of concern."""

    NONE = "none"
    AFFIRMING = "affirming"
    WARNING = "warning"
    CONTRAINDICATED = "contraindicated"


_SEVERITY: Final = {
    Ar4siStatus.NONE: 0,
    Ar4siStatus.AFFIRMING: 1,
    Ar4siStatus.WARNING: 2,
    Ar4siStatus.CONTRAINDICATED: 3,
}


def tier_of(value: int) -> Ar4siStatus:
    """The AR4SI tier of one trust-claim value."""
    if -1 <= value <= 1:
        return Ar4siStatus.NONE
    if -32 <= value <= 31:
        return Ar4siStatus.AFFIRMING
    if -96 <= value <= 95:
        return Ar4siStatus.WARNING
    return Ar4siStatus.CONTRAINDICATED


def worst_status(statuses: Iterable[Ar4siStatus]) -> Ar4siStatus:
    """The most concerning of ``statuses`` (``none`` when there are none)."""
    return max(statuses, key=_SEVERITY.__getitem__, default=Ar4siStatus.NONE)


def appraisal_status(vector: Mapping[str, int]) -> Ar4siStatus:
    """The worst tier over the vector (``none`` for an empty or all-zero vector)."""
    return worst_status(tier_of(value) for value in vector.values())


def validate_trust_claims(obj: Json) -> dict[str, int]:
    """A full trustworthiness vector (all 8 claims) from a policy's ``trust_claims``.

    ``PolicyError`` for a non-object, an unknown claim name, a value that is not an integer in
    -128..127, or a vector with no non-zero claim (an appraisal must assert something).
    """
    if not isinstance(obj, dict):
        raise PolicyError("trust_claims must be an object of claim name to integer")
    unknown = sorted(set(obj) - set(TRUST_CLAIM_NAMES))
    if unknown:
        raise PolicyError(f"unknown trust claim names {unknown}")
    vector: dict[str, int] = {}
    for name in TRUST_CLAIM_NAMES:
        value = obj.get(name, 0)
        if not isinstance(value, int) or isinstance(value, bool) or not -128 <= value <= 127:
            raise PolicyError(f"trust claim {name!r} must be an integer in -128..127")
        vector[name] = value
    if not any(vector.values()):
        raise PolicyError("the policy set no trust claim: at least one must be non-zero")
    return vector


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


def meaning(claim: str, value: int) -> str:
    """The AR4SI meaning of one trust-claim value."""
    known = AR4SI_MEANINGS.get(claim, {}).get(value) or _COMMON_MEANINGS.get(value)
    return known or f"implementation-specific ({tier_of(value)} range)"


def generate_signing_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key for EAR signing."""
    return ec.generate_private_key(ec.SECP256R1())


def _p256_jwk(key: ec.EllipticCurvePublicKey) -> JsonObject:
    numbers = key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "alg": ES256,
        "x": b64url_encode(numbers.x.to_bytes(_P256_BYTES, "big")),
        "y": b64url_encode(numbers.y.to_bytes(_P256_BYTES, "big")),
    }


def _require_p256(key: object, what: str) -> None:
    if not isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) or not (
        isinstance(key.curve, ec.SECP256R1)
    ):
        raise ConfigError(f"{what} must be an EC P-256 key (EAR tokens are ES256)")


class EarSigner:
    """Issues EAR tokens signed with one P-256 key."""

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        *,
        issuer: str = "custodes",
        ttl_seconds: int = 300,
        clock: Clock,
        profile: str = DEFAULT_PROFILE,
        verifier_id: JsonObject | None = None,
        insecure_notices: Sequence[str] = (),
        extra_claims: Mapping[str, Json] | None = None,
    ) -> None:
        """``extra_claims`` are added to every token (the broker names the tenant there)."""
        _require_p256(key, "the EAR signing key")
        if isinstance(ttl_seconds, bool) or ttl_seconds <= 0:
            raise ConfigError("EAR token lifetime must be a positive number of seconds")
        self._key = key
        self._issuer = issuer
        self._ttl = ttl_seconds
        self._clock = clock
        self._profile = profile
        self._verifier_id = dict(verifier_id if verifier_id is not None else DEFAULT_VERIFIER_ID)
        self._insecure = list(insecure_notices)
        self._extra = dict(extra_claims or {})
        self._jwk = _p256_jwk(key.public_key())

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    def public_jwk(self) -> JsonObject:
        return dict(self._jwk)

    def sign(self, submods: Mapping[str, JsonObject]) -> tuple[str, JsonObject]:
        """A signed token over ``submods`` and the claims it carries."""
        if not submods:
            raise TokenError("an EAR needs at least one appraisal")
        iat = int(self._clock.now())
        claims: JsonObject = {
            "eat_profile": self._profile,
            "iat": iat,
            "exp": iat + self._ttl,
            "iss": self._issuer,
            "ear.verifier-id": dict(self._verifier_id),
            "submods": dict(submods),
            "jti": b64url_encode(secrets.token_bytes(16)),
        }
        if self._insecure:
            claims[INSECURE_CLAIM] = list(self._insecure)
        for name, value in self._extra.items():
            claims.setdefault(name, value)
        header: JsonObject = {"alg": ES256, "typ": "JWT", "jwk": dict(self._jwk)}
        return sign_compact(header, claims, self._key), claims


# --- the claims of an EAR, typed ------------------------------------------------------------

SUBMODS: Final = "submods"
STATUS_CLAIM: Final = "ear.status"
VECTOR_CLAIM: Final = "ear.trustworthiness-vector"
POLICY_ID_CLAIM: Final = "ear.appraisal-policy-id"
EVIDENCE_CLAIM: Final = "ear.veraison.annotated-evidence"
# The claims an appraisal itself sets: a policy extension may not take one of these names.
APPRAISAL_CLAIMS: Final = frozenset({STATUS_CLAIM, VECTOR_CLAIM, POLICY_ID_CLAIM, EVIDENCE_CLAIM})
_STATUSES: Final = frozenset(str(s) for s in Ar4siStatus)
# The CPU submodule, whose runtime data names the TEE key that resources are encrypted to.
CPU_SUBMODULE: Final = "cpu0"


class MalformedEarClaims(TokenError):
    """EAR claims whose appraisals are not the shape EAR gives them."""


def _vector(name: str, value: Json) -> Mapping[str, int]:
    if not isinstance(value, dict):
        raise MalformedEarClaims(f"EAR appraisal {name}: {VECTOR_CLAIM} is not an object")
    unknown = sorted(set(value) - set(TRUST_CLAIM_NAMES))
    if unknown:
        raise MalformedEarClaims(f"EAR appraisal {name}: unknown trust claims {unknown}")
    vector: dict[str, int] = {}
    for claim, v in value.items():
        if not isinstance(v, int) or isinstance(v, bool) or not -128 <= v <= 127:
            raise MalformedEarClaims(
                f"EAR appraisal {name}: trust claim {claim!r} is not an integer in -128..127"
            )
        vector[claim] = v
    return MappingProxyType(vector)


@dataclass(frozen=True, slots=True)
class Submodule:
    """One appraisal of an EAR (``cpu0``, ``gpu0``, ...): the claims of draft-fv-rats-ear that
    custodes reads, and the rest (policy extensions) by name. ``annotated_evidence`` is the
    object of the claims, not a copy."""

    status: Ar4siStatus
    # None when the appraisal carries no vector (EAR makes it optional).
    vector: Mapping[str, int] | None
    annotated_evidence: JsonObject | None = None
    policy_id: str | None = None
    extensions: Mapping[str, Json] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def parse(cls, name: str, obj: Json) -> Submodule:
        """The appraisal ``obj`` named ``name``; ``MalformedEarClaims`` when a claim EAR
        defines has another shape."""
        if not isinstance(obj, dict):
            raise MalformedEarClaims(f"EAR appraisal {name} is not an object")
        status_claim = obj.get(STATUS_CLAIM)
        if not isinstance(status_claim, str) or status_claim not in _STATUSES:
            raise MalformedEarClaims(
                f"EAR appraisal {name}: {STATUS_CLAIM} is missing or not an AR4SI tier"
            )
        status = Ar4siStatus(status_claim)
        vector = _vector(name, obj[VECTOR_CLAIM]) if VECTOR_CLAIM in obj else None
        evidence = obj.get(EVIDENCE_CLAIM)
        if evidence is not None and not isinstance(evidence, dict):
            raise MalformedEarClaims(f"EAR appraisal {name}: {EVIDENCE_CLAIM} is not an object")
        policy_id = obj.get(POLICY_ID_CLAIM)
        if policy_id is not None and not isinstance(policy_id, str):
            raise MalformedEarClaims(f"EAR appraisal {name}: {POLICY_ID_CLAIM} is not a string")
        extensions = {k: v for k, v in obj.items() if k not in APPRAISAL_CLAIMS}
        return cls(status, vector, evidence, policy_id, MappingProxyType(extensions))

    def to_json(self) -> JsonObject:
        """The appraisal as a token carries it (extensions after the EAR claims)."""
        out: JsonObject = {STATUS_CLAIM: str(self.status)}
        if self.vector is not None:
            out[VECTOR_CLAIM] = dict(self.vector)
        if self.policy_id is not None:
            out[POLICY_ID_CLAIM] = self.policy_id
        if self.annotated_evidence is not None:
            out[EVIDENCE_CLAIM] = self.annotated_evidence
        out.update(self.extensions)
        return out


@dataclass(frozen=True, slots=True)
class EarClaims:
    """The claims of an EAR token, its appraisals typed; ``raw`` is the claims as given (the
    issuer, ``jti``, the tenant, ...)."""

    submodules: Mapping[str, Submodule]
    raw: JsonObject = field(compare=False)

    @classmethod
    def parse(cls, claims: Json) -> EarClaims:
        """``MalformedEarClaims`` unless ``claims`` is an object whose ``submods`` is a
        non-empty object of well-formed appraisals."""
        if not isinstance(claims, dict):
            raise MalformedEarClaims("EAR claims are not an object")
        submods = claims.get(SUBMODS)
        if not isinstance(submods, dict) or not submods:
            raise MalformedEarClaims("EAR claims carry no appraisals (submods)")
        parsed = {name: Submodule.parse(name, obj) for name, obj in submods.items()}
        return cls(MappingProxyType(parsed), claims)

    @property
    def status(self) -> Ar4siStatus:
        """The worst status over the appraisals."""
        return worst_status(s.status for s in self.submodules.values())

    @property
    def token_id(self) -> str | None:
        jti = self.raw.get("jti")
        return jti if isinstance(jti, str) else None

    def trust_vectors(self) -> dict[str, Json]:
        """Submodule -> its trust vector (null for an appraisal without one)."""
        return {
            name: None if s.vector is None else dict(s.vector)
            for name, s in self.submodules.items()
        }

    def annotated_evidence(self) -> dict[str, JsonObject]:
        """Submodule -> its annotated evidence, for the appraisals that carry it."""
        return {
            name: s.annotated_evidence
            for name, s in self.submodules.items()
            if s.annotated_evidence is not None
        }

    def tee_pubkey(self) -> Json:
        """The TEE key the CPU appraisal's runtime data names (null when there is none)."""
        cpu = self.submodules.get(CPU_SUBMODULE)
        evidence = cpu.annotated_evidence if cpu is not None else None
        runtime = evidence.get("runtime_data_claims") if evidence is not None else None
        return runtime.get("tee-pubkey") if isinstance(runtime, dict) else None


def _int_claim(claims: JsonObject, name: str) -> int:
    value = claims.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise TokenError(f"EAR claim {name!r} missing or not an integer")
    return value


class EarVerifier:
    """Verifies EAR tokens issued by one of the trusted P-256 keys."""

    def __init__(
        self,
        trusted_keys: Sequence[ec.EllipticCurvePublicKey],
        *,
        clock: Clock,
        leeway_seconds: int = 60,
    ) -> None:
        if not trusted_keys:
            raise ConfigError("an EAR verifier needs at least one trusted key")
        for key in trusted_keys:
            _require_p256(key, "a trusted EAR key")
        self._keys = list(trusted_keys)
        self._clock = clock
        self._leeway = leeway_seconds

    def verify(self, token: str) -> JsonObject:
        """The claims of ``token``, or ``TokenError``."""
        return self.verify_ear(token).raw

    def verify_ear(self, token: str) -> EarClaims:
        """The claims of ``token``, typed, or ``TokenError`` (``MalformedEarClaims`` for
        appraisals of the wrong shape)."""
        # 1. Signature by a trusted key, algorithm fixed by that key (ES256).
        header, claims, key = verify_compact_with_key(token, self._keys)
        if not isinstance(key, ec.EllipticCurvePublicKey):  # unreachable: only P-256 is trusted
            raise TokenError("token verified with a key that is not P-256")
        # 2. A header jwk is only a hint: it must be the key that verified.
        if "jwk" in header:
            jwk = header["jwk"]
            expected = _p256_jwk(key)
            if not isinstance(jwk, dict) or any(
                jwk.get(member) != expected[member] for member in ("kty", "crv", "x", "y")
            ):
                raise TokenError("token header jwk is not the trusted key that signed it")
            if jwk.get("alg", ES256) != ES256:
                raise TokenError("token header jwk names another algorithm")
        # 3. Lifetime.
        now = self._clock.now()
        exp = _int_claim(claims, "exp")
        iat = _int_claim(claims, "iat")
        if exp + self._leeway <= now:
            raise TokenError("EAR token expired")
        if iat > now + self._leeway:
            raise TokenError("EAR token issued in the future")
        # 4. Appraisals, each the shape EAR gives it.
        return EarClaims.parse(claims)
