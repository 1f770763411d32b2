"""Fuzz the sealed-secret parsers: the ``sealed.`` string form (with signature verification),
the payload variants (vault, envelope, including opening an envelope), and signing JWKs."""

from __future__ import annotations

import json

from fuzz_support import (
    FUZZ,
    KEEP_FAILURES_READABLE,
    byte_inputs,
    check,
    dumps,
    json_inputs,
    mutated_json,
    text_inputs,
    vector,
)
from hypothesis import given
from hypothesis import strategies as st

from custodes._internal.b64 import b64url_decode, b64url_encode
from custodes.sealed.envelope import kek_uri, open_envelope
from custodes.sealed.format import SealedSecret
from custodes.sealed.keys import parse_jwk_bytes, public_key_from_jwk
from custodes.sealed.payload import EnvelopePayload, VaultPayload, parse_payload
from custodes.sealed.unseal import verify_signature
from custodes.types.json import JsonObject

pytest_plugins = ["fuzz_report"]
pytestmark = KEEP_FAILURES_READABLE

_DIR = "guest-components/sealed-secret"
SEALED = [
    vector(f"{_DIR}/kata-precreated-{name}.sealed.txt").decode().strip()
    for name in ("test", "nim-instruct", "nim-embedqa")
]
VERIFY_JWK = json.loads(vector(f"{_DIR}/kata-signing-public.jwk.json"))
VERIFY_KEY = public_key_from_jwk(VERIFY_JWK)
PAYLOADS: list[JsonObject] = [
    json.loads(vector(f"{_DIR}/{name}.json"))
    for name in ("gc-vault-1", "gc-vault-2", "gc-envelope-1")
]
JWKS = [
    vector(f"{_DIR}/{name}.jwk.json") for name in ("kata-signing-public", "website-sample-public")
]
KEK = bytes(range(32))  # a fixed key-encryption key: envelopes fail to unwrap, after parsing


def _segments_mutated(draw: st.DrawFn, which: int) -> str:
    """A real sealed secret whose header (0) or payload (1) JSON is mutated and re-encoded."""
    prefix, rest = "sealed.", draw(st.sampled_from(SEALED))[len("sealed.") :]
    parts = rest.split(".")
    doc = json.loads(b64url_decode(parts[which]))
    parts[which] = b64url_encode(dumps(draw(mutated_json([doc]))))
    return prefix + ".".join(parts)


@st.composite
def sealed_texts(draw: st.DrawFn) -> str:
    choice = draw(st.integers(0, 2))
    if choice == 2:
        return draw(text_inputs(SEALED))
    return _segments_mutated(draw, choice)


def _sealed(text: str) -> SealedSecret:
    secret = SealedSecret.parse(text)
    if secret.is_signed:
        verify_signature(secret, VERIFY_KEY)
    parse_payload(secret.payload)
    return secret


def _payload(obj: object) -> VaultPayload | EnvelopePayload:
    payload = parse_payload(obj)
    if isinstance(payload, EnvelopePayload):
        kek_uri(payload)
        open_envelope(payload, KEK)
    return payload


def test_seeds_parse() -> None:
    assert all(isinstance(_sealed(s), SealedSecret) for s in SEALED)
    assert [type(parse_payload(p)).__name__ for p in PAYLOADS] == [
        "VaultPayload",
        "VaultPayload",
        "EnvelopePayload",
    ]


@FUZZ
@given(text=sealed_texts())
def test_fuzz_sealed_secret(text: str) -> None:
    check("sealed.secret", _sealed, text, SealedSecret)


@FUZZ
@given(obj=json_inputs(PAYLOADS))
def test_fuzz_sealed_payload(obj: object) -> None:
    check("sealed.payload", _payload, obj, (VaultPayload, EnvelopePayload))


@FUZZ
@given(raw=byte_inputs(JWKS) | mutated_json([json.loads(j) for j in JWKS]).map(dumps))
def test_fuzz_sealed_jwk(raw: bytes) -> None:
    check("sealed.jwk", lambda b: public_key_from_jwk(parse_jwk_bytes(b)), raw, object)
