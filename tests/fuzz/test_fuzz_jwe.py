"""Fuzz opening a KBS response JWE (flattened JSON) with a fixed TEE key: the derived vectors'
ECDH-ES+A256KW (P-256) and RSA-OAEP-256 responses and their throwaway private keys."""

from __future__ import annotations

import json

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from fuzz_support import (
    FUZZ,
    HOSTILE_JSON,
    KEEP_FAILURES_READABLE,
    check,
    dumps,
    json_inputs,
    mutated_json,
    mutated_member,
    vector,
)
from hypothesis import given
from hypothesis import strategies as st

from custodes._internal.b64 import b64url_decode, b64url_encode
from custodes.protocol.jwe import decrypt
from custodes.types.json import JsonObject

pytest_plugins = ["fuzz_report"]
pytestmark = KEEP_FAILURES_READABLE

_DERIVED = json.loads(vector("trustee/derived/kbs_protocol_derived_vectors.json"))
EC_CASE, RSA_CASE = _DERIVED["jwe_ecdh_es_a256kw_p256"], _DERIVED["jwe_rsa_oaep_256"]


def _ec_key(pem: str) -> ec.EllipticCurvePrivateKey:
    key = load_pem_private_key(pem.encode(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _rsa_key(pem: str) -> rsa.RSAPrivateKey:
    key = load_pem_private_key(pem.encode(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


EC_KEY = _ec_key(EC_CASE["tee_private_key_pem"])
RSA_KEY = _rsa_key(RSA_CASE["tee_private_key_pem"])
EC_JWE: JsonObject = EC_CASE["kbs_response"]
RSA_JWE: JsonObject = RSA_CASE["kbs_response"]
_MEMBERS = ("encrypted_key", "iv", "ciphertext", "tag")


@st.composite
def protected_mutated(draw: st.DrawFn, seed: JsonObject) -> JsonObject:
    """``seed`` with its protected header JSON mutated (or replaced by hostile JSON text)."""
    header = json.loads(b64url_decode(str(seed["protected"])))
    raw = draw(mutated_json([header]).map(dumps) | st.sampled_from(HOSTILE_JSON))
    return {**seed, "protected": b64url_encode(raw)}


def jwes(seed: JsonObject) -> st.SearchStrategy[object]:
    return st.one_of(
        json_inputs([seed]),
        protected_mutated(seed),
        *(mutated_member(seed, (m,), b64url_decode, b64url_encode) for m in _MEMBERS),
    )


def test_seeds_decrypt() -> None:
    plaintext = EC_CASE["plaintext_utf8"].encode()
    assert decrypt(EC_JWE, EC_KEY) == plaintext
    assert decrypt(RSA_JWE, RSA_KEY) == RSA_CASE["plaintext_utf8"].encode()


@FUZZ
@given(jwe=jwes(EC_JWE))
def test_fuzz_jwe_ecdh_es(jwe: object) -> None:
    check("jwe.ecdh_es_a256kw", lambda j: decrypt(j, EC_KEY), jwe, bytes)


@FUZZ
@given(jwe=jwes(RSA_JWE) | jwes(EC_JWE))
def test_fuzz_jwe_rsa_oaep(jwe: object) -> None:
    check("jwe.rsa_oaep_256", lambda j: decrypt(j, RSA_KEY), jwe, bytes)
