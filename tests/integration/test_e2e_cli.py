"""End to end through the real CLI against ``custodes serve`` on a loopback port:
the workload admin stores a secret, a sample-TEE guest fetches it (Bearer and cookie paths,
EC and RSA keys), a tightened policy refuses it, and a restart loses nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

from live_broker import SAMPLE_REFERENCE_VALUES, ServedBroker, run_cli, start_served, stop_served


def admin(served: ServedBroker, *args: str, stdin: bytes | None = None) -> bytes:
    result = run_cli(
        "admin", "--url", served.url, "--key", str(served.admin_key), *args, stdin=stdin
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def trust_sample(served: ServedBroker) -> None:
    for name, value in SAMPLE_REFERENCE_VALUES.items():
        if isinstance(value, list):
            admin(served, "reference-value", "register", name, *map(str, value))
        else:
            admin(served, "reference-value", "register", name, str(value), "--json", "--single")


def guest(served: ServedBroker, *args: str) -> tuple[int, bytes, str]:
    result = run_cli("guest", *args[:1], "--url", served.url, "--tee", "sample", *args[1:])
    return result.returncode, result.stdout, result.stderr.decode()


def test_store_and_release_through_the_cli(served: ServedBroker, tmp_path: Path) -> None:
    trust_sample(served)
    secret = b"\x00binary\xffsecret\n"
    src = tmp_path / "secret.bin"
    src.write_bytes(secret)
    admin(served, "resource", "put", "default/key/one", "--file", str(src))
    admin(served, "resource", "put", "kbs:///default/key/two", stdin=b"from stdin")

    assert admin(served, "resource", "list").decode().split() == [
        "default/key/one",
        "default/key/two",
    ]
    info = json.loads(admin(served, "resource", "get-info", "default/key/one", "-o", "json"))
    assert info["size"] == len(secret) and info["path"] == "default/key/one"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", info["updated"])  # RFC 3339
    table = admin(served, "resource", "get-info", "default/key/one").decode().splitlines()
    assert table[:2] == ["path     default/key/one", f"size     {len(secret)}"]
    assert table[2] == f"updated  {info['updated']}"

    for key_type in ("ec-p256", "ec-p521", "rsa"):
        for via in ("bearer", "cookie"):
            code, out, err = guest(
                served,
                "get-resource",
                "kbs:///default/key/one",
                "--key-type",
                key_type,
                "--via",
                via,
            )
            assert code == 0, err
            assert out == secret, (key_type, via)

    out_file = tmp_path / "out"
    code, out, err = guest(served, "get-resource", "default/key/two", "--output", str(out_file))
    assert code == 0, err
    assert out == b"" and out_file.read_bytes() == b"from stdin"
    assert out_file.stat().st_mode & 0o777 == 0o600

    admin(served, "resource", "delete", "default/key/two")
    code, _, err = guest(served, "get-resource", "default/key/two")
    assert code == 1 and "404" in err and "does not exist" in err


def test_attest_prints_an_ear_token(served: ServedBroker) -> None:
    trust_sample(served)
    code, out, err = guest(served, "attest")
    assert code == 0, err
    token = out.decode().strip()
    assert token.count(".") == 2
    # The guest-side Token reads the claims: affirming, and the insecure mode announced.
    from custodes.guest.kbs_client import Token

    claims = Token.parse(token).claims()
    assert claims["submods"]["cpu0"]["ear.status"] == "affirming"
    assert any("sample TEE" in n for n in claims["custodes.insecure"])


def test_tightened_policy_refuses_with_a_reason(served: ServedBroker, tmp_path: Path) -> None:
    trust_sample(served)
    admin(served, "resource", "put", "default/key/one", "--value", "v")
    assert guest(served, "get-resource", "default/key/one")[0] == 0

    admin(served, "reference-value", "register", "svn", "2")
    code, out, err = guest(served, "get-resource", "default/key/one")
    assert code == 1 and out == b""
    assert "401 PolicyDeny" in err and "correlation id" in err
    # The guest sees its own appraisal (it holds the token) and nothing of the reason.
    assert "contraindicated" in err and "hardware=97" in err
    assert "svn" not in err and "reference value" not in err and "condition" not in err
    cid = re.search(r"correlation id ([0-9a-f]{32})", err)
    assert cid is not None
    # The workload admin gets the reason by that id: rule, claim, reference value.
    why = admin(served, "denial", cid.group(1)).decode()
    assert "hardware = 97" in why
    assert 'claim input.sample.svn = "1"' in why
    assert 'reference value svn = ["2"]' in why
    assert "resource policy resource-policy version 1" in why

    # Tighten the resource policy itself: deny everything.
    admin(served, "reference-value", "register", "svn", "1")
    deny = tmp_path / "deny.rego"
    deny.write_text("package policy\n\ndefault allow := false\n")
    admin(served, "policy", "set", "--kind", "resource", str(deny))
    assert admin(served, "policy", "get", "--kind", "resource").decode() == deny.read_text()
    code, _, err = guest(served, "get-resource", "default/key/one")
    assert code == 1 and "PolicyDeny" in err and "affirming" in err
    cid = re.search(r"correlation id ([0-9a-f]{32})", err)
    assert cid is not None
    denial = json.loads(admin(served, "denial", cid.group(1), "--json"))
    assert denial["denial"]["policy_version"] == 2


def test_restart_loses_nothing(served: ServedBroker, tmp_path: Path) -> None:
    trust_sample(served)
    admin(served, "resource", "put", "default/key/kept", "--value", "still here")
    stop_served(served)
    again = start_served(served.config, served.data_dir)
    try:
        code, out, err = guest(again, "get-resource", "default/key/kept")
        assert code == 0, err
        assert out == b"still here"
    finally:
        stop_served(again)


def test_cli_errors_are_clear(served: ServedBroker, tmp_path: Path) -> None:
    result = run_cli("guest", "get-resource", "--url", served.url, "default/key/x")
    assert result.returncode == 1
    assert b"--tee sample" in result.stderr and b"Traceback" not in result.stderr
    result = run_cli("admin", "--url", served.url, "resource", "list")
    assert result.returncode == 1 and b"no admin key" in result.stderr
    result = run_cli(
        "admin",
        "--url",
        served.url,
        "--key",
        str(served.admin_key),
        "resource",
        "put",
        "a/../b",
        "--value",
        "x",
    )
    assert result.returncode == 2 and b"Traceback" not in result.stderr
    other = tmp_path / "other.pem"
    run_cli("admin", "--help")
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from custodes.kbs.keys import write_private_pem

    write_private_pem(other, ed25519.Ed25519PrivateKey.generate())
    result = run_cli("admin", "--url", served.url, "--key", str(other), "resource", "list")
    assert result.returncode == 1 and b"AdminAuthAccess" in result.stderr


def test_policy_versions_and_rollback(served: ServedBroker, tmp_path: Path) -> None:
    trust_sample(served)
    admin(served, "resource", "put", "default/key/one", "--value", "v")
    deny = tmp_path / "deny.rego"
    deny.write_text("package policy\n\ndefault allow := false\n")
    admin(served, "policy", "set", "--kind", "resource", str(deny))
    versions = admin(served, "policy", "versions", "--kind", "resource").decode().splitlines()
    assert versions == ["VERSION  ACTIVE", "1        no", "2        yes"]
    assert guest(served, "get-resource", "default/key/one")[0] == 1
    admin(served, "policy", "rollback", "--kind", "resource")
    listed = json.loads(admin(served, "policy", "versions", "--kind", "resource", "-o", "json"))
    assert listed == [{"active": True, "version": 1}, {"active": False, "version": 2}]
    assert guest(served, "get-resource", "default/key/one")[0] == 0
    old = admin(served, "policy", "get", "--kind", "resource", "--version", "2").decode()
    assert old == deny.read_text()
    admin(served, "policy", "activate", "--kind", "resource", "2")
    assert guest(served, "get-resource", "default/key/one")[0] == 1
    result = run_cli(
        "admin",
        "--url",
        served.url,
        "--key",
        str(served.admin_key),
        "policy",
        "activate",
        "--kind",
        "resource",
        "9",
    )
    assert result.returncode == 1 and b"no version 9" in result.stderr


def test_audit_log_records_and_verifies(served: ServedBroker, tmp_path: Path) -> None:
    trust_sample(served)
    admin(served, "resource", "put", "default/key/one", "--value", "v")
    assert guest(served, "get-resource", "default/key/one")[0] == 0
    admin(served, "reference-value", "register", "svn", "2")
    assert guest(served, "get-resource", "default/key/one")[0] == 1
    log = tmp_path / "audit.jsonl"
    key = tmp_path / "audit.pem"
    admin(served, "audit", "export", "--out", str(log))
    admin(served, "audit", "public-key", "--output", str(key))  # the former spelling still works
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    kinds = [e["kind"] for e in entries]
    assert kinds.count("attestation") == 2 and "release" in kinds and "denial" in kinds
    actions = [e["event"].get("action") for e in entries if e["kind"] == "admin"]
    assert "resource.put" in actions and "reference-value.register" in actions
    assert all(e["actor"] == "admin" for e in entries if e["kind"] == "admin")
    # Nothing secret in the log.
    assert '"v"' not in log.read_text()
    ok = run_cli("audit", "verify", str(log), "--audit-key", str(key))
    assert ok.returncode == 0 and ok.stdout.startswith(f"ok: {len(entries)} entries".encode())
    # An edit is found at its entry.
    lines = log.read_text().splitlines()
    edited = json.loads(lines[3])
    edited["actor"] = "mallory" if edited["actor"] else "someone"
    lines[3] = json.dumps(edited)
    log.write_text("\n".join(lines) + "\n")
    bad = run_cli("audit", "verify", str(log), "--public-key", str(key))
    assert bad.returncode == 1 and b"broken at entry 3" in bad.stdout + bad.stderr
