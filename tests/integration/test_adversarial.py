"""The adversarial suite: named attacks against a real broker on loopback.

Each test is one attack. It fails if the attack succeeds: a secret or a token reaches the
attacker, a forged credential is accepted, or the broker answers with a 500. Its docstring
names the attack and the defence that stops it. docs/adversarial.md maps every attack to its
test (some attacks are covered by tests/integration/test_kbs_refusals.py or test_tenants.py
and are only listed there).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import json
import os
import re
import socket
import stat
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from custodes._internal.b64 import b64std_encode, b64url_decode, b64url_encode
from custodes._internal.clock import FrozenClock
from custodes._internal.jws import sign_compact
from custodes._internal.kbs_http import KbsRequestError
from custodes.admin_client import AdminClient, admin_token, load_admin_key, operator_audience
from custodes.errors import JweError
from custodes.guest.attester.sample import SampleAttester
from custodes.guest.kbs_client import KbsClient
from custodes.initdata.format import InitData
from custodes.kbs.app import create_app
from custodes.kbs.broker import build_broker
from custodes.kbs.config import AttestationConfig, KbsConfig, OperatorConfig, ServerConfig
from custodes.kbs.keys import EAR_KEY_FILE, write_public_pem
from custodes.kbs.server import serve_in_thread
from custodes.protocol.binding import HashAlgorithm, runtime_data_digest
from custodes.protocol.resource import ResourcePath
from custodes.protocol.tee_key import TeeKeyPair
from custodes.types.json import JsonObject
from live_broker import SAMPLE_REFERENCE_VALUES, AdminHeaders, LiveBroker

PREFIX = "https://github.com/confidential-containers/kbs/errors/"
SECRET = ResourcePath("default", "key", "s")
SECRET_VALUE = b"the workload's secret"
_P256_PRIME = 2**256 - 2**224 + 2**192 + 2**96 - 1
# A resource policy that refuses every guest, on a claim (so that the admin's explanation
# names the failed condition): no real trust vector has hardware = 77.
DENY_POLICY = """package policy
default allow := false
allow if {
    input.submods.cpu0["ear.status"] == "affirming"
    input.submods.cpu0["ear.trustworthiness-vector"]["hardware"] == 77
}
"""


# --- helpers ------------------------------------------------------------------------------


def refused(response: httpx.Response, status: int, variant: str) -> str:
    """Assert a clean refusal (status, ``ErrorInformation``, no traceback); its detail."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"type", "detail"}, body
    assert body["type"] == PREFIX + variant, body
    assert "Traceback" not in body["detail"]
    return str(body["detail"])


def auth(http: httpx.Client, base: str, tee: str = "sample", extra: Any = "") -> str:
    """``/auth`` on ``base``; the client keeps the session cookie. Returns the nonce."""
    r = http.post(
        f"{base}/kbs/v0/auth", json={"version": "0.4.0", "tee": tee, "extra-params": extra}
    )
    assert r.status_code == 200, r.text
    return str(r.json()["nonce"])


def sample_attestation(
    nonce: str,
    jwk: JsonObject,
    *,
    alg: HashAlgorithm = HashAlgorithm.SHA384,
    report_data: bytes | None = None,
) -> JsonObject:
    """An ``/attest`` body with sample evidence bound to ``nonce`` and ``jwk`` (unless
    ``report_data`` overrides what the evidence carries)."""
    digest = runtime_data_digest(nonce, jwk, "", alg)
    return {
        "runtime-data": {"nonce": nonce, "tee-pubkey": jwk},
        "tee-evidence": {
            "primary_evidence": {
                "svn": "1",
                "report_data": b64std_encode(digest if report_data is None else report_data),
            },
            "additional_evidence": "",
        },
    }


def session_cookie(sid: str) -> dict[str, str]:
    return {"Cookie": f"kbs-session-id={sid}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def jws_parts(token: str) -> tuple[JsonObject, JsonObject, str]:
    header_b64, payload_b64, signature = token.split(".")
    return json.loads(b64url_decode(header_b64)), json.loads(b64url_decode(payload_b64)), signature


def encode_unsigned(header: JsonObject, payload: JsonObject) -> str:
    """``<header>.<payload>`` as a JWS signing input (compact JSON)."""
    return (
        b64url_encode(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url_encode(json.dumps(payload, separators=(",", ":")).encode())
    )


def guest_token(url: str) -> tuple[str, TeeKeyPair]:
    """A genuine EAR token of a sample guest, and the guest's TEE key."""
    with KbsClient(url, SampleAttester()) as guest:
        return guest.attest().value, guest.key


def raw_request(url: str, target: bytes) -> int:
    """Send ``GET <target> HTTP/1.1`` over a plain socket (bytes a client library refuses to
    send: NUL, raw non-ASCII) and return the status code, or 0 if the server just closed."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    match = re.match(rb"HTTP/1\.[01] (\d{3})", reply)
    return int(match.group(1)) if match else 0


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


@pytest.fixture
def admin_headers(broker: LiveBroker) -> Mapping[str, str]:
    return broker.admin_headers()  # a fresh single-use token for each request


@pytest.fixture
def stored(broker: LiveBroker) -> LiveBroker:
    """The broker with SECRET stored."""
    with broker.admin() as admin:
        admin.put_resource(SECRET, SECRET_VALUE)
    return broker


@contextlib.contextmanager
def another_broker(data_dir: Path, *, allow_sample: bool) -> Iterator[str]:
    """One more broker (its own data directory, so its own EAR and admin keys)."""
    config = KbsConfig(
        server=ServerConfig(listen="127.0.0.1:0", data_dir=data_dir),
        attestation=AttestationConfig(unsafe_allow_sample_tee=allow_sample),
    ).validate()
    b = build_broker(config, clock=FrozenClock(time.time()))
    try:
        with serve_in_thread(create_app(b), config) as url:
            yield url
    finally:
        b.close()


# --- tenants (as tests/integration/test_tenants.py sets them up) -------------------------


def _pem(key: ed25519.Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@dataclass
class Tenants:
    url: str
    keys: dict[str, ed25519.Ed25519PrivateKey]  # operator, bank-admin, bank-auditor

    def base(self, tenant: str) -> str:
        return f"{self.url}/tenants/{tenant}"

    def bearer(self, who: str, *, subject: str | None = None) -> AdminHeaders:
        """Fresh single-use tokens of ``who`` for the bank tenant (the operator: for the
        operator API)."""
        audience = operator_audience(self.url) if who == "operator" else self.base("bank")
        return AdminHeaders(self.keys[who], audience, subject=subject or who)


@pytest.fixture
def tenants(tmp_path: Path) -> Iterator[Tenants]:
    keys = {
        n: ed25519.Ed25519PrivateKey.generate() for n in ("operator", "bank-admin", "bank-auditor")
    }
    write_public_pem(tmp_path / "operator.pub.pem", keys["operator"].public_key())
    config = KbsConfig(
        server=ServerConfig(listen="127.0.0.1:0", data_dir=tmp_path / "data"),
        attestation=AttestationConfig(unsafe_allow_sample_tee=True),
        operator=OperatorConfig(public_keys=(tmp_path / "operator.pub.pem",)),
    ).validate()
    b = build_broker(config, clock=FrozenClock(time.time()))
    with serve_in_thread(create_app(b), config) as url:
        world = Tenants(url, keys)
        body = {
            "id": "bank",
            "identities": [
                {"subject": s, "role": r, "public_key": _pem(keys[s])}
                for s, r in (("bank-admin", "admin"), ("bank-auditor", "auditor"))
            ],
        }
        r = httpx.post(f"{url}/operator/v0/tenants", json=body, headers=world.bearer("operator"))
        assert r.status_code == 200, r.text
        with AdminClient(world.base("bank"), keys["bank-admin"], subject="bank-admin") as admin:
            admin.register_reference_values(SAMPLE_REFERENCE_VALUES)
            admin.put_resource(SECRET, b"bank secret")
        yield world
    b.close()


# --- the handshake: replay, binding, keys -------------------------------------------------


def test_challenge_double_spend_race(broker: LiveBroker, http: httpx.Client) -> None:
    """Attack: replay one challenge by racing eight identical /attest calls on one session.
    Defence: the challenge is claimed by an atomic compare-and-swap before verification, so
    exactly one call gets a token. (A second, sequential /attest is test_kbs_refusals'
    test_reused_session.)"""
    nonce = auth(http, broker.url)
    sid = http.cookies["kbs-session-id"]
    body = sample_attestation(nonce, TeeKeyPair.generate().public_jwk())

    def attest(_: int) -> httpx.Response:
        return httpx.post(
            f"{broker.url}/kbs/v0/attest", json=body, headers=session_cookie(sid), timeout=30
        )

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(attest, range(8)))
    assert [r.status_code for r in responses].count(200) == 1
    for r in responses:
        if r.status_code != 200:
            assert "already used" in refused(r, 401, "AttestationError")


def test_evidence_replayed_under_a_new_session(broker: LiveBroker) -> None:
    """Attack: record a guest's whole /attest body and replay it in a fresh session, as is
    and with the new session's nonce pasted in. Defence: the nonce must be this session's
    challenge, and the evidence binds the nonce it was made for."""
    key = TeeKeyPair.generate()
    with httpx.Client(timeout=30) as victim:
        recorded = sample_attestation(auth(victim, broker.url), key.public_jwk())
        assert victim.post(f"{broker.url}/kbs/v0/attest", json=recorded).status_code == 200
    with httpx.Client(timeout=30) as attacker:
        auth(attacker, broker.url)
        r = attacker.post(f"{broker.url}/kbs/v0/attest", json=recorded)
        assert "nonce" in refused(r, 401, "AttestationError")
    with httpx.Client(timeout=30) as attacker:
        fresh = auth(attacker, broker.url)
        pasted = json.loads(json.dumps(recorded))
        pasted["runtime-data"]["nonce"] = fresh
        refused(attacker.post(f"{broker.url}/kbs/v0/attest", json=pasted), 401, "AttestationError")


def test_tee_pubkey_swapped_in_transit(broker: LiveBroker, http: httpx.Client) -> None:
    """Attack: a man in the middle replaces the guest's tee-pubkey with its own key, so that
    resources would be encrypted to the attacker. Defence: the evidence's report data binds
    the guest's key (JCS + SHA-384 of nonce and key); with another key it does not match."""
    nonce = auth(http, broker.url)
    body = sample_attestation(nonce, TeeKeyPair.generate().public_jwk())
    body["runtime-data"]["tee-pubkey"] = TeeKeyPair.generate().public_jwk()
    r = http.post(f"{broker.url}/kbs/v0/attest", json=body)
    assert "report_data" in refused(r, 401, "AttestationError")


def test_report_data_padded_or_truncated(broker: LiveBroker, http: httpx.Client) -> None:
    """Attack: evidence whose report data is the binding digest zero-padded to 64 bytes, or
    cut to 32 (upstream pads *or truncates* to fit the field). Defence: exact-length
    comparison; a digest that does not fit is refused, never adjusted."""
    key = TeeKeyPair.generate()
    for padded in (True, False):
        nonce = auth(http, broker.url)
        digest = runtime_data_digest(nonce, key.public_jwk(), "", HashAlgorithm.SHA384)
        report_data = digest + bytes(16) if padded else digest[:32]
        body = sample_attestation(nonce, key.public_jwk(), report_data=report_data)
        refused(http.post(f"{broker.url}/kbs/v0/attest", json=body), 401, "AttestationError")


def test_binding_hash_downgrade(broker: LiveBroker, http: httpx.Client) -> None:
    """Attack: bind the evidence with a weaker hash than the session's (SHA-256 instead of
    SHA-384), or offer only unknown/weak algorithms to make the broker pick one. Defence:
    the digest is recomputed with the session's algorithm; unknown names are ignored and the
    default SHA-384 kept."""
    key = TeeKeyPair.generate()
    nonce = auth(http, broker.url)
    body = sample_attestation(nonce, key.public_jwk(), alg=HashAlgorithm.SHA256)
    refused(http.post(f"{broker.url}/kbs/v0/attest", json=body), 401, "AttestationError")
    r = http.post(
        f"{broker.url}/kbs/v0/auth",
        json={
            "version": "0.4.0",
            "tee": "sample",
            "extra-params": {"supported-hash-algorithms": ["md5", "sha1", "sm3"]},
        },
    )
    assert r.status_code == 200 and r.json()["extra-params"] == ""  # SHA-384, the default


def _ec_jwk(x: bytes, y: bytes, **extra: object) -> JsonObject:
    return {
        "kty": "EC",
        "crv": "P-256",
        "alg": "ECDH-ES+A256KW",
        "x": b64url_encode(x),
        "y": b64url_encode(y),
        **extra,
    }


def _malformed_keys() -> dict[str, JsonObject]:
    numbers = ec.derive_private_key(0x5EED, ec.SECP256R1()).public_key().public_numbers()
    x, y = numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big")
    off_curve_y = ((numbers.y + 1) % _P256_PRIME).to_bytes(32, "big")
    p384 = ec.derive_private_key(0x5EED, ec.SECP384R1()).public_key().public_numbers()
    small_rsa = rsa.generate_private_key(65537, 1024).public_key().public_numbers()  # noqa: S505
    good_rsa = rsa.generate_private_key(65537, 2048).public_key().public_numbers()

    def uint(n: int) -> str:
        return b64url_encode(n.to_bytes((n.bit_length() + 7) // 8, "big"))

    return {
        "point-not-on-curve": _ec_jwk(x, off_curve_y),
        "point-at-infinity-zeros": _ec_jwk(bytes(32), bytes(32)),
        "point-at-infinity-short": _ec_jwk(b"\x00", b"\x00"),
        "x-equals-p": _ec_jwk(_P256_PRIME.to_bytes(32, "big"), y),
        "x-above-p": _ec_jwk(b"\xff" * 32, y),
        "x-31-bytes": _ec_jwk(x[1:], y),
        "x-33-bytes": _ec_jwk(b"\x00" + x, y),
        "x-padded-base64": {**_ec_jwk(x, y), "x": b64url_encode(x) + "="},
        "private-d-member": _ec_jwk(x, y, d=b64url_encode(b"\x01" * 32)),
        "ecdh-es-without-key-wrap": _ec_jwk(x, y, alg="ECDH-ES"),
        "p384-curve": {
            "kty": "EC",
            "crv": "P-384",
            "alg": "ECDH-ES+A256KW",
            "x": b64url_encode(p384.x.to_bytes(48, "big")),
            "y": b64url_encode(p384.y.to_bytes(48, "big")),
        },
        "symmetric-oct-key": {"kty": "oct", "alg": "A256KW", "k": b64url_encode(bytes(32))},
        "rsa-1024": {"kty": "RSA", "alg": "RSA-OAEP-256", "n": uint(small_rsa.n), "e": "AQAB"},
        "rsa-exponent-1": {"kty": "RSA", "alg": "RSA-OAEP-256", "n": uint(good_rsa.n), "e": "AQ"},
    }


MALFORMED_KEYS = _malformed_keys()


@pytest.mark.parametrize("name", sorted(MALFORMED_KEYS))
def test_malformed_tee_pubkey(broker: LiveBroker, http: httpx.Client, name: str) -> None:
    """Attack: a tee-pubkey that is not a sound public key (invalid-curve points, the point
    at infinity, coordinates at or over the field prime or of the wrong length, private or
    symmetric key material, weak RSA), with evidence correctly bound to it. Defence: the JWK
    is validated (exact lengths, on-curve check, allowed algorithms) before any use."""
    nonce = auth(http, broker.url)
    body = sample_attestation(nonce, MALFORMED_KEYS[name])
    refused(http.post(f"{broker.url}/kbs/v0/attest", json=body), 400, "AttestationError")


def test_rsa1_5_downgrade(broker: LiveBroker, http: httpx.Client) -> None:
    """Attack: the guest's key asks for RSA1_5 (PKCS #1 v1.5, padding-oracle prone) so that
    released resources are wrapped with it. Defence: RSA1_5 is refused unless the broker
    sets attestation.unsafe_allow_rsa1_5."""
    jwk = {**TeeKeyPair.generate("rsa").public_jwk(), "alg": "RSA1_5"}
    nonce = auth(http, broker.url)
    r = http.post(f"{broker.url}/kbs/v0/attest", json=sample_attestation(nonce, jwk))
    assert "RSA1_5" in refused(r, 400, "AttestationError")


@pytest.mark.parametrize(
    ("tee", "evidence_file"),
    [
        ("tpm", None),  # sample evidence in a tpm session
        ("snp", "trustee/deps/verifier/test_data/tpm_evidence.json"),
        ("sample", "trustee/deps/verifier/test_data/tpm_evidence.json"),
        ("az-snp-vtpm", "trustee/attestation-service/tests/e2e/evidence.json"),
        ("tpm", "trustee/deps/verifier/test_data/az-snp-vtpm/evidence-v2.json"),
    ],
)
def test_evidence_of_one_tee_sent_as_another(
    broker: LiveBroker, http: httpx.Client, vectors: Path, tee: str, evidence_file: str | None
) -> None:
    """Attack: open a session for one TEE and send another TEE's evidence (the sample TEE's
    unsigned evidence where a TPM quote is expected; real TPM, SNP and Azure vectors in the
    wrong session). Defence: the verifier is chosen by the session's TEE, never by the body,
    and parses the evidence strictly."""
    nonce = auth(http, broker.url, tee=tee)
    body = sample_attestation(nonce, TeeKeyPair.generate().public_jwk())
    if evidence_file is not None:
        body["tee-evidence"]["primary_evidence"] = json.loads((vectors / evidence_file).read_text())
    refused(http.post(f"{broker.url}/kbs/v0/attest", json=body), 401, "AttestationError")


def test_sample_tee_refused_on_a_production_broker(tmp_path: Path, http: httpx.Client) -> None:
    """Attack: claim to be the sample TEE (whose evidence is unsigned) on a broker that was
    not started with --unsafe-allow-sample-tee. Defence: /auth refuses the TEE."""
    with another_broker(tmp_path / "prod", allow_sample=False) as url:
        r = http.post(
            f"{url}/kbs/v0/auth", json={"version": "0.4.0", "tee": "sample", "extra-params": ""}
        )
        assert "refused" in refused(r, 400, "AttestationError")


# --- sessions and cookies ----------------------------------------------------------------


def test_session_fixation(broker: LiveBroker) -> None:
    """Attack: plant a chosen kbs-session-id on the victim before /auth, to ride the session
    it attests. Defence: /auth ignores a presented id and issues a fresh random one; the
    planted id stays unknown."""
    planted = "a" * 32
    r = httpx.post(
        f"{broker.url}/kbs/v0/auth",
        json={"version": "0.4.0", "tee": "sample", "extra-params": ""},
        headers=session_cookie(planted),
    )
    assert r.status_code == 200
    issued = r.cookies["kbs-session-id"]
    assert issued != planted and len(issued) == 32
    body = sample_attestation(r.json()["nonce"], TeeKeyPair.generate().public_jwk())
    r = httpx.post(f"{broker.url}/kbs/v0/attest", json=body, headers=session_cookie(planted))
    assert "unknown" in refused(r, 401, "AttestationError")


def test_cookie_of_another_session_at_attest(broker: LiveBroker) -> None:
    """Attack: an attacker with its own challenge presents the victim's (not yet attested)
    session cookie, to get the victim's session attested with the attacker's evidence and
    key. Defence: the nonce in the body must be the challenge of the session in the cookie."""
    with httpx.Client(timeout=30) as victim, httpx.Client(timeout=30) as attacker:
        auth(victim, broker.url)
        victim_sid = victim.cookies["kbs-session-id"]
        own_nonce = auth(attacker, broker.url)
        body = sample_attestation(own_nonce, TeeKeyPair.generate().public_jwk())
        r = httpx.post(f"{broker.url}/kbs/v0/attest", json=body, headers=session_cookie(victim_sid))
        assert "nonce" in refused(r, 401, "AttestationError")


def test_stolen_cookie_or_token_yields_only_ciphertext(stored: LiveBroker) -> None:
    """Attack: steal an attested guest's session cookie, or its EAR token, and fetch the
    secret. Defence: the resource is encrypted to the tee-pubkey inside the token; without
    the TEE's private key the thief holds only a JWE it cannot open."""
    victim_key = TeeKeyPair.generate()
    thief_key = TeeKeyPair.generate()
    with httpx.Client(timeout=30) as victim:
        nonce = auth(victim, stored.url)
        r = victim.post(
            f"{stored.url}/kbs/v0/attest", json=sample_attestation(nonce, victim_key.public_jwk())
        )
        token = r.json()["token"]
        sid = victim.cookies["kbs-session-id"]
    url = f"{stored.url}/kbs/v0/resource/{SECRET}"
    for headers in (session_cookie(sid), bearer(token)):
        r = httpx.get(url, headers=headers)
        assert r.status_code == 200
        with pytest.raises(JweError):
            thief_key.decrypt(r.json())
        assert victim_key.decrypt(r.json()) == SECRET_VALUE  # the intended TEE only


def test_session_flood_then_handshake(broker: LiveBroker) -> None:
    """Attack: open 1,000 sessions (/auth) to exhaust the broker. Defence: sessions are small
    store rows with a fixed expiry; every call is answered and a real guest still attests."""
    statuses: list[int] = []
    with httpx.Client(timeout=30) as flood:
        for _ in range(1000):
            r = flood.post(
                f"{broker.url}/kbs/v0/auth",
                json={"version": "0.4.0", "tee": "sample", "extra-params": ""},
            )
            statuses.append(r.status_code)
            flood.cookies.clear()
    assert set(statuses) == {200}
    with KbsClient(broker.url, SampleAttester()) as guest:
        assert guest.attest().claims()["submods"]["cpu0"]["ear.status"] == "affirming"


# --- tokens ---------------------------------------------------------------------------------


def _ear_key(broker: LiveBroker) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key((broker.data_dir / EAR_KEY_FILE).read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def test_future_dated_token(stored: LiveBroker) -> None:
    """Attack: a token whose iat lies in the future (e.g. minted ahead with a stolen key or
    a skewed clock, to outlive its rotation). Crafted with the broker's own EAR key, read
    from its data directory, so only the time check stands in the way. Defence: iat later
    than now + leeway is refused."""
    token, _ = guest_token(stored.url)
    header, claims, _ = jws_parts(token)
    key = _ear_key(stored)
    url = f"{stored.url}/kbs/v0/resource/{SECRET}"
    # Control: the same re-signing with honest times is accepted.
    assert httpx.get(url, headers=bearer(sign_compact(header, claims, key))).status_code == 200
    now = int(stored.clock.now())
    future = {**claims, "iat": now + 3600, "exp": now + 3900}
    r = httpx.get(url, headers=bearer(sign_compact(header, future, key)))
    assert "future" in refused(r, 401, "TokenVerifierError")


def test_modified_claims_with_the_original_signature(stored: LiveBroker) -> None:
    """Attack: edit a genuine token's claims (swap the tee-pubkey for the attacker's key,
    extend exp) and keep its signature. Defence: the ES256 signature covers the payload."""
    token, _ = guest_token(stored.url)
    header, claims, signature = jws_parts(token)
    cpu0 = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    cpu0["runtime_data_claims"]["tee-pubkey"] = TeeKeyPair.generate().public_jwk()
    claims["exp"] += 86400
    forged = encode_unsigned(header, claims) + "." + signature
    r = httpx.get(f"{stored.url}/kbs/v0/resource/{SECRET}", headers=bearer(forged))
    refused(r, 401, "TokenVerifierError")


@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
def test_alg_none_on_ear_and_admin_tokens(stored: LiveBroker, alg: str) -> None:
    """Attack: rewrite the header to alg "none" (in any spelling), with the signature dropped
    or kept, on an EAR token and on an admin JWT. Defence: the algorithm comes from the
    trusted key (ES256 / EdDSA), never from the header. (The plain lower-case case is also
    in test_kbs_refusals.)"""
    token, _ = guest_token(stored.url)
    _, claims, signature = jws_parts(token)
    now = int(time.time())
    admin_claims = {"sub": "admin", "iat": now, "exp": now + 60}
    for sig in ("", signature):
        ear = encode_unsigned({"alg": alg, "typ": "JWT"}, claims) + "." + sig
        r = httpx.get(f"{stored.url}/kbs/v0/resource/{SECRET}", headers=bearer(ear))
        refused(r, 401, "TokenVerifierError")
        admin = encode_unsigned({"alg": alg, "typ": "JWT"}, admin_claims) + "." + sig
        r = httpx.get(f"{stored.url}/kbs/v0/resource", headers=bearer(admin))
        refused(r, 401, "AdminAuthAccess")


def test_hs256_with_the_public_key_as_hmac_secret(stored: LiveBroker) -> None:
    """Attack: key confusion: sign an admin JWT (and an EAR token) with HS256, using the
    broker's *public* key (PEM text, or raw bytes) as the HMAC secret. Defence: only the
    algorithm of a configured asymmetric key is accepted; HS256 never is."""
    now = int(time.time())
    admin_claims = {"sub": "admin", "iat": now, "exp": now + 60}
    token, _ = guest_token(stored.url)
    _, ear_claims, _ = jws_parts(token)
    admin_pem = (stored.data_dir / "admin-key.pub.pem").read_bytes()
    ear_public = _ear_key(stored).public_key()
    ear_pem = ear_public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ear_raw = ear_public.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )

    def hs256(claims: JsonObject, secret: bytes) -> str:
        signing_input = encode_unsigned({"alg": "HS256", "typ": "JWT"}, claims)
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return signing_input + "." + b64url_encode(mac)

    admin_raw = (
        load_admin_key(stored.data_dir / "admin-key.pem")
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    for secret in (admin_pem, admin_raw):
        r = httpx.get(f"{stored.url}/kbs/v0/resource", headers=bearer(hs256(admin_claims, secret)))
        refused(r, 401, "AdminAuthAccess")
    for secret in (ear_pem, ear_raw):
        r = httpx.get(
            f"{stored.url}/kbs/v0/resource/{SECRET}", headers=bearer(hs256(ear_claims, secret))
        )
        refused(r, 401, "TokenVerifierError")


def test_admin_jwt_signed_by_the_ear_key(broker: LiveBroker) -> None:
    """Attack: use the broker's EAR token key (a key the broker trusts, for another purpose)
    to sign an admin JWT. Defence: admin JWTs verify only with the admin keys."""
    now = int(time.time())
    forged = sign_compact(
        {"alg": "ES256", "typ": "JWT"},
        {"sub": "admin", "iat": now, "exp": now + 60},
        _ear_key(broker),
    )
    refused(
        httpx.get(f"{broker.url}/kbs/v0/resource", headers=bearer(forged)), 401, "AdminAuthAccess"
    )


def test_guest_credentials_on_the_admin_api(stored: LiveBroker) -> None:
    """Attack: a guest uses its EAR token, or its attested session cookie, to write a
    resource or a policy. Defence: admin endpoints accept only admin JWTs."""
    with httpx.Client(timeout=30) as guest:
        nonce = auth(guest, stored.url)
        r = guest.post(
            f"{stored.url}/kbs/v0/attest",
            json=sample_attestation(nonce, TeeKeyPair.generate().public_jwk()),
        )
        token = r.json()["token"]
        sid = guest.cookies["kbs-session-id"]
    allow_all = b64url_encode(b"package policy\ndefault allow := true\n")
    for headers in (bearer(token), session_cookie(sid)):
        r = httpx.post(f"{stored.url}/kbs/v0/resource/{SECRET}", content=b"x", headers=headers)
        refused(r, 401, "AdminAuthAccess")
        r = httpx.post(
            f"{stored.url}/kbs/v0/resource-policy", json={"policy": allow_all}, headers=headers
        )
        refused(r, 401, "AdminAuthAccess")


def test_ear_token_with_an_embedded_attacker_jwk(stored: LiveBroker) -> None:
    """Attack: sign a token with the attacker's own P-256 key and put that key in the header
    jwk, hoping the verifier trusts the key the token carries. Defence: the header jwk is
    only a hint; the signature must verify with a configured trusted key."""
    token, _ = guest_token(stored.url)
    header, claims, _ = jws_parts(token)
    attacker = ec.generate_private_key(ec.SECP256R1())
    numbers = attacker.public_key().public_numbers()
    header["jwk"] = {
        "kty": "EC",
        "crv": "P-256",
        "alg": "ES256",
        "x": b64url_encode(numbers.x.to_bytes(32, "big")),
        "y": b64url_encode(numbers.y.to_bytes(32, "big")),
    }
    forged = sign_compact(header, claims, attacker)
    r = httpx.get(f"{stored.url}/kbs/v0/resource/{SECRET}", headers=bearer(forged))
    refused(r, 401, "TokenVerifierError")


def test_token_from_another_broker(stored: LiveBroker, tmp_path: Path) -> None:
    """Attack: attest at a broker the attacker controls (or a lax one) and present that
    token here. Defence: only this broker's EAR key and token.trusted_keys are trusted."""
    with another_broker(tmp_path / "elsewhere", allow_sample=True) as other:
        token, _ = guest_token(other)
    r = httpx.get(f"{stored.url}/kbs/v0/resource/{SECRET}", headers=bearer(token))
    refused(r, 401, "TokenVerifierError")


def test_huge_authorization_header(stored: LiveBroker) -> None:
    """Attack: a 10 MB Authorization header on the resource and admin endpoints. Defence:
    tokens over 64 KiB are refused before any decoding; the broker answers cleanly and stays
    healthy."""
    huge = "Bearer " + "A" * (10 * 1024 * 1024)
    r = httpx.get(
        f"{stored.url}/kbs/v0/resource/{SECRET}", headers={"Authorization": huge}, timeout=60
    )
    assert "longer than" in refused(r, 401, "TokenVerifierError")
    r = httpx.get(f"{stored.url}/kbs/v0/resource", headers={"Authorization": huge}, timeout=60)
    refused(r, 401, "AdminAuthAccess")
    assert httpx.get(f"{stored.url}/healthz").json() == {"status": "ok"}


# --- bodies ---------------------------------------------------------------------------------


def test_oversized_evidence(broker: LiveBroker, http: httpx.Client) -> None:
    """Attack: an /attest body over limits.max_evidence_bytes (1 MiB), declared or streamed
    without a Content-Length. Defence: the body is refused while it is read, with 413.
    (Oversized /auth and resource bodies are test_kbs_refusals' test_body_over_the_limit.)"""
    limit = broker.broker.config.limits.max_evidence_bytes
    nonce = auth(http, broker.url)
    body = sample_attestation(nonce, TeeKeyPair.generate().public_jwk())
    body["tee-evidence"]["additional_evidence"] = "A" * (limit + 1)
    refused(http.post(f"{broker.url}/kbs/v0/attest", json=body), 413, "PayloadTooLarge")
    raw = json.dumps(body).encode()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(raw), 65536):
            yield raw[i : i + 65536]

    refused(http.post(f"{broker.url}/kbs/v0/attest", content=chunks()), 413, "PayloadTooLarge")


def test_deeply_nested_json(
    broker: LiveBroker, http: httpx.Client, admin_headers: Mapping[str, str]
) -> None:
    """Attack: JSON nested past the parser's recursion limit (100,000 levels) or past the
    broker's depth limit inside evidence, at the handshake and at an admin endpoint.
    Defence: nesting is measured without recursion before parsing; 400, never a 500."""
    nonce = auth(http, broker.url)
    body = sample_attestation(nonce, TeeKeyPair.generate().public_jwk())
    nested: Any = "x"
    for _ in range(40):
        nested = [nested]
    body["tee-evidence"]["primary_evidence"] = nested
    refused(http.post(f"{broker.url}/kbs/v0/attest", json=body), 400, "SerdeError")
    bomb = b"[" * 100_000 + b"]" * 100_000
    for path in ("attest", "reference-value", "resource-policy"):
        r = http.post(f"{broker.url}/kbs/v0/{path}", content=bomb, headers=admin_headers)
        refused(r, 400, "SerdeError")


def test_duplicate_json_keys_smuggle_a_second_value(
    broker: LiveBroker, http: httpx.Client, admin_headers: Mapping[str, str]
) -> None:
    """Attack: send a JSON member twice so that a checker and a consumer read different
    values (tee, nonce, the resource policy). Defence: duplicate keys are refused outright."""
    r = http.post(
        f"{broker.url}/kbs/v0/auth",
        content=b'{"version":"0.4.0","tee":"snp","extra-params":"","tee":"sample"}',
    )
    assert "duplicate" in refused(r, 400, "SerdeError")
    nonce = auth(http, broker.url)
    body = json.dumps(sample_attestation(nonce, TeeKeyPair.generate().public_jwk()))
    smuggled = body.replace('"nonce": ', '"nonce": "AAAA", "nonce": ', 1)
    refused(http.post(f"{broker.url}/kbs/v0/attest", content=smuggled.encode()), 400, "SerdeError")
    deny = b64url_encode(b"package policy\ndefault allow := false\n")
    allow = b64url_encode(b"package policy\ndefault allow := true\n")
    raw = f'{{"policy":"{deny}","policy":"{allow}"}}'.encode()
    r = http.post(f"{broker.url}/kbs/v0/resource-policy", content=raw, headers=admin_headers)
    refused(r, 400, "SerdeError")
    versions = http.get(
        f"{broker.url}/kbs/v0/resource-policy/resource-policy/versions", headers=admin_headers
    ).json()
    assert [v["version"] for v in versions] == [1]  # nothing was stored


# --- resource paths -----------------------------------------------------------------------

PATH_TRICKS = [
    "default/%252e%252e/s",  # double encoding of ".."
    "default/key/%252e%252e",
    "default/%252e%252e%252fkey/s",
    "default/%E2%80%A5/s",  # U+2025 TWO DOT LEADER
    "default/%E2%80%A4%E2%80%A4/s",  # U+2024 ONE DOT LEADER, twice
    "default/%EF%BC%8E%EF%BC%8E/s",  # U+FF0E FULLWIDTH FULL STOP, twice
    "default/%C0%AE%C0%AE/s",  # overlong UTF-8 "."
    "default%5c..%5ckey/s",  # encoded backslashes
    "default\\..\\key/s",  # raw backslashes
    "default/key/s%00",  # encoded NUL
    "default/key/s%00.pem",
    "default/key/s/",
    "default/key/s;x=1",
    "default/key/s%20",
    "default/key/...",
    "default/key/%2E",
]


@pytest.mark.parametrize("path", PATH_TRICKS)
def test_path_traversal_and_encoding_tricks(
    stored: LiveBroker, admin_headers: Mapping[str, str], path: str
) -> None:
    """Attack: reach or overwrite another resource with traversal and encoding tricks in the
    resource path (double encoding, Unicode dots, overlong UTF-8, backslashes, NUL). Defence:
    each raw, still-encoded segment must match the segment rule; nothing is decoded or
    normalised. (../, %2e%2e and %2f are in test_kbs_refusals' test_bad_resource_paths.)"""
    target = f"/kbs/v0/resource/{path}".encode()
    with httpx.Client(timeout=30) as http:
        r = http.request(
            "POST",
            f"{stored.url}/kbs/v0/resource/x/y/z",
            content=b"overwritten",
            headers=admin_headers,
            extensions={"target": target},
        )
        refused(r, 404, "InvalidRequestPath")
        token, _ = guest_token(stored.url)
        r = http.request(
            "GET",
            f"{stored.url}/kbs/v0/resource/x/y/z",
            headers=bearer(token),
            extensions={"target": target},
        )
        refused(r, 404, "InvalidRequestPath")
        listed = http.get(f"{stored.url}/kbs/v0/resource", headers=admin_headers).json()
    assert listed == [str(SECRET)]


@pytest.mark.parametrize(
    "target",
    [
        b"/kbs/v0/resource/default/key/s\x00",
        b"/kbs/v0/resource/default/\xe2\x80\xa5/s",
        b"/kbs/v0/resource/default/\xef\xbc\x8e\xef\xbc\x8e/s",
        b"/tenants/../kbs/v0/resource/default/key/s",
        b"/tenants/%2e%2e/kbs/v0/resource/default/key/s",
        b"/tenants/default%2f..%2f/kbs/v0/resource/default/key/s",
        b"/kbs/v0/../kbs/v0/resource/default/key/s",
    ],
)
def test_raw_bytes_and_tenant_traversal_in_the_request_target(
    stored: LiveBroker, target: bytes
) -> None:
    """Attack: bytes a client library refuses to send (NUL, raw UTF-8 dots) and traversal in
    the tenant part of the URL, sent over a raw socket. Defence: the HTTP parser or the
    broker's raw-path check refuses them; never a 2xx, never a 500."""
    status = raw_request(stored.url, target)
    assert status in (400, 404), status
    assert httpx.get(f"{stored.url}/healthz").status_code == 200


def test_injection_strings_in_resource_tags_and_reference_value_ids(
    broker: LiveBroker, http: httpx.Client, admin_headers: Mapping[str, str]
) -> None:
    """Attack: SQL-ish and JSON-injection strings as resource tags and reference-value ids.
    Defence: the segment rule and the id rule refuse them; what they admit is stored and
    read back literally (the store binds parameters, ids never build a query)."""
    for tag in ("x' OR '1'='1", 'x"}', "a;DROP TABLE kv;--", '{"a":1}', "$(id)", "*"):
        r = http.post(
            f"{broker.url}/kbs/v0/resource/default/key/{quote(tag, safe='')}",
            content=b"x",
            headers=admin_headers,
        )
        refused(r, 404, "InvalidRequestPath")
    literal = ["--", "1-OR-1", "a_-.b"]
    for tag in literal:
        r = http.post(
            f"{broker.url}/kbs/v0/resource/default/key/{tag}", content=b"v", headers=admin_headers
        )
        assert r.status_code == 200
    listed = http.get(f"{broker.url}/kbs/v0/resource", headers=admin_headers).json()
    assert listed == sorted(f"default/key/{t}" for t in literal)
    before = http.get(f"{broker.url}/kbs/v0/reference-value", headers=admin_headers).json()
    for rv_id in ("svn' OR 1=1--", 'a"}', "x/../y", "$where", "a b", ""):
        message = {
            "version": "0.1.0",
            "type": "sample",
            "payload": b64std_encode(json.dumps({rv_id: ["1"]}).encode()),
        }
        r = http.post(f"{broker.url}/kbs/v0/reference-value", json=message, headers=admin_headers)
        refused(r, 400, "RvpsError")
    assert http.get(f"{broker.url}/kbs/v0/reference-value", headers=admin_headers).json() == before
    message = {
        "version": "0.1.0",
        "type": "sample",
        "payload": b64std_encode(json.dumps({"a.b_c-d/e": ["' OR 1=1"]}).encode()),
    }
    assert (
        http.post(
            f"{broker.url}/kbs/v0/reference-value", json=message, headers=admin_headers
        ).status_code
        == 200
    )
    stored_rv = http.get(
        f"{broker.url}/kbs/v0/reference-value/a.b_c-d/e", headers=admin_headers
    ).json()
    assert stored_rv["name"] == "a.b_c-d/e" and stored_rv["value"] == ["' OR 1=1"]


# --- policies and denials -------------------------------------------------------------------


def test_concurrent_policy_updates(broker: LiveBroker) -> None:
    """Attack: 20 concurrent resource-policy uploads, to lose a version or leave the active
    text and version out of step. Defence: every upload is a new version inserted with an
    insert-if-absent; exactly one is active and the active text is that version's."""
    key = load_admin_key(broker.data_dir / "admin-key.pem")
    texts = [f"package policy\n# upload {i}\ndefault allow := false\n" for i in range(20)]

    def upload(text: str) -> int:
        r = httpx.post(
            f"{broker.url}/kbs/v0/resource-policy",
            json={"policy": b64url_encode(text.encode())},
            headers=bearer(admin_token(key, audience=broker.url)),
            timeout=60,
        )
        return r.status_code

    with ThreadPoolExecutor(20) as pool:
        assert list(pool.map(upload, texts)) == [200] * 20
    with broker.admin() as admin:
        versions = admin.policy_versions("resource", "resource-policy")
        assert [v["version"] for v in versions] == list(range(1, 22))  # the default is 1
        active = [v["version"] for v in versions if v["active"]]
        assert len(active) == 1
        stored = [admin.get_policy("resource", "resource-policy", v) for v in range(2, 22)]
        assert sorted(stored) == sorted(texts)
        current = admin.get_policy("resource", "resource-policy")
        assert current in texts
        assert current == admin.get_policy("resource", "resource-policy", active[0])


def _deny_guest(broker: LiveBroker) -> tuple[str, TeeKeyPair]:
    with broker.admin() as admin:
        admin.put_resource(SECRET, SECRET_VALUE)
        admin.set_policy("resource", DENY_POLICY)
    return guest_token(broker.url)


def test_denial_reason_stays_with_the_admin(broker: LiveBroker) -> None:
    """Attack: a refused guest reads why it was refused (which claim, which rule), to learn
    how to shape its next attempt. Defence: the guest gets a generic PolicyDeny with a
    correlation id; the reason goes to the audit log, for the tenant's admins."""
    token, _ = _deny_guest(broker)
    r = httpx.get(f"{broker.url}/kbs/v0/resource/{SECRET}", headers=bearer(token))
    detail = refused(r, 401, "PolicyDeny")
    match = re.search(r"correlation id ([0-9a-f]{32})", detail)
    assert match is not None
    # The random correlation id may itself contain "77": look for leaks in the rest.
    rest = detail.replace(match.group(1), "<id>")
    for leak in ("affirming", "ear.status", "trustworthiness", "hardware", "77", "cpu0", "rule"):
        assert leak not in rest, leak
    with broker.admin() as admin:
        why = admin.get_denial(match.group(1))
    # The admin does learn the reason: the failed condition and the claim it read.
    (failed,) = why["denial"]["failed"]
    assert "hardware" in failed["condition"] and why["denial"]["resource"] == str(SECRET)


def test_no_resource_existence_oracle(broker: LiveBroker) -> None:
    """Attack: a refused guest probes which resources exist by comparing answers. Defence:
    the policy is evaluated before the store is read; existing and missing resources get
    the same refusal (only the echoed path and the correlation id differ)."""
    token, _ = _deny_guest(broker)
    answers = []
    for path in (str(SECRET), "default/key/absent"):
        r = httpx.get(f"{broker.url}/kbs/v0/resource/{path}", headers=bearer(token))
        detail = refused(r, 401, "PolicyDeny")
        answers.append(re.sub(r"[0-9a-f]{32}", "<id>", detail.replace(path, "<path>")))
    assert answers[0] == answers[1]


def test_reference_value_registered_already_expired(
    broker: LiveBroker, http: httpx.Client, admin_headers: Mapping[str, str]
) -> None:
    """Attack: register a reference value whose expiration is already past (e.g. replaying an
    old registration). Defence: an expiration must lie in the future."""
    past = (datetime.fromtimestamp(broker.clock.now(), UTC) - timedelta(days=1)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    message = {
        "version": "0.1.0",
        "type": "sample",
        "payload": b64std_encode(json.dumps({"svn": ["2"]}).encode()),
        "expiration": past,
    }
    r = http.post(f"{broker.url}/kbs/v0/reference-value", json=message, headers=admin_headers)
    assert "future" in refused(r, 400, "RvpsError")


def test_reference_value_expiry_is_enforced(stored: LiveBroker) -> None:
    """Attack: keep being appraised against reference values past their expiry (upstream
    stores an expiry but never enforces it). Defence: expired values are treated as absent;
    once the broker's clock passes the expiry the evidence no longer affirms and the secret
    is refused."""
    expires = datetime.fromtimestamp(stored.clock.now(), UTC) + timedelta(minutes=10)
    with stored.admin() as admin:
        admin.register_reference_values(SAMPLE_REFERENCE_VALUES, expiration=expires)
    with KbsClient(stored.url, SampleAttester()) as guest:
        assert guest.attest().claims()["submods"]["cpu0"]["ear.status"] == "affirming"
    stored.clock.advance(20 * 60)
    with KbsClient(stored.url, SampleAttester()) as guest:
        status = guest.attest().claims()["submods"]["cpu0"]["ear.status"]
        assert status != "affirming"
        with pytest.raises(KbsRequestError) as denied:
            guest.get_resource(SECRET)
    assert denied.value.status == 401 and denied.value.error_type.endswith("/PolicyDeny")


def test_init_data_mismatch_tpm_pcr8(broker: LiveBroker) -> None:
    """Attack: a guest whose TPM measured one init-data document (PCR 8) sends another one
    (e.g. a laxer agent policy) to be appraised against. Defence: the verifier replays the
    sent document's sha256 digest into PCR 8 and compares it with the quoted PCR 8."""
    from custodes.guest.attester.tpm import TpmAttester
    from swtpm import running_swtpm

    document = 'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n"policy.rego" = """%s"""\n'
    measured = document % "package agent_policy\ndefault ExecProcessRequest := false\n"
    sent = document % "package agent_policy\ndefault ExecProcessRequest := true\n"
    with running_swtpm() as tpm:
        attester = TpmAttester(tpm.tcti)
        attester.bind_init_data(InitData.parse(measured).digest)
        with KbsClient(broker.url, attester, init_data=sent) as guest:
            with pytest.raises(KbsRequestError) as refused_:
                guest.attest()
        assert refused_.value.status == 401
        assert refused_.value.error_type.endswith("/AttestationError")
        assert "PCR 8" in refused_.value.detail
        with KbsClient(broker.url, attester, init_data=measured) as guest:
            assert guest.attest().value  # the document it measured is accepted


APPROVED_IMAGE = "quay.io/bank/payments@sha256:" + "a" * 64
ATTACKER_IMAGE = "docker.io/attacker/anything:latest"


def _agent_policy_data(image: str) -> str:
    container = {"OCI": {"Annotations": {"io.kubernetes.cri.image-name": image}}}
    return json.dumps({"containers": [container]})


def _init_data_with_agent_policy(policy: str) -> str:
    header = 'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n'
    return f"{header}\"policy.rego\" = '''\n{policy}'''\n"


IDENTIFIED_POLICY = f"""package policy
import rego.v1
default allow := false
allow if {{
    every _, a in input.submods {{ a["ear.status"] == "affirming" }}
    input.submods.cpu0["ear.trustee.identifiers"].validated.container_images == ["{APPROVED_IMAGE}"]
}}
"""


def test_agent_policy_data_faked_in_a_comment(stored: LiveBroker) -> None:
    """Attack (review issue 12 #1): the cluster admin ships an agent policy whose real
    policy_data lets any image run, followed by `# policy_data := {...approved image...}`.
    A text search for the last `policy_data := {` reports the comment, so the appraisal's
    `ear.trustee.identifiers` names the approved image and the workload admin's policy
    releases. Defence: the claims are the value of data.agent_policy.policy_data, evaluated
    by the Rego engine; a comment is no rule. (An ambiguous policy_data, e.g. defined twice,
    is refused: tests/unit/initdata/test_agent_policy.py.)"""
    rules = (
        "package agent_policy\n"
        "default CreateContainerRequest := false\n"
        "CreateContainerRequest if { count(policy_data.containers) > 0 }\n"
    )
    forged = _init_data_with_agent_policy(
        f"{rules}policy_data := {_agent_policy_data(ATTACKER_IMAGE)}\n"
        f"# policy_data := {_agent_policy_data(APPROVED_IMAGE)}\n"
    )
    with stored.admin() as admin:
        admin.set_policy("resource", IDENTIFIED_POLICY)
    with KbsClient(stored.url, SampleAttester(), init_data=forged) as guest:
        _, claims, _ = jws_parts(guest.attest().value)
        identifiers = claims["submods"]["cpu0"]["ear.trustee.identifiers"]
        assert identifiers == {"validated": {"container_images": [ATTACKER_IMAGE]}}
        with pytest.raises(KbsRequestError) as denied:
            guest.get_resource(SECRET)
        assert denied.value.status == 401 and denied.value.error_type.endswith("/PolicyDeny")
    honest = _init_data_with_agent_policy(
        f"{rules}policy_data := {_agent_policy_data(APPROVED_IMAGE)}\n"
    )
    with KbsClient(stored.url, SampleAttester(), init_data=honest) as guest:
        assert guest.get_resource(SECRET) == SECRET_VALUE  # control: the policy can release


def test_agent_policy_data_defined_twice_is_refused(broker: LiveBroker) -> None:
    """Attack (review issue 12 #1, variant): two definitions of policy_data, so that what the
    agent enforces and what is reported could differ. Defence: such init-data is refused at
    attestation; no token is issued."""
    forged = _init_data_with_agent_policy(
        "package agent_policy\n"
        f"policy_data := {_agent_policy_data(ATTACKER_IMAGE)}\n"
        f"policy_data := {_agent_policy_data(APPROVED_IMAGE)}\n"
    )
    with KbsClient(broker.url, SampleAttester(), init_data=forged) as guest:
        with pytest.raises(KbsRequestError) as refused_:
            guest.attest()
    assert refused_.value.status in (400, 401) and "policy_data" in refused_.value.detail


def test_broker_state_readable_by_other_local_users(tmp_path: Path) -> None:
    """Attack (review issue 12 #2): another local user reads the broker's state: under umask
    022 SQLite made custodes.db, -wal and -shm 0644 in a 0755 directory. Defence: the data
    directory is created 0700 and the store 0600 before SQLite opens it (its -wal/-shm take
    its mode), keys 0600; a store or key that group or others can read makes serve refuse to
    start, naming the chmod that fixes it."""
    from live_broker import run_cli, served_broker

    old = os.umask(0o022)
    try:
        with served_broker(tmp_path) as served:
            with AdminClient(served.url, load_admin_key(served.admin_key)) as admin:
                admin.put_resource(SECRET, SECRET_VALUE)
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in served.data_dir.iterdir()}
            dir_mode = stat.S_IMODE(served.data_dir.stat().st_mode)
    finally:
        os.umask(old)
    assert dir_mode == 0o700
    assert {"custodes.db", "custodes.db-wal", "custodes.db-shm", EAR_KEY_FILE} <= set(modes)
    private = {name: mode for name, mode in modes.items() if not name.endswith(".pub.pem")}
    assert private == dict.fromkeys(private, 0o600)
    config = tmp_path / "serve.toml"
    for name, mode in (("custodes.db", 0o644), (EAR_KEY_FILE, 0o640)):
        path = tmp_path / "data" / name
        path.chmod(mode)
        result = run_cli("serve", "--config", str(config))
        err = result.stderr.decode()
        assert result.returncode != 0 and "Traceback" not in err
        assert f"chmod 600 {path}" in err, err
        path.chmod(0o600)


def test_deny_rule_that_never_matches_is_flagged(stored: LiveBroker, tmp_path: Path) -> None:
    """Attack (review issue 12, policy lint): a resource policy meant to deny
    default/key/s compares data["resource-path"] (a list) with the string "default/key/s":
    the deny never matches and the secret is released. Defence: `custodes admin policy set`
    shows the type mismatch as a warning before it activates the policy, and `custodes
    policy lint` exits 3 on it; the fix it names (compare a list) denies at the broker."""
    from custodes.cli import main

    meant_to_deny = (
        "package policy\nimport rego.v1\ndefault allow := false\n"
        'allow if {\n    every _, a in input.submods { a["ear.status"] == "affirming" }\n'
        "    not denied\n}\n"
        'denied if { data["resource-path"] == "default/key/s" }\n'
    )
    policy = tmp_path / "deny.rego"
    policy.write_text(meant_to_deny)
    key = str(stored.data_dir / "admin-key.pem")
    admin_cli = ["admin", "--url", stored.url, "--key", key]
    set_policy = ["policy", "set", "--kind", "resource", str(policy)]
    lint = run_cli_in_process(main, ["policy", "lint", str(policy)])
    assert lint.code == 3 and "type-mismatch" in lint.out and "path-ignored" in lint.out
    set_ = run_cli_in_process(main, [*admin_cli, *set_policy])
    assert set_.code == 0
    assert "custodes: warning:" in set_.err and 'data["resource-path"]' in set_.err
    fixed = meant_to_deny.replace('"default/key/s"', '["default", "key", "s"]')
    policy.write_text(fixed)
    assert run_cli_in_process(main, ["policy", "lint", str(policy)]).code == 0
    set_ = run_cli_in_process(main, [*admin_cli, *set_policy])
    assert set_.code == 0 and "warning" not in set_.err
    with KbsClient(stored.url, SampleAttester()) as guest:
        with pytest.raises(KbsRequestError) as denied:
            guest.get_resource(SECRET)
    assert denied.value.status == 401


@dataclass(frozen=True)
class CliRun:
    code: int
    out: str
    err: str


def run_cli_in_process(main: Any, argv: list[str]) -> CliRun:
    """``custodes.cli.main(argv)`` with its stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return CliRun(code, out.getvalue(), err.getvalue())


# --- tenants and roles ------------------------------------------------------------------------


def test_default_tenant_token_at_a_tenant(tenants: Tenants) -> None:
    """Attack: present a token issued for the default tenant at another tenant's broker
    URL. Defence: tokens carry custodes.tenant and every other tenant refuses them. (Tokens
    of one named tenant at another are test_tenants' test_guest_tokens_are_tenant_bound.)"""
    token, _ = guest_token(tenants.url)
    r = httpx.get(f"{tenants.base('bank')}/kbs/v0/resource/{SECRET}", headers=bearer(token))
    assert "another tenant" in refused(r, 401, "TokenVerifierError")


def test_suspended_tenant_guest_with_a_valid_token(tenants: Tenants) -> None:
    """Attack: a guest attested before its tenant was suspended keeps using its still-valid
    token. Defence: every request resolves the tenant first; a suspended tenant serves
    nothing, tokens included. (New handshakes of a suspended tenant are test_tenants'.)"""
    token, key = guest_token(tenants.base("bank"))
    url = f"{tenants.base('bank')}/kbs/v0/resource/{SECRET}"
    assert key.decrypt(httpx.get(url, headers=bearer(token)).json()) == b"bank secret"
    ops = tenants.bearer("operator")
    assert (
        httpx.post(f"{tenants.url}/operator/v0/tenants/bank/suspend", headers=ops).status_code
        == 200
    )
    refused(httpx.get(url, headers=bearer(token)), 403, "TenantSuspended")
    assert (
        httpx.post(f"{tenants.url}/operator/v0/tenants/bank/resume", headers=ops).status_code == 200
    )
    assert httpx.get(url, headers=bearer(token)).status_code == 200


def test_operator_credentials_cannot_fetch_tenant_secrets(tenants: Tenants) -> None:
    """Attack: the broker operator presents its own JWT on a tenant's guest resource path, or
    mints a JWT with the tenant admin's subject. Defence: the guest path accepts only EAR
    tokens; tenant identities are the tenant's keys, bound to their subjects."""
    url = f"{tenants.base('bank')}/kbs/v0/resource/{SECRET}"
    refused(httpx.get(url, headers=tenants.bearer("operator")), 401, "TokenVerifierError")
    as_admin = tenants.bearer("operator", subject="bank-admin")
    refused(
        httpx.get(f"{tenants.base('bank')}/kbs/v0/resource", headers=as_admin),
        401,
        "AdminAuthAccess",
    )


def test_auditor_cannot_roll_back_a_policy(tenants: Tenants) -> None:
    """Attack: an auditor (read-only) re-activates an earlier, laxer policy version. Defence:
    activation is a write and needs the admin role. (Other writes are test_tenants'.)"""
    admin = tenants.bearer("bank-admin")
    lax = b64url_encode(b"package policy\ndefault allow := true\n")
    strict = b64url_encode(b"package policy\ndefault allow := false\n")
    base = f"{tenants.base('bank')}/kbs/v0/resource-policy"
    for policy in (lax, strict):
        assert httpx.post(base, json={"policy": policy}, headers=admin).status_code == 200
    r = httpx.post(
        f"{base}/resource-policy/activate",
        json={"version": 2},
        headers=tenants.bearer("bank-auditor"),
    )
    assert "may not change" in refused(r, 403, "AdminAuthAccess")
    versions = httpx.get(f"{base}/resource-policy/versions", headers=admin).json()
    assert [v["version"] for v in versions if v["active"]] == [3]


def test_auditor_claiming_the_admin_subject(tenants: Tenants) -> None:
    """Attack: an auditor signs a JWT with its own key but the admin's subject, to be taken
    for the admin. Defence: each key is bound to its registered subject and role."""
    as_admin = tenants.bearer("bank-auditor", subject="bank-admin")
    r = httpx.post(
        f"{tenants.base('bank')}/kbs/v0/resource/{SECRET}", content=b"x", headers=as_admin
    )
    refused(r, 401, "AdminAuthAccess")


def test_admin_token_minted_for_another_tenant(tenants: Tenants) -> None:
    """Attack: one person is admin of two tenants with the same key; a token minted for the
    other tenant (seen by that tenant's proxy, say) is presented here. Defence: every admin
    token names its audience, this tenant's base URL, and is refused anywhere else."""
    ops = tenants.bearer("operator")
    body = {
        "id": "fund",
        "identities": [
            {
                "subject": "bank-admin",
                "role": "admin",
                "public_key": _pem(tenants.keys["bank-admin"]),
            }
        ],
    }
    assert (
        httpx.post(f"{tenants.url}/operator/v0/tenants", json=body, headers=ops).status_code == 200
    )
    for_fund = admin_token(
        tenants.keys["bank-admin"], audience=tenants.base("fund"), subject="bank-admin"
    )
    r = httpx.get(f"{tenants.base('bank')}/kbs/v0/resource", headers=bearer(for_fund))
    refused(r, 401, "AdminAuthAccess")
    # Control: the same key and subject with this tenant's audience is accepted.
    for_bank = admin_token(
        tenants.keys["bank-admin"], audience=tenants.base("bank"), subject="bank-admin"
    )
    assert httpx.get(f"{tenants.base('bank')}/kbs/v0/resource", headers=bearer(for_bank)).is_success


def test_admin_token_captured_and_replayed(tenants: Tenants) -> None:
    """Attack: a request of the tenant admin is captured (a log, a proxy) and its JWT replayed
    within its lifetime to write a resource. Defence: every admin token carries a ``jti`` that
    the broker accepts once, remembered in the store until the token expires."""
    token = admin_token(
        tenants.keys["bank-admin"], audience=tenants.base("bank"), subject="bank-admin"
    )
    url = f"{tenants.base('bank')}/kbs/v0/resource/{SECRET}"
    assert httpx.post(url, content=b"the admin's value", headers=bearer(token)).is_success
    r = httpx.post(url, content=b"the attacker's value", headers=bearer(token))
    assert "replay" in refused(r, 401, "AdminAuthAccess").lower()
    guest, key = guest_token(tenants.base("bank"))
    assert key.decrypt(httpx.get(url, headers=bearer(guest)).json()) == b"the admin's value"


def test_raw_request_helper_reads_the_status_line() -> None:
    """Guard for the helpers above: raw_request parses a status line (no broker needed)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=answer)
    thread.start()
    try:
        assert raw_request(f"http://127.0.0.1:{port}", b"/") == 418
    finally:
        thread.join(timeout=10)
        server.close()
