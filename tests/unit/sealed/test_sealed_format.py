"""The string form: upstream's real sealed secrets, the legacy form, and every refusal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from custodes._internal.b64 import b64url_encode
from custodes.sealed.errors import (
    MissingSealedPrefix,
    SealedAlgorithmError,
    SealedBase64Error,
    SealedFormatError,
    SealedHeaderError,
    SealedPayloadError,
    SealedSecretError,
    SealedSegmentCount,
    SealedSignatureLength,
    SealedUnencodedPayload,
)
from custodes.sealed.format import MAX_LENGTH, SealedSecret, legacy_unsigned

KATA = (
    "kata-precreated-test.sealed.txt",
    "kata-precreated-nim-instruct.sealed.txt",
    "kata-precreated-nim-embedqa.sealed.txt",
)
HEADER = {"b64": True, "alg": "ES256", "kid": "kbs:///default/signing-key/sealed-secret"}
PAYLOAD = {
    "version": "0.1.0",
    "type": "vault",
    "name": "kbs:///default/key/x",
    "provider": "kbs",
    "provider_settings": {},
    "annotations": {},
}


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _seg(obj: Any) -> str:
    return b64url_encode(json.dumps(obj, separators=(",", ":")).encode())


def _make(
    key: ec.EllipticCurvePrivateKey,
    header: str | None = None,
    payload: str | None = None,
    sig_len: int = 64,
) -> str:
    """A sealed string from raw parts, signed (so only the part under test is wrong)."""
    h = _seg(HEADER) if header is None else header
    p = _seg(PAYLOAD) if payload is None else payload
    r, s = decode_dss_signature(key.sign(f"{h}.{p}".encode(), ec.ECDSA(hashes.SHA256())))
    sig = (r.to_bytes(32, "big") + s.to_bytes(32, "big") + b"\x00" * 8)[:sig_len]
    return f"sealed.{h}.{p}.{b64url_encode(sig)}"


@pytest.fixture(scope="module")
def derived(vectors: Path) -> dict[str, Any]:
    data = json.loads((vectors / "guest-components" / "derived-vectors.json").read_text())
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("name", KATA)
def test_upstream_sealed_secrets_parse(name: str, vectors: Path, derived: dict[str, Any]) -> None:
    text = (vectors / "guest-components" / "sealed-secret" / name).read_text()
    secret = SealedSecret.parse(text)
    expected = next(v for v in derived["sealed_secrets_signed"] if v["file"].endswith(name))
    assert secret.header == expected["protected_header"]
    assert secret.payload == expected["payload"]
    assert secret.signing_input == expected["signing_input"].encode()
    assert len(secret.signature) == 64
    assert secret.kid == "kbs:///default/signing-key/sealed-secret"
    assert secret.is_signed
    assert secret.serialize() == text


def test_legacy_unsigned_form_parses_as_unsigned(derived: dict[str, Any]) -> None:
    legacy = derived["sealed_secret_legacy_unsigned_example"]
    secret = SealedSecret.parse(legacy["sealed"])
    assert not secret.is_signed
    assert secret.kid is None and secret.header == {} and secret.signature == b""
    assert secret.payload == json.loads(legacy["payload_json"])
    assert secret.serialize() == legacy["sealed"]
    assert legacy_unsigned(json.loads(legacy["payload_json"])) == legacy["sealed"]


def test_header_without_b64_member_is_accepted(key: ec.EllipticCurvePrivateKey) -> None:
    header = {"alg": "ES256", "kid": "k"}
    assert SealedSecret.parse(_make(key, header=_seg(header))).header == header


def test_every_error_is_a_sealed_secret_error() -> None:
    with pytest.raises(SealedSecretError):
        SealedSecret.parse("nope")


# --- refusals, one class each ------------------------------------------------------------


def test_not_text_refused() -> None:
    with pytest.raises(SealedFormatError):
        SealedSecret.parse(b"sealed.a.b.c")  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["", "eyJh.eyJh.AAAA", "Sealed.a.b.c", " sealed.a.b.c", "sealed"])
def test_missing_prefix_refused(text: str) -> None:
    with pytest.raises(MissingSealedPrefix):
        SealedSecret.parse(text)


def test_too_long_refused() -> None:
    with pytest.raises(SealedFormatError) as e:
        SealedSecret.parse("sealed." + "A" * MAX_LENGTH)
    assert type(e.value) is SealedFormatError


def test_non_ascii_refused(key: ec.EllipticCurvePrivateKey) -> None:
    text = _make(key)
    with pytest.raises(SealedFormatError) as e:
        SealedSecret.parse(text[:-1] + "é")
    assert type(e.value) is SealedFormatError


def test_truncated_refused(key: ec.EllipticCurvePrivateKey) -> None:
    text = _make(key)
    with pytest.raises(SealedSegmentCount):
        SealedSecret.parse(text.rsplit(".", 1)[0])
    with pytest.raises(SealedSegmentCount):
        SealedSecret.parse("sealed.")


def test_extra_part_refused(key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(SealedSegmentCount):
        SealedSecret.parse(_make(key) + ".AAAA")


def test_repeated_prefix_refused(key: ec.EllipticCurvePrivateKey) -> None:
    # Upstream strips every leading "sealed."; custodes accepts exactly one.
    with pytest.raises(SealedSegmentCount):
        SealedSecret.parse("sealed." + _make(key))


@pytest.mark.parametrize("part", [0, 1, 2])
@pytest.mark.parametrize(
    "damage",
    [
        lambda s: s + "=",  # padding
        lambda s: s[:-1] + "+",  # standard alphabet
        lambda s: s + "A" * ((1 - len(s)) % 4),  # a length no base64 text has
        lambda s: s + "\n",
    ],
    ids=["padding", "alphabet", "length", "newline"],
)
def test_bad_base64_refused(key: ec.EllipticCurvePrivateKey, part: int, damage: Any) -> None:
    parts = _make(key)[len("sealed.") :].split(".")
    parts[part] = damage(parts[part])
    with pytest.raises(SealedBase64Error):
        SealedSecret.parse("sealed." + ".".join(parts))


def test_non_canonical_base64_refused(key: ec.EllipticCurvePrivateKey) -> None:
    # 64 bytes encode to 86 characters whose last one carries 4 unused bits.
    text = _make(key)
    last = text[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    stray = alphabet[alphabet.index(last) ^ 1]
    with pytest.raises(SealedBase64Error):
        SealedSecret.parse(text[:-1] + stray)


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[1,2]", b'{"alg":"ES256","alg":"ES256","kid":"k"}', b"\xff\xfe", b'"s"'],
    ids=["garbage", "array", "duplicate", "not-utf8", "string"],
)
def test_header_not_a_json_object_refused(key: ec.EllipticCurvePrivateKey, raw: bytes) -> None:
    with pytest.raises(SealedHeaderError) as e:
        SealedSecret.parse(_make(key, header=b64url_encode(raw)))
    assert type(e.value) is SealedHeaderError


@pytest.mark.parametrize(
    "header",
    [
        {"b64": True, "kid": "k"},
        {"b64": True, "alg": "ES256"},
        {"b64": True, "alg": "ES256", "kid": ""},
        {"b64": True, "alg": "ES256", "kid": 7},
        {"b64": True, "alg": "ES256", "kid": "k" * 1025},
        {"b64": True, "alg": "ES256", "kid": "k", "crit": ["exp"]},
    ],
    ids=["no-alg", "no-kid", "empty-kid", "int-kid", "long-kid", "crit"],
)
def test_header_members_refused(key: ec.EllipticCurvePrivateKey, header: dict[str, Any]) -> None:
    with pytest.raises(SealedHeaderError) as e:
        SealedSecret.parse(_make(key, header=_seg(header)))
    assert type(e.value) is SealedHeaderError


@pytest.mark.parametrize("alg", ["none", "HS256", "ES384", "RS256", "es256", None])
def test_alg_other_than_es256_refused(key: ec.EllipticCurvePrivateKey, alg: str | None) -> None:
    header = {"b64": True, "alg": alg, "kid": "k"}
    with pytest.raises(SealedAlgorithmError):
        SealedSecret.parse(_make(key, header=_seg(header)))


@pytest.mark.parametrize("b64", [False, "true", 1, None])
def test_b64_other_than_true_refused(key: ec.EllipticCurvePrivateKey, b64: Any) -> None:
    header = {"b64": b64, "alg": "ES256", "kid": "k"}
    with pytest.raises(SealedUnencodedPayload):
        SealedSecret.parse(_make(key, header=_seg(header)))


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[]", b'{"a":1,"a":2}', b'{"a":NaN}', b"\xc3\x28"],
    ids=["garbage", "array", "duplicate", "nan", "not-utf8"],
)
def test_payload_not_a_json_object_refused(key: ec.EllipticCurvePrivateKey, raw: bytes) -> None:
    with pytest.raises(SealedPayloadError):
        SealedSecret.parse(_make(key, payload=b64url_encode(raw)))


@pytest.mark.parametrize("length", [0, 1, 63, 65, 72])
def test_signature_length_refused(key: ec.EllipticCurvePrivateKey, length: int) -> None:
    text = _make(key, sig_len=length)
    if length == 0:
        # An empty signature part: the segment count is right, the length is not.
        assert text.endswith(".")
    with pytest.raises(SealedSignatureLength):
        SealedSecret.parse(text)


def test_legacy_form_with_bad_payload_refused() -> None:
    with pytest.raises(SealedBase64Error):
        SealedSecret.parse("sealed.fakejwsheader.e30=.fakesignature")
    with pytest.raises(SealedPayloadError):
        SealedSecret.parse(f"sealed.fakejwsheader.{b64url_encode(b'[]')}.fakesignature")


def test_legacy_placeholders_only_as_a_pair(key: ec.EllipticCurvePrivateKey) -> None:
    # "fakejwsheader" with a real signature part is not the legacy form: its header is
    # then decoded as base64url, and 13 characters are not valid base64url.
    signed = _make(key)
    parts = signed.split(".")
    with pytest.raises(SealedBase64Error):
        SealedSecret.parse(f"sealed.fakejwsheader.{parts[2]}.{parts[3]}")
    with pytest.raises(SealedBase64Error):
        SealedSecret.parse(f"sealed.{parts[1]}.{parts[2]}.fakesignature")
