"""Runtime-data binding: the digest that ties evidence to a session's nonce and TEE key.

Both sides canonicalise the runtime data with RFC 8785 (JCS) and hash it with the hash
algorithm negotiated in the challenge (SHA-384 unless the broker selects another). The CPU
TEE's digest always covers ``additional-evidence`` (the empty string when there is none), so
the primary report transitively covers the evidence of additional devices, which are bound to
the shorter ``{"nonce", "tee-pubkey"}`` object.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Final

import rfc8785

from custodes._internal import jcs
from custodes.errors import MalformedMessage
from custodes.types.json import Json, JsonObject

SELECTED_HASH_ALGORITHM_KEY: Final = "selected-hash-algorithm"


class HashAlgorithm(StrEnum):
    """Hash algorithms of the KBS protocol (wire names are lower case)."""

    SHA256 = "sha256"
    SHA384 = "sha384"
    SHA512 = "sha512"

    def digest(self, data: bytes) -> bytes:
        return hashlib.new(self.value, data).digest()

    @property
    def digest_size(self) -> int:
        return hashlib.new(self.value).digest_size

    @classmethod
    def parse(cls, name: object) -> HashAlgorithm:
        """The algorithm named ``name`` (case-insensitive), or ``MalformedMessage``."""
        if isinstance(name, str):
            try:
                return cls(name.lower())
            except ValueError:
                pass
        # sm3 exists in upstream's enum but nothing selects it; it is refused here.
        raise MalformedMessage(f"unsupported hash algorithm {name!r}")


DEFAULT_HASH_ALGORITHM: Final = HashAlgorithm.SHA384


def select_hash_algorithm(challenge_extra_params: Json) -> HashAlgorithm:
    """The hash algorithm a client must use for the binding, from the challenge.

    The broker's choice is ``extra-params["selected-hash-algorithm"]``; the challenge's
    ``extra-params`` is usually the empty string, which means the default (SHA-384).
    """
    if not isinstance(challenge_extra_params, dict):
        return DEFAULT_HASH_ALGORITHM
    if SELECTED_HASH_ALGORITHM_KEY not in challenge_extra_params:
        return DEFAULT_HASH_ALGORITHM
    return HashAlgorithm.parse(challenge_extra_params[SELECTED_HASH_ALGORITHM_KEY])


def runtime_data_object(
    nonce: str, tee_pubkey_jwk: JsonObject, additional_evidence: str
) -> JsonObject:
    """The structured runtime data of the primary (CPU) evidence."""
    return {
        "additional-evidence": additional_evidence,
        "nonce": nonce,
        "tee-pubkey": dict(tee_pubkey_jwk),
    }


def _jcs_digest(obj: JsonObject, alg: HashAlgorithm) -> bytes:
    try:
        canonical = jcs.dumps(obj)
    except (rfc8785.CanonicalizationError, UnicodeError, ValueError, TypeError) as e:
        raise MalformedMessage("runtime data cannot be canonicalised") from e
    return alg.digest(canonical)


def runtime_data_digest(
    nonce: str, tee_pubkey_jwk: JsonObject, additional_evidence: str, alg: HashAlgorithm
) -> bytes:
    """``H(JCS({"additional-evidence", "nonce", "tee-pubkey"}))``: the CPU TEE's report data."""
    return _jcs_digest(runtime_data_object(nonce, tee_pubkey_jwk, additional_evidence), alg)


def device_runtime_data_digest(nonce: str, tee_pubkey_jwk: JsonObject, alg: HashAlgorithm) -> bytes:
    """``H(JCS({"nonce", "tee-pubkey"}))``: the report data of an additional device."""
    return _jcs_digest({"nonce": nonce, "tee-pubkey": dict(tee_pubkey_jwk)}, alg)
