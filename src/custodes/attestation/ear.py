"""EAR attestation results (draft-fv-rats-ear): AR4SI tiers, the signer and the verifier.

Tokens are compact JWS, ES256 only, with the shape Trustee issues: header
``{"alg":"ES256","typ":"JWT","jwk":{...}}``; claims ``eat_profile``, ``iat``, ``exp``, ``iss``,
``ear.verifier-id`` and ``submods`` (one appraisal per piece of evidence, ``cpu0``, …). custodes
adds ``jti`` (a random id for the audit log) and, when the broker runs in an insecure mode,
``custodes.insecure`` (the list of what is insecure), so that such tokens say so themselves.

The verifier never trusts a key because the token carries it: a header ``jwk`` must be the very
key that verified the signature, and that key must be one of the configured trusted keys.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
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
        # 4. Appraisals.
        submods = claims.get("submods")
        if (
            not isinstance(submods, dict)
            or not submods
            or not all(isinstance(a, dict) for a in submods.values())
        ):
            raise TokenError("EAR token has no appraisals (submods)")
        return claims
