"""Envelope secrets with a broker-held KEK: round trips, the exact construction (checked with
primitives used directly), and each way an envelope is refused.

``fetch`` is a fake broker (a dict), as in test_sealed_unseal.py: the attested request cannot
run in a unit test; the live-broker CLI test covers the real path.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

from custodes._internal.b64 import b64std_decode, b64std_encode, b64url_encode
from custodes.errors import NotFound
from custodes.protocol.resource import ResourceUri
from custodes.sealed.envelope import open_envelope, seal_envelope
from custodes.sealed.errors import (
    EnvelopeDecryptFailed,
    EnvelopeError,
    EnvelopeKekInvalid,
    EnvelopeUnwrapFailed,
    SealedPayloadError,
    SealedSignatureMismatch,
    UnsupportedProvider,
)
from custodes.sealed.keys import generate_signing_key, public_jwk
from custodes.sealed.payload import EnvelopePayload, parse_payload
from custodes.sealed.seal import seal
from custodes.sealed.unseal import BrokerKidResolver, unseal

KID = "kbs:///default/signing-key/sealed"
KEK_URI = "kbs:///default/kek/app"
KEK = bytes(range(32))


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return generate_signing_key()


def _fake_broker(key: ec.EllipticCurvePrivateKey, kek: bytes = KEK) -> Any:
    resources = {KID: json.dumps(public_jwk(key.public_key(), KID)).encode(), KEK_URI: kek}

    def fetch(uri: ResourceUri) -> bytes:
        if str(uri) not in resources:
            raise NotFound(str(uri))
        return resources[str(uri)]

    return fetch


def _envelope(plaintext: bytes = b"top secret") -> EnvelopePayload:
    return seal_envelope(plaintext, kek=KEK, kek_uri=ResourceUri.parse(KEK_URI))


@pytest.mark.parametrize("plaintext", [b"", b"x", b"\x00\xff" * 5000])
def test_seal_unseal_round_trip(key: ec.EllipticCurvePrivateKey, plaintext: bytes) -> None:
    text = seal(_envelope(plaintext), key, KID)
    fetch = _fake_broker(key)
    assert unseal(text, fetch=fetch, kids=BrokerKidResolver(fetch)).reveal() == plaintext


def test_construction_is_as_documented() -> None:
    """A256KW-wrapped DEK, AES-256-GCM data with no AAD, std base64, upstream field names."""
    payload = _envelope(b"hello")
    obj = payload.to_json()
    assert list(obj) == [
        "version", "type", "key_id", "encrypted_key", "encrypted_data", "wrap_type", "iv",
        "provider", "provider_settings", "annotations",
    ]  # fmt: skip
    assert obj["type"] == "envelope" and obj["provider"] == "kbs"
    assert obj["key_id"] == KEK_URI and obj["wrap_type"] == "A256GCM"
    assert obj["provider_settings"] == {} and obj["annotations"] == {}
    dek = aes_key_unwrap(KEK, b64std_decode(obj["encrypted_key"]))
    iv = b64std_decode(obj["iv"])
    assert len(dek) == 32 and len(iv) == 12
    assert AESGCM(dek).decrypt(iv, b64std_decode(obj["encrypted_data"]), None) == b"hello"
    assert parse_payload(obj) == payload


def test_fresh_key_and_iv_each_time() -> None:
    a, b = _envelope(), _envelope()
    assert a.encrypted_key != b.encrypted_key and a.iv != b.iv


def test_wrong_kek_refused() -> None:
    with pytest.raises(EnvelopeUnwrapFailed):
        open_envelope(_envelope(), bytes(32))


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_kek_of_wrong_length_refused(length: int) -> None:
    with pytest.raises(EnvelopeKekInvalid):
        open_envelope(_envelope(), b"k" * length)
    with pytest.raises(EnvelopeKekInvalid):
        seal_envelope(b"x", kek=b"k" * length, kek_uri=ResourceUri.parse(KEK_URI))


def _flip(field_b64: str, index: int = 0) -> str:
    raw = bytearray(b64std_decode(field_b64))
    raw[index] ^= 0x01
    return b64std_encode(bytes(raw))


def test_tampered_ciphertext_refused() -> None:
    p = _envelope()
    with pytest.raises(EnvelopeDecryptFailed):
        open_envelope(dataclasses.replace(p, encrypted_data=_flip(p.encrypted_data)), KEK)


def test_tampered_tag_refused() -> None:
    p = _envelope()
    with pytest.raises(EnvelopeDecryptFailed):
        open_envelope(dataclasses.replace(p, encrypted_data=_flip(p.encrypted_data, -1)), KEK)


def test_tampered_iv_refused() -> None:
    p = _envelope()
    with pytest.raises(EnvelopeDecryptFailed):
        open_envelope(dataclasses.replace(p, iv=_flip(p.iv)), KEK)


def test_tampered_wrapped_key_refused() -> None:
    p = _envelope()
    with pytest.raises(EnvelopeUnwrapFailed):
        open_envelope(dataclasses.replace(p, encrypted_key=_flip(p.encrypted_key, 20)), KEK)


def test_data_key_from_another_envelope_refused() -> None:
    a, b = _envelope(), _envelope()
    with pytest.raises(EnvelopeDecryptFailed):
        open_envelope(dataclasses.replace(a, encrypted_key=b.encrypted_key), KEK)


@pytest.mark.parametrize(
    "change",
    [
        {"encrypted_key": "not base64"},
        {"encrypted_key": b64url_encode(b"\xff" * 40)},  # url alphabet, no padding
        {"encrypted_key": b64std_encode(b"k" * 32)},
        {"encrypted_data": "zzz"},
        {"encrypted_data": b64std_encode(b"short")},
        {"iv": "www"},
        {"iv": b64std_encode(b"i" * 16)},
        {"key_id": "xxx"},
        {"key_id": "kbs:///two/parts"},
    ],
    ids=["key-b64", "key-urlsafe", "key-length", "data-b64", "data-short", "iv-b64",
         "iv-length", "key-id", "key-id-path"],
)  # fmt: skip
def test_malformed_fields_refused(change: dict[str, Any]) -> None:
    with pytest.raises(SealedPayloadError):
        open_envelope(dataclasses.replace(_envelope(), **change), KEK)


def test_ctr_wrap_type_refused() -> None:
    with pytest.raises(EnvelopeError) as e:
        open_envelope(dataclasses.replace(_envelope(), wrap_type="A256CTR"), KEK)
    assert type(e.value) is EnvelopeError


def test_upstream_kms_envelope_refused(vectors: Path, key: ec.EllipticCurvePrivateKey) -> None:
    obj = json.loads(
        (vectors / "guest-components" / "sealed-secret" / "gc-envelope-1.json").read_text()
    )
    text = seal(EnvelopePayload.from_json(obj), key, KID)
    fetch = _fake_broker(key)
    with pytest.raises(UnsupportedProvider):
        unseal(text, fetch=fetch, kids=BrokerKidResolver(fetch))


def test_broker_kek_of_wrong_length_refused(key: ec.EllipticCurvePrivateKey) -> None:
    fetch = _fake_broker(key, kek=b"short")
    with pytest.raises(EnvelopeKekInvalid):
        unseal(seal(_envelope(), key, KID), fetch=fetch, kids=BrokerKidResolver(fetch))


def test_broker_holds_another_kek(key: ec.EllipticCurvePrivateKey) -> None:
    fetch = _fake_broker(key, kek=b"\x07" * 32)
    with pytest.raises(EnvelopeUnwrapFailed):
        unseal(seal(_envelope(), key, KID), fetch=fetch, kids=BrokerKidResolver(fetch))


def test_tampered_sealed_envelope_refused_before_decrypting(
    key: ec.EllipticCurvePrivateKey,
) -> None:
    p = _envelope()
    header, _, sig = seal(p, key, KID).removeprefix("sealed.").split(".")
    forged_payload = dataclasses.replace(p, encrypted_data=_flip(p.encrypted_data)).to_json()
    forged = (
        f"sealed.{header}."
        f"{b64url_encode(json.dumps(forged_payload, separators=(',', ':')).encode())}.{sig}"
    )
    asked: list[str] = []
    inner = _fake_broker(key)

    def fetch(uri: ResourceUri) -> bytes:
        asked.append(str(uri))
        result: bytes = inner(uri)
        return result

    with pytest.raises(SealedSignatureMismatch):
        unseal(forged, fetch=fetch, kids=BrokerKidResolver(fetch))
    assert asked == [KID]  # the KEK was never requested
