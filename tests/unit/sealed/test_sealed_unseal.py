"""Unsealing: upstream's real secrets verify, every verification step refuses on its own, and
kids resolve only to keys inside the key directory or at the broker.

``fetch`` here is a fake: a dict of resource URIs to bytes standing in for the attested
broker request, which cannot run in a unit test. The real broker path is covered by the CLI
test against a live broker (tests/unit/cli/test_cli_secret.py) and by the guest's end-to-end tests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from custodes._internal.b64 import b64url_decode, b64url_encode
from custodes.errors import ConfigError, NotFound, UpstreamError
from custodes.protocol.resource import ResourceUri
from custodes.sealed.errors import (
    InvalidSigningKey,
    KidTraversal,
    SealedKidError,
    SealedPayloadError,
    SealedSignatureLength,
    SealedSignatureMismatch,
    UnknownKid,
    UnsignedSealedSecret,
    UnsupportedProvider,
    UnsupportedSealedVersion,
)
from custodes.sealed.format import SealedSecret, legacy_unsigned
from custodes.sealed.keys import generate_signing_key, private_key_from_jwk, public_jwk
from custodes.sealed.payload import VaultPayload
from custodes.sealed.seal import seal
from custodes.sealed.unseal import (
    BrokerKidResolver,
    DirectoryKidResolver,
    RoutingKidResolver,
    unseal,
    verify_signature,
)
from custodes.types.secret import Secret

KID = "kbs:///default/signing-key/sealed-secret"


def _folder(vectors: Path) -> Path:
    return vectors / "guest-components" / "sealed-secret"


class FakeBroker:
    """Stands in for the attested resource fetch (see the module docstring)."""

    def __init__(self, resources: dict[str, bytes]) -> None:
        self.resources = resources
        self.asked: list[str] = []

    def __call__(self, uri: ResourceUri) -> bytes:
        self.asked.append(str(uri))
        try:
            return self.resources[str(uri)]
        except KeyError:
            raise NotFound(f"no resource {uri}") from None


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return generate_signing_key()


def _broker_with_key(key: ec.EllipticCurvePrivateKey, **values: bytes) -> FakeBroker:
    resources = {KID: json.dumps(public_jwk(key.public_key(), KID)).encode()}
    resources.update({f"kbs:///default/key/{k}": v for k, v in values.items()})
    return FakeBroker(resources)


def _unseal_with(broker: FakeBroker, text: str, **kw: Any) -> Secret[bytes]:
    return unseal(text, fetch=broker, kids=BrokerKidResolver(broker), **kw)


def _resign(key: ec.EllipticCurvePrivateKey, header: str, payload: str) -> str:
    r, s = decode_dss_signature(key.sign(f"{header}.{payload}".encode(), ec.ECDSA(hashes.SHA256())))
    return (
        f"sealed.{header}.{payload}.{b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
    )


def _seg(obj: object) -> str:
    return b64url_encode(json.dumps(obj, separators=(",", ":")).encode())


# --- upstream's real secrets -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "resource"),
    [
        ("kata-precreated-test.sealed.txt", "kbs:///default/sealed-secret/test"),
        ("kata-precreated-nim-instruct.sealed.txt", "kbs:///default/ngc-api-key/instruct"),
        ("kata-precreated-nim-embedqa.sealed.txt", "kbs:///default/ngc-api-key/embedqa"),
    ],
)
def test_upstream_secrets_unseal(vectors: Path, name: str, resource: str) -> None:
    folder = _folder(vectors)
    broker = FakeBroker(
        {
            KID: (folder / "kata-signing-public.jwk.json").read_bytes(),
            resource: b"the value",
        }
    )
    plaintext = _unseal_with(broker, (folder / name).read_text())
    assert plaintext.reveal() == b"the value"
    assert broker.asked == [KID, resource]  # the key first, the value only once verified
    assert "the value" not in repr(plaintext)


def test_upstream_secret_with_wrong_key_refused(vectors: Path) -> None:
    folder = _folder(vectors)
    wrong = private_key_from_jwk(json.loads((folder / "gc-test-key-2.json").read_text()))
    secret = SealedSecret.parse((folder / "kata-precreated-test.sealed.txt").read_text())
    with pytest.raises(SealedSignatureMismatch):
        verify_signature(secret, wrong.public_key())


# --- tampering ---------------------------------------------------------------------------


def test_tampered_payload_refused(key: ec.EllipticCurvePrivateKey) -> None:
    broker = _broker_with_key(key, a=b"A", b=b"B")
    text = seal(VaultPayload(name="kbs:///default/key/a"), key, KID)
    header, _, sig = text.removeprefix("sealed.").split(".")
    forged = f"sealed.{header}.{_seg(VaultPayload(name='kbs:///default/key/b').to_json())}.{sig}"
    with pytest.raises(SealedSignatureMismatch):
        _unseal_with(broker, forged)
    assert broker.asked == [KID]  # nothing was fetched for the forged payload


def test_tampered_header_refused(key: ec.EllipticCurvePrivateKey) -> None:
    broker = _broker_with_key(key, a=b"A")
    text = seal(VaultPayload(name="kbs:///default/key/a"), key, KID)
    _, payload, sig = text.removeprefix("sealed.").split(".")
    # Same kid, one more member: a well-formed header that was not signed.
    header = _seg({"b64": True, "alg": "ES256", "kid": KID, "typ": "JWT"})
    with pytest.raises(SealedSignatureMismatch):
        _unseal_with(broker, f"sealed.{header}.{payload}.{sig}")


def test_tampered_signature_refused(key: ec.EllipticCurvePrivateKey) -> None:
    broker = _broker_with_key(key, a=b"A")
    text = seal(VaultPayload(name="kbs:///default/key/a"), key, KID)
    head, sig = text.rsplit(".", 1)
    raw = bytearray(b64url_decode(sig))
    raw[10] ^= 1
    with pytest.raises(SealedSignatureMismatch):
        _unseal_with(broker, f"{head}.{b64url_encode(bytes(raw))}")


def test_wrong_key_refused(key: ec.EllipticCurvePrivateKey) -> None:
    other = generate_signing_key()
    broker = _broker_with_key(other, a=b"A")
    with pytest.raises(SealedSignatureMismatch):
        _unseal_with(broker, seal(VaultPayload(name="kbs:///default/key/a"), key, KID))


def test_zero_signature_refused(key: ec.EllipticCurvePrivateKey) -> None:
    text = seal(VaultPayload(name="kbs:///default/key/a"), key, KID)
    secret = SealedSecret.parse(text.rsplit(".", 1)[0] + "." + b64url_encode(b"\x00" * 64))
    with pytest.raises(SealedSignatureMismatch):
        verify_signature(secret, key.public_key())


def test_verify_refuses_other_curves(key: ec.EllipticCurvePrivateKey) -> None:
    secret = SealedSecret.parse(seal(VaultPayload(name="kbs:///r/t/x"), key, "k"))
    with pytest.raises(InvalidSigningKey):
        verify_signature(secret, ec.generate_private_key(ec.SECP384R1()).public_key())


def test_verify_refuses_hand_built_short_signature(key: ec.EllipticCurvePrivateKey) -> None:
    secret = SealedSecret.parse(seal(VaultPayload(name="kbs:///r/t/x"), key, "k"))
    short = SealedSecret(secret.header, secret.payload, b"\x01" * 63, secret.signing_input)
    with pytest.raises(SealedSignatureLength):
        verify_signature(short, key.public_key())


# --- legacy unsigned form ----------------------------------------------------------------


def test_legacy_unsigned_refused_by_default() -> None:
    broker = FakeBroker({"kbs:///default/key/a": b"A"})
    text = legacy_unsigned(VaultPayload(name="kbs:///default/key/a").to_json())
    with pytest.raises(UnsignedSealedSecret):
        _unseal_with(broker, text)
    assert broker.asked == []


def test_legacy_unsigned_accepted_when_allowed(vectors: Path) -> None:
    derived = json.loads((vectors / "guest-components" / "derived-vectors.json").read_text())
    text = derived["sealed_secret_legacy_unsigned_example"]["sealed"]
    broker = FakeBroker({"kbs:///one/2/trois": b"legacy value"})
    plaintext = unseal(text, fetch=broker, kids=None, allow_unsigned=True)
    assert plaintext.reveal() == b"legacy value"


def test_allow_unsigned_still_verifies_signed_secrets(key: ec.EllipticCurvePrivateKey) -> None:
    broker = _broker_with_key(generate_signing_key(), a=b"A")
    with pytest.raises(SealedSignatureMismatch):
        _unseal_with(
            broker, seal(VaultPayload(name="kbs:///default/key/a"), key, KID), allow_unsigned=True
        )


def test_verify_signature_refuses_legacy(key: ec.EllipticCurvePrivateKey) -> None:
    secret = SealedSecret.parse(legacy_unsigned(VaultPayload(name="kbs:///r/t/x").to_json()))
    with pytest.raises(UnsignedSealedSecret):
        verify_signature(secret, key.public_key())


# --- payload checks after verification ---------------------------------------------------


def test_unsupported_version_refused(key: ec.EllipticCurvePrivateKey) -> None:
    payload = {**VaultPayload(name="kbs:///default/key/a").to_json(), "version": "0.2.0"}
    text = _resign(key, _seg({"b64": True, "alg": "ES256", "kid": KID}), _seg(payload))
    with pytest.raises(UnsupportedSealedVersion):
        _unseal_with(_broker_with_key(key, a=b"A"), text)


@pytest.mark.parametrize("provider", ["aliyun", "aws", "vault"])
def test_vault_provider_other_than_kbs_refused(
    key: ec.EllipticCurvePrivateKey, provider: str
) -> None:
    text = seal(VaultPayload(name="xxx", provider=provider), key, KID)
    with pytest.raises(UnsupportedProvider):
        _unseal_with(_broker_with_key(key), text)


def test_provider_is_case_insensitive(key: ec.EllipticCurvePrivateKey) -> None:
    text = seal(VaultPayload(name="kbs:///default/key/a", provider="KBS"), key, KID)
    assert _unseal_with(_broker_with_key(key, a=b"A"), text).reveal() == b"A"


@pytest.mark.parametrize("name", ["xxx", "kbs:///only/two", "kbs:///a/../b", "http://h/a/b/c"])
def test_vault_name_not_a_resource_uri_refused(key: ec.EllipticCurvePrivateKey, name: str) -> None:
    with pytest.raises(SealedPayloadError):
        _unseal_with(_broker_with_key(key), seal(VaultPayload(name=name), key, KID))


def test_signed_payload_of_unknown_type_refused(key: ec.EllipticCurvePrivateKey) -> None:
    text = _resign(key, _seg({"b64": True, "alg": "ES256", "kid": KID}), _seg({"version": "0.1.0"}))
    with pytest.raises(SealedPayloadError):
        _unseal_with(_broker_with_key(key), text)


def test_fetch_errors_propagate(key: ec.EllipticCurvePrivateKey) -> None:
    text = seal(VaultPayload(name="kbs:///default/key/a"), key, KID)
    public = json.dumps(public_jwk(key.public_key(), KID)).encode()

    def failing(uri: ResourceUri) -> bytes:
        if str(uri) == KID:
            return public
        raise UpstreamError("broker down")

    with pytest.raises(UpstreamError):
        unseal(text, fetch=failing, kids=BrokerKidResolver(failing))


def test_no_resolver_is_a_config_error(key: ec.EllipticCurvePrivateKey) -> None:
    text = seal(VaultPayload(name="kbs:///default/key/a"), key, KID)
    with pytest.raises(ConfigError):
        unseal(text, fetch=FakeBroker({}), kids=None)


# --- kid resolution ----------------------------------------------------------------------


def test_broker_kid_unknown(key: ec.EllipticCurvePrivateKey) -> None:
    broker = FakeBroker({})
    with pytest.raises(UnknownKid):
        _unseal_with(broker, seal(VaultPayload(name="kbs:///default/key/a"), key, KID))


@pytest.mark.parametrize("kid", ["kbs:///a/b", "kbs:///a/../b/c", "not-a-uri", "kbs+x:///a/b/c"])
def test_broker_kid_not_a_resource_uri(key: ec.EllipticCurvePrivateKey, kid: str) -> None:
    with pytest.raises(SealedKidError) as e:
        BrokerKidResolver(FakeBroker({})).public_key(kid)
    assert type(e.value) is SealedKidError


def test_broker_kid_holding_a_bad_jwk(key: ec.EllipticCurvePrivateKey) -> None:
    broker = FakeBroker({KID: b'{"kty":"RSA"}'})
    with pytest.raises(InvalidSigningKey):
        BrokerKidResolver(broker).public_key(KID)


@pytest.fixture
def key_dir(tmp_path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    d = tmp_path / "keys"
    d.mkdir()
    (d / "signer").write_text(json.dumps(public_jwk(key.public_key(), "signer")))
    (tmp_path / "outside").write_text(json.dumps(public_jwk(key.public_key(), "x")))
    return d


def test_directory_kid_resolves(key_dir: Path, key: ec.EllipticCurvePrivateKey) -> None:
    text = seal(VaultPayload(name="kbs:///default/key/a"), key, "signer")
    broker = FakeBroker({"kbs:///default/key/a": b"A"})
    assert unseal(text, fetch=broker, kids=DirectoryKidResolver(key_dir)).reveal() == b"A"


def test_directory_follows_links_that_stay_inside(
    key_dir: Path, key: ec.EllipticCurvePrivateKey
) -> None:
    # The kubelet's projected-volume layout: name -> ..data/name, ..data -> ..2024_…
    stamp = key_dir / "..2024_01_01_00_00_00.1"
    stamp.mkdir()
    (stamp / "projected").write_text(json.dumps(public_jwk(key.public_key(), "p")))
    os.symlink(stamp.name, key_dir / "..data")
    os.symlink("..data/projected", key_dir / "projected")
    resolved = DirectoryKidResolver(key_dir).public_key("projected")
    assert resolved.public_numbers() == key.public_key().public_numbers()


@pytest.mark.parametrize(
    "kid",
    ["../outside", "..", ".", "/etc/passwd", "sub/signer", "a\\b", "./signer"],
)
def test_directory_kid_traversal_refused(key_dir: Path, kid: str) -> None:
    with pytest.raises(KidTraversal):
        DirectoryKidResolver(key_dir).public_key(kid)


def test_directory_link_escaping_refused(key_dir: Path) -> None:
    os.symlink("../outside", key_dir / "escape")
    with pytest.raises(KidTraversal):
        DirectoryKidResolver(key_dir).public_key("escape")


def test_directory_absolute_link_escaping_refused(key_dir: Path) -> None:
    os.symlink(key_dir.parent / "outside", key_dir / "abs")
    with pytest.raises(KidTraversal):
        DirectoryKidResolver(key_dir).public_key("abs")


@pytest.mark.parametrize("kid", ["missing", "..data"])
def test_directory_unknown_kid(key_dir: Path, kid: str) -> None:
    with pytest.raises(UnknownKid):
        DirectoryKidResolver(key_dir).public_key(kid)


def test_directory_kid_naming_a_directory(key_dir: Path) -> None:
    (key_dir / "sub").mkdir()
    with pytest.raises(UnknownKid):
        DirectoryKidResolver(key_dir).public_key("sub")


def test_directory_link_loop(key_dir: Path) -> None:
    os.symlink("loop", key_dir / "loop")
    with pytest.raises(UnknownKid):
        DirectoryKidResolver(key_dir).public_key("loop")


@pytest.mark.parametrize("kid", ["", "x" * 256, "a\0b"])
def test_directory_kid_malformed(key_dir: Path, kid: str) -> None:
    with pytest.raises(SealedKidError) as e:
        DirectoryKidResolver(key_dir).public_key(kid)
    assert type(e.value) is SealedKidError


def test_missing_directory_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        DirectoryKidResolver(tmp_path / "nope").public_key("k")


def test_routing_resolver(key_dir: Path, key: ec.EllipticCurvePrivateKey) -> None:
    broker = _broker_with_key(key)
    both = RoutingKidResolver(
        broker=BrokerKidResolver(broker), directory=DirectoryKidResolver(key_dir)
    )
    for kid in (KID, "signer"):
        assert both.public_key(kid).public_numbers() == key.public_key().public_numbers()
    assert broker.asked == [KID]
    resolvers: list[Callable[[], RoutingKidResolver]] = [
        lambda: RoutingKidResolver(directory=DirectoryKidResolver(key_dir)),
        lambda: RoutingKidResolver(broker=BrokerKidResolver(broker)),
    ]
    with pytest.raises(UnknownKid):
        resolvers[0]().public_key(KID)
    with pytest.raises(UnknownKid):
        resolvers[1]().public_key("signer")
    # A plugin URI goes to the broker side, which refuses what it cannot fetch.
    with pytest.raises(SealedKidError):
        both.public_key("kbs+plugin:///a/b/c")
