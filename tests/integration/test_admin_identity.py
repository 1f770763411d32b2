"""Admin identities bound to subjects, audience-bound single-use tokens, and the identity CLI,
through ``custodes serve`` (a real subprocess on loopback) and the real ``custodes`` CLI.

Regressions of an outside review: a token minted for another broker or tenant was accepted
for up to 24 h; a default-tenant admin could sign another admin's subject into the audit log;
``custodes admin`` could not be used by any identity whose subject is not ``admin``. One
negative test per check of an admin token: wrong, missing and other-tenant ``aud``; replayed
and missing ``jti``; the wrong subject for the key; expired; lifetime over the maximum.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from custodes._internal.jws import sign_compact
from custodes.admin_client import AdminClient, admin_token, load_admin_key, operator_audience
from custodes.cli import main
from custodes.cli.admin_identity import public_key_path
from custodes.kbs.keys import write_private_pem, write_public_pem
from custodes.types.json import JsonObject
from live_broker import ServedBroker, start_served, stop_served

PREFIX = "https://github.com/confidential-containers/kbs/errors/"
MAX_LIFETIME = 600


@dataclass
class Site:
    """One broker: two default-tenant admins (alice, bob), an auditor (carol), an operator,
    and the tenant ``bank`` (admin dave, auditor erin), each with a key file."""

    served: ServedBroker
    keys: dict[str, Path]  # subject -> private key file

    @property
    def url(self) -> str:
        return self.served.url

    def base(self, tenant: str) -> str:
        return self.url if tenant == "default" else f"{self.url}/tenants/{tenant}"

    def key(self, who: str) -> ed25519.Ed25519PrivateKey:
        key = load_admin_key(self.keys[who])
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        return key


def _keypair(directory: Path, name: str) -> Path:
    private = directory / f"{name}.pem"
    key = ed25519.Ed25519PrivateKey.generate()
    write_private_pem(private, key)
    write_public_pem(directory / f"{name}.pub.pem", key.public_key())
    return private


def _start(tmp_path: Path, keys: dict[str, Path], name: str) -> ServedBroker:
    data = tmp_path / f"{name}-data"
    config = tmp_path / f"{name}.toml"
    pub = {who: public_key_path(path) for who, path in keys.items()}
    config.write_text(
        "[server]\n"
        'listen = "127.0.0.1:0"\n'
        f'data_dir = "{data}"\n'
        "[admin]\n"
        f'public_keys = ["{pub["alice"]}", "{pub["bob"]}"]\n'
        'subjects = ["alice", "bob"]\n'
        f'auditor_keys = ["{pub["carol"]}"]\n'
        'auditor_subjects = ["carol"]\n'
        f"max_token_lifetime_seconds = {MAX_LIFETIME}\n"
        "[operator]\n"
        f'public_keys = ["{pub["ops"]}"]\n'
        "[attestation]\n"
        "unsafe_allow_sample_tee = true\n"
    )
    return start_served(config, data)


def cli(*args: str) -> tuple[int, str, str]:
    """The real CLI in this process: (exit status, stdout, stderr)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(list(args))
        except SystemExit as e:  # argparse's usage errors
            status = int(e.code or 0)
    return status, out.getvalue(), err.getvalue()


def ok(*args: str) -> str:
    status, out, err = cli(*args)
    assert status == 0, err
    return out


def failure(*args: str) -> str:
    status, out, err = cli(*args)
    assert status == 1, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("custodes: error: "), err  # no traceback
    return lines[0]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    keys = {who: _keypair(tmp_path, who) for who in ("alice", "bob", "carol", "ops")}
    keys.update({who: _keypair(tmp_path, who) for who in ("dave", "erin")})
    served = _start(tmp_path, keys, "a")
    s = Site(served, keys)
    try:
        ok(
            "operator", "--url", s.url, "--key", str(keys["ops"]),
            "tenant", "create", "bank",
            "--admin", f"dave={public_key_path(keys['dave'])}",
            "--auditor", f"erin={public_key_path(keys['erin'])}",
        )  # fmt: skip
        yield s
    finally:
        stop_served(served)


def _claims(audience: str, subject: str, **changes: object) -> JsonObject:
    now = int(time.time())
    claims: JsonObject = {
        "sub": subject,
        "aud": audience,
        "iat": now,
        "exp": now + 60,
        "jti": secrets.token_hex(16),
    }
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def _get(site: Site, tenant: str, token: str) -> httpx.Response:
    return httpx.get(
        f"{site.base(tenant)}/kbs/v0/resource", headers={"Authorization": f"Bearer {token}"}
    )


def _refused(r: httpx.Response, detail: str, status: int = 401) -> None:
    assert r.status_code == status, r.text
    assert r.json()["type"] == PREFIX + "AdminAuthAccess"
    assert detail in r.json()["detail"], r.json()["detail"]


def _signed(site: Site, who: str, claims: JsonObject) -> str:
    return sign_compact({"alg": "EdDSA", "typ": "JWT"}, claims, site.key(who))


# --- one negative test per check -----------------------------------------------------------


def test_a_good_token_is_accepted(site: Site) -> None:
    token = _signed(site, "dave", _claims(site.base("bank"), "dave"))
    assert _get(site, "bank", token).status_code == 200


def test_wrong_aud(site: Site) -> None:
    token = _signed(site, "alice", _claims("https://elsewhere.example", "alice"))
    _refused(_get(site, "default", token), "is not this broker and tenant")


def test_missing_aud(site: Site) -> None:
    token = _signed(site, "alice", _claims(site.url, "alice", aud=None))
    _refused(_get(site, "default", token), "'aud' claim missing")


def test_other_tenants_aud(site: Site) -> None:
    # dave's token for the bank, sent to the bank but naming the default tenant, and one
    # naming another tenant: both refused, though dave's signature is good.
    for audience in (site.url, f"{site.url}/tenants/insurer"):
        token = _signed(site, "dave", _claims(audience, "dave"))
        _refused(_get(site, "bank", token), "is not this broker and tenant")


def test_replayed_jti(site: Site) -> None:
    token = _signed(site, "alice", _claims(site.url, "alice"))
    assert _get(site, "default", token).status_code == 200
    _refused(_get(site, "default", token), "already used")


def test_missing_jti(site: Site) -> None:
    token = _signed(site, "alice", _claims(site.url, "alice", jti=None))
    _refused(_get(site, "default", token), "'jti' claim missing")


def test_wrong_subject_for_the_key(site: Site) -> None:
    """Two default-tenant admins: bob's key cannot sign alice's (or the old default) name."""
    for subject in ("alice", "admin", "carol"):
        token = _signed(site, "bob", _claims(site.url, subject))
        _refused(_get(site, "default", token), "not the key's registered subject")


def test_expired(site: Site) -> None:
    now = int(time.time())
    token = _signed(site, "alice", _claims(site.url, "alice", iat=now - 900, exp=now - 300))
    _refused(_get(site, "default", token), "expired")


def test_lifetime_too_long(site: Site) -> None:
    now = int(time.time())
    claims = _claims(site.url, "alice", exp=now + MAX_LIFETIME + 1)
    _refused(_get(site, "default", _signed(site, "alice", claims)), "lifetime over 600 s")
    # The CLI's own tokens obey the broker's ceiling too.
    status, token, _ = cli(
        "admin", "--url", site.url, "--key", str(site.keys["alice"]), "--subject", "alice",
        "token", "--ttl", "3600",
    )  # fmt: skip
    assert status == 0
    _refused(_get(site, "default", token.strip()), "lifetime over 600 s")


# --- the attacks of the review, end to end --------------------------------------------------


def test_a_token_minted_for_another_broker_is_refused(site: Site, tmp_path: Path) -> None:
    """The same admin key is registered at two brokers. What alice mints for broker B is
    useless at broker A, and the reverse."""
    other = _start(tmp_path, site.keys, "b")
    try:
        for_b = admin_token(site.key("alice"), audience=other.url, subject="alice")
        _refused(_get(site, "default", for_b), "is not this broker and tenant")
        for_a = admin_token(site.key("alice"), audience=site.url, subject="alice")
        r = httpx.get(f"{other.url}/kbs/v0/resource", headers={"Authorization": f"Bearer {for_a}"})
        _refused(r, "is not this broker and tenant")
    finally:
        stop_served(other)


def test_the_audit_log_records_the_keys_subject(site: Site) -> None:
    ok(
        "admin", "--url", site.url, "--key", str(site.keys["bob"]), "--subject", "bob",
        "resource", "put", "default/key/by-bob", "--value", "x",
    )  # fmt: skip
    with AdminClient(site.url, site.key("alice"), subject="alice") as alice:
        exported = alice.export_audit()
    entries = [json.loads(line) for line in exported.splitlines() if line.strip()]
    puts = [
        e
        for e in entries
        if e.get("kind") == "admin" and e["event"].get("resource") == "default/key/by-bob"
    ]
    assert [e["actor"] for e in puts] == ["bob"]


# --- the CLI: subjects, tokens for curl, roles -----------------------------------------------


def test_tenant_admin_with_own_key_and_subject(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/governance.md's `custodes admin --url …/tenants/bank --key dave.pem …`."""
    bank = site.base("bank")
    dave = str(site.keys["dave"])
    # Without a subject the CLI signs "admin", which is not dave's key's subject.
    line = failure("admin", "--url", bank, "--key", dave, "resource", "list")
    assert "not the key's registered subject" in line
    ok("admin", "--url", bank, "--key", dave, "--subject", "dave", "resource", "put",
       "default/key/db", "--value", "s3cret")  # fmt: skip
    monkeypatch.setenv("CUSTODES_ADMIN_SUBJECT", "dave")
    assert ok("admin", "--url", bank, "--key", dave, "resource", "list").split() == [
        "default/key/db"
    ]


def test_auditor_reads_and_gets_a_clear_refusal_on_writes(site: Site) -> None:
    bank, erin = site.base("bank"), str(site.keys["erin"])
    ok("admin", "--url", bank, "--key", str(site.keys["dave"]), "--subject", "dave",
       "resource", "put", "default/key/db", "--value", "s3cret")  # fmt: skip
    reader = ("admin", "--url", bank, "--key", erin, "--subject", "erin")
    assert ok(*reader, "resource", "list").split() == ["default/key/db"]
    line = failure(*reader, "resource", "put", "default/key/db", "--value", "mine")
    assert "403" in line and "may not change tenant bank (read-only role)" in line
    # The default tenant's auditor likewise.
    carol = ("admin", "--url", site.url, "--key", str(site.keys["carol"]), "--subject", "carol")
    ok(*carol, "resource", "list")
    assert "403" in failure(*carol, "resource", "delete", "default/key/x")


def test_admin_token_for_curl(site: Site) -> None:
    token = ok(
        "admin", "--url", site.base("bank"), "--key", str(site.keys["dave"]),
        "--subject", "dave", "token", "--ttl", "60",
    ).strip()  # fmt: skip
    assert _get(site, "bank", token).status_code == 200
    _refused(_get(site, "bank", token), "already used")  # one request per token
    # Minted for the bank: useless at the default tenant (and dave's key is not there).
    assert _get(site, "default", token).status_code == 401
    status, _, err = cli("admin", "--url", site.url, "token", "--ttl", "0")
    assert status == 2 and "--ttl is whole seconds from 1 to 3600" in err


def test_audience_option_for_a_proxy(site: Site) -> None:
    """Reaching the broker as localhost while it knows itself as 127.0.0.1 works (both are
    its loopback names); a name it does not know needs --audience naming one it does."""
    localhost = site.url.replace("127.0.0.1", "localhost")
    alice = ("admin", "--key", str(site.keys["alice"]), "--subject", "alice")
    ok(*alice, "--url", localhost, "resource", "list")
    line = failure(*alice, "--url", localhost, "--audience", "http://127.0.0.2:1", "resource",
                   "list")  # fmt: skip
    assert "is not this broker and tenant" in line and site.url in line


# --- identities: the tenant's own admins manage them -----------------------------------------


def test_identity_add_list_remove(site: Site, tmp_path: Path) -> None:
    bank = site.base("bank")
    dave = ("admin", "--url", bank, "--key", str(site.keys["dave"]), "--subject", "dave")
    ok("admin", "identity", "keygen", str(tmp_path / "frank.pem"))
    assert (tmp_path / "frank.pem").stat().st_mode & 0o777 == 0o600
    ok(*dave, "identity", "add", "frank", "--role", "admin",
       "--public-key", str(tmp_path / "frank.pub.pem"))  # fmt: skip
    listed = json.loads(ok(*dave, "identity", "list", "-o", "json"))
    assert {(i["subject"], i["role"]) for i in listed} == {
        ("dave", "admin"), ("erin", "auditor"), ("frank", "admin"),
    }  # fmt: skip
    frank = ("admin", "--url", bank, "--key", str(tmp_path / "frank.pem"), "--subject", "frank")
    ok(*frank, "resource", "list")
    # The auditor may not remove anyone; frank removes dave; dave's key stops working.
    erin = ("admin", "--url", bank, "--key", str(site.keys["erin"]), "--subject", "erin")
    assert "403" in failure(*erin, "identity", "remove", "dave")
    ok(*frank, "identity", "remove", "dave")
    assert "401" in failure(*dave, "resource", "list")
    # The last admin stays.
    line = failure(*frank, "identity", "remove", "frank")
    assert "409" in line and "last admin identity" in line
    assert "404" in failure(*frank, "identity", "remove", "nobody")
    # Removal is audited, with the remover as actor.
    with AdminClient(bank, load_admin_key(tmp_path / "frank.pem"), subject="frank") as c:
        entries = [json.loads(x) for x in c.export_audit().splitlines() if x.strip()]
    removed = [e for e in entries if e.get("event", {}).get("action") == "identity.remove"]
    assert [(e["actor"], e["event"]["subject"]) for e in removed] == [("frank", "dave")]


def test_keygen_never_overwrites(tmp_path: Path) -> None:
    ok("admin", "identity", "keygen", str(tmp_path / "k.pem"))
    before = (tmp_path / "k.pem").read_bytes()
    assert "exists" in failure("admin", "identity", "keygen", str(tmp_path / "k.pem"))
    assert (tmp_path / "k.pem").read_bytes() == before


# --- the operator CLI ------------------------------------------------------------------------


def test_operator_tenant_lifecycle(site: Site, tmp_path: Path) -> None:
    ops = ("operator", "--url", site.url, "--key", str(site.keys["ops"]))
    created = json.loads(
        ok(*ops, "tenant", "create", "insurer", "--admin",
           f"zoe={public_key_path(site.keys['dave'])}", "-o", "json")
    )  # fmt: skip
    assert created["id"] == "insurer" and created["status"] == "active"
    assert ok(*ops, "tenant", "list").split() == ["bank", "insurer"]
    assert json.loads(ok(*ops, "tenant", "list", "-o", "json")) == ["bank", "insurer"]
    assert "suspended" in ok(*ops, "tenant", "suspend", "bank")
    dave = ("admin", "--url", site.base("bank"), "--key", str(site.keys["dave"]),
            "--subject", "dave")  # fmt: skip
    assert "403" in failure(*dave, "resource", "list")
    assert json.loads(ok(*ops, "tenant", "get", "bank", "-o", "json"))["status"] == "suspended"
    ok(*ops, "tenant", "resume", "bank")
    ok(*dave, "resource", "list")
    # Refusals: no admin identity, a bad SUBJECT=FILE, an existing tenant, a tenant admin's
    # key, an operator token replayed.
    assert "at least one --admin" in failure(*ops, "tenant", "create", "x")
    assert "SUBJECT=PUBLIC_KEY.pem" in failure(*ops, "tenant", "create", "x", "--admin", "zoe")
    pub = f"zoe={public_key_path(site.keys['dave'])}"
    assert "409" in failure(*ops, "tenant", "create", "bank", "--admin", pub)
    assert "401" in failure(
        "operator", "--url", site.url, "--key", str(site.keys["dave"]), "tenant", "list"
    )
    token = ok(*ops, "token").strip()
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{site.url}/operator/v0/tenants", headers=headers).status_code == 200
    _refused(httpx.get(f"{site.url}/operator/v0/tenants", headers=headers), "already used")


def test_operator_tokens_are_not_admin_tokens(site: Site) -> None:
    """The operator's token names /operator: no tenant accepts it, whatever its subject, and
    a tenant admin's token is refused by the operator API."""
    ops = site.key("ops")
    token = admin_token(ops, audience=operator_audience(site.url), subject="operator")
    assert _get(site, "default", token).status_code == 401
    alice = admin_token(site.key("alice"), audience=operator_audience(site.url), subject="alice")
    r = httpx.get(f"{site.url}/operator/v0/tenants", headers={"Authorization": f"Bearer {alice}"})
    assert r.status_code == 401


def test_bad_subject_or_audience_is_one_line(site: Site) -> None:
    alice = ("admin", "--url", site.url, "--key", str(site.keys["alice"]))
    assert "is not 1-128 letters" in failure(*alice, "--subject", "a b", "resource", "list")
    assert "must be an http:// or https:// URL" in failure(
        *alice, "--subject", "alice", "--audience", "ftp://x", "resource", "list"
    )
