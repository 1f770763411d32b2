"""JWE to the TEE key: the flattened JSON serialisation of a released resource.

The broker encrypts each resource with ``enc = A256GCM`` under a random 256-bit CEK, and
delivers the CEK to the TEE key with ``ECDH-ES+A256KW`` (P-256/P-521, RFC 7518 §4.6),
``RSA-OAEP-256``, or the deprecated ``RSA1_5`` (only when the guest's key names it).

The composition is written here on ``cryptography`` primitives rather than taken from a JOSE
library, for two reasons:

* The AAD of a JWE is the *received* base64url protected-header segment. joserfc, when it
  opens a JSON-serialised JWE, re-serialises the decoded header and authenticates that
  instead, so a producer whose header bytes differ (for example JSON with spaces) fails to
  decrypt: an interoperability bug on exactly the message shape the KBS uses.
* Upstream's guests and tools expect upstream's exact header shape: compact JSON with the
  members ``alg``, ``enc``, ``epk{crv,kty,x,y}`` in that order and no others.

Opening is strict: every member, length and algorithm is checked, and every failure is one
:class:`~custodes.errors.JweError` that says which check failed but never leaks key material.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Final, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_wrap,
)

from custodes._internal.b64 import b64url_decode, b64url_encode
from custodes._internal.strictjson import loads as parse_json_body
from custodes.errors import InvalidTeeKey, JweError, MalformedMessage
from custodes.protocol.jwk import (
    TeeKeyAlgorithm,
    TeePublicKey,
    ec_point_members,
    jwk_curve_name,
    parse_ec_point,
)
from custodes.types.json import Json, JsonObject

ENC: Final = "A256GCM"
CEK_SIZE: Final = 32
IV_SIZE: Final = 12
TAG_SIZE: Final = 16
WRAPPED_CEK_SIZE: Final = CEK_SIZE + 8  # AES key wrap adds one 64-bit block

_REQUIRED: Final = frozenset({"protected", "encrypted_key", "iv", "ciphertext", "tag"})
_OPTIONAL: Final = frozenset({"header", "aad"})
# Header parameters that must be integrity protected, and ones this decoder does not
# implement (compression invites decompression bombs; apu/apv are never sent upstream).
_PROTECTED_ONLY: Final = frozenset({"alg", "enc", "crit", "zip"})
_UNSUPPORTED_PARAMS: Final = frozenset({"crit", "zip", "apu", "apv"})
_HEADER_MAX_DEPTH: Final = 4
_ALG_NAMES: Final = frozenset(a.value for a in TeeKeyAlgorithm)

_OAEP_SHA256: Final = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)


def _fail(msg: str) -> NoReturn:
    raise JweError(msg)


def _kek(shared_secret: bytes, alg: TeeKeyAlgorithm) -> bytes:
    """RFC 7518 §4.6.2 Concat KDF with empty PartyUInfo/PartyVInfo."""
    alg_id = alg.value.encode("ascii")
    other_info = (
        struct.pack(">I", len(alg_id))
        + alg_id
        + struct.pack(">I", 0)  # PartyUInfo (apu): empty
        + struct.pack(">I", 0)  # PartyVInfo (apv): empty
        + struct.pack(">I", CEK_SIZE * 8)  # SuppPubInfo: keydatalen in bits
    )
    return ConcatKDFHash(hashes.SHA256(), CEK_SIZE, other_info).derive(shared_secret)


def encrypt(plaintext: bytes, recipient: TeePublicKey) -> JsonObject:
    """Encrypt ``plaintext`` to a validated TEE key; returns the flattened JSON JWE."""
    cek = os.urandom(CEK_SIZE)
    iv = os.urandom(IV_SIZE)
    header: JsonObject = {"alg": recipient.alg.value, "enc": ENC}
    key = recipient.key
    if recipient.alg is TeeKeyAlgorithm.ECDH_ES_A256KW:
        if not isinstance(key, ec.EllipticCurvePublicKey):
            _fail("ECDH-ES+A256KW needs an EC key")
        ephemeral = ec.generate_private_key(key.curve)
        shared = ephemeral.exchange(ec.ECDH(), key)
        encrypted_key = aes_key_wrap(_kek(shared, recipient.alg), cek)
        header["epk"] = ec_point_members(ephemeral.public_key())
    elif recipient.alg is TeeKeyAlgorithm.RSA_OAEP_256:
        if not isinstance(key, rsa.RSAPublicKey):
            _fail("RSA-OAEP-256 needs an RSA key")
        encrypted_key = key.encrypt(cek, _OAEP_SHA256)
    else:
        # Only reachable when the guest's key itself names RSA1_5 (accepted by opt-in).
        if not isinstance(key, rsa.RSAPublicKey):
            _fail("RSA1_5 needs an RSA key")
        encrypted_key = key.encrypt(cek, padding.PKCS1v15())
    protected = b64url_encode(json.dumps(header, separators=(",", ":")).encode("ascii"))
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode("ascii"))
    return {
        "protected": protected,
        "encrypted_key": b64url_encode(encrypted_key),
        "iv": b64url_encode(iv),
        "ciphertext": b64url_encode(sealed[:-TAG_SIZE]),
        "tag": b64url_encode(sealed[-TAG_SIZE:]),
    }


def _b64_member(jwe: JsonObject, name: str) -> bytes:
    value = jwe[name]
    if not isinstance(value, str):
        _fail(f"JWE member {name!r} is not a string")
    try:
        return b64url_decode(value)
    except ValueError as e:
        raise JweError(f"JWE member {name!r} is not unpadded base64url") from e


def _joint_header(jwe: JsonObject, protected_raw: bytes) -> JsonObject:
    """The JOSE header: the protected header plus a per-recipient ``header``, disjoint."""
    try:
        protected = parse_json_body(protected_raw, max_depth=_HEADER_MAX_DEPTH)
    except MalformedMessage as e:
        raise JweError("protected header is not strict JSON") from e
    if not isinstance(protected, dict):
        _fail("protected header is not a JSON object")
    unprotected = jwe.get("header", {})
    if not isinstance(unprotected, dict):
        _fail("JWE member 'header' is not an object")
    if _PROTECTED_ONLY.intersection(unprotected):
        _fail("alg, enc, crit and zip must be in the protected header")
    if set(protected).intersection(unprotected):
        _fail("a header parameter appears in both protected and unprotected headers")
    joint = {**protected, **unprotected}
    unsupported = _UNSUPPORTED_PARAMS.intersection(joint)
    if unsupported:
        _fail(f"unsupported header parameters {sorted(unsupported)}")
    return joint


def _algorithm(
    header: JsonObject,
    private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    allow_rsa1_5: bool,
    expected_alg: TeeKeyAlgorithm | None,
) -> TeeKeyAlgorithm:
    if header.get("enc") != ENC:
        _fail(f"content encryption {header.get('enc')!r} is not {ENC}")
    name = header.get("alg")
    if not isinstance(name, str) or name not in _ALG_NAMES:
        _fail(f"key management algorithm {name!r} is not supported")
    alg = TeeKeyAlgorithm(name)
    if alg is TeeKeyAlgorithm.RSA1_5 and not allow_rsa1_5:
        _fail("RSA1_5 is refused unless explicitly allowed")
    if expected_alg is not None and alg is not expected_alg:
        _fail(f"JWE algorithm {alg} is not the key's algorithm {expected_alg}")
    is_ec = alg is TeeKeyAlgorithm.ECDH_ES_A256KW
    if is_ec != isinstance(private_key, ec.EllipticCurvePrivateKey):
        _fail(f"JWE algorithm {alg} does not fit the key type")
    return alg


def _unwrap_ecdh(header: JsonObject, private_key: ec.EllipticCurvePrivateKey, ek: bytes) -> bytes:
    epk = header.get("epk")
    if not isinstance(epk, dict):
        _fail("ECDH-ES+A256KW JWE lacks an epk object")
    if epk.get("kty") != "EC":
        _fail("epk is not an EC key")
    if "d" in epk:
        _fail("epk carries a private key")
    try:
        own_curve = jwk_curve_name(private_key)
    except InvalidTeeKey as e:
        raise JweError("private key is not on P-256 or P-521") from e
    if epk.get("crv") != own_curve:
        _fail(f"epk curve {epk.get('crv')!r} is not the key's curve {own_curve}")
    try:
        ephemeral = parse_ec_point(epk.get("crv"), epk.get("x"), epk.get("y"))
    except InvalidTeeKey as e:
        raise JweError(f"epk is invalid: {e}") from e
    if len(ek) != WRAPPED_CEK_SIZE:
        _fail(f"encrypted_key is {len(ek)} bytes, expected {WRAPPED_CEK_SIZE}")
    shared = private_key.exchange(ec.ECDH(), ephemeral)
    try:
        return aes_key_unwrap(_kek(shared, TeeKeyAlgorithm.ECDH_ES_A256KW), ek)
    except InvalidUnwrap as e:
        raise JweError("key unwrap failed") from e


def _unwrap_rsa(alg: TeeKeyAlgorithm, private_key: rsa.RSAPrivateKey, ek: bytes) -> bytes:
    if len(ek) != (private_key.key_size + 7) // 8:
        _fail("encrypted_key length does not match the RSA modulus")
    if alg is TeeKeyAlgorithm.RSA_OAEP_256:
        try:
            return private_key.decrypt(ek, _OAEP_SHA256)
        except ValueError as e:
            raise JweError("RSA-OAEP-256 decryption failed") from e
    # RSA1_5: a padding failure must look exactly like a wrong key (RFC 7516 §11.5), so a
    # random CEK is substituted and the failure surfaces as the GCM tag check.
    fallback = os.urandom(CEK_SIZE)
    try:
        cek = private_key.decrypt(ek, padding.PKCS1v15())
    except ValueError:
        return fallback
    return cek if len(cek) == CEK_SIZE else fallback


def decrypt(
    jwe: object,
    private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    *,
    allow_rsa1_5: bool = False,
    expected_alg: TeeKeyAlgorithm | None = None,
) -> bytes:
    """Open a flattened JSON JWE; any problem raises ``JweError``.

    ``expected_alg``, when given, pins the key management algorithm (a key pair passes its
    own, so an RSA-OAEP-256 key never opens an RSA1_5 JWE).
    """
    # 1. Shape: an object with exactly the flattened members (RFC 7516 §7.2.2).
    if not isinstance(jwe, dict):
        _fail("JWE is not a JSON object")
    members = set(jwe)
    if not _REQUIRED <= members:
        _fail(f"JWE lacks members {sorted(_REQUIRED - members)}")
    if not members <= _REQUIRED | _OPTIONAL:
        _fail(f"JWE has unknown members {sorted(members - _REQUIRED - _OPTIONAL)}")
    # 2. Base64url members, decoded strictly.
    protected_raw = _b64_member(jwe, "protected")
    ek = _b64_member(jwe, "encrypted_key")
    iv = _b64_member(jwe, "iv")
    ciphertext = _b64_member(jwe, "ciphertext")
    tag = _b64_member(jwe, "tag")
    aad_member: Json = jwe.get("aad")
    if aad_member is not None:
        _b64_member(jwe, "aad")
    # 3. Header and algorithms.
    header = _joint_header(jwe, protected_raw)
    alg = _algorithm(header, private_key, allow_rsa1_5, expected_alg)
    # 4. Exact lengths.
    if len(iv) != IV_SIZE:
        _fail(f"iv is {len(iv)} bytes, expected {IV_SIZE}")
    if len(tag) != TAG_SIZE:
        _fail(f"tag is {len(tag)} bytes, expected {TAG_SIZE}")
    # 5. Recover the CEK.
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        cek = _unwrap_ecdh(header, private_key, ek)
    else:
        cek = _unwrap_rsa(alg, private_key, ek)
    if len(cek) != CEK_SIZE:
        _fail("content encryption key has the wrong size")
    # 6. AAD is the protected segment as received, never a re-serialisation.
    aad = jwe["protected"].encode("ascii")
    if aad_member is not None:
        aad += b"." + aad_member.encode("ascii")
    try:
        return AESGCM(cek).decrypt(iv, ciphertext + tag, aad)
    except InvalidTag as e:
        raise JweError("authentication tag mismatch") from e
