"""Onboarding a TEE in one round trip, through ``custodes serve`` and the real CLI.

A sample-TEE guest is refused by a broker that trusts nothing yet. The workload admin reads
the refusal (every failed condition at once), replays the recorded attestation with
``policy test --suggest``, registers the suggested values with ``register --message``, and
the guest's next try is affirming. Nothing is registered before the admin's command.
Reference values exported from one broker and registered into a fresh one are the same
values, with the same types and expirations.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from live_broker import ServedBroker, run_cli, served_broker


def admin(served: ServedBroker, *args: str) -> str:
    result = run_cli("admin", "--url", served.url, "--key", str(served.admin_key), *args)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def guest_get(served: ServedBroker, resource: str) -> tuple[int, bytes, str]:
    result = run_cli("guest", "get-resource", "--url", served.url, "--tee", "sample", resource)
    return result.returncode, result.stdout, result.stderr.decode()


def _attestation_seq(audit: Path) -> int:
    entries = [json.loads(line) for line in audit.read_text().splitlines() if line.strip()]
    return max(int(e["seq"]) for e in entries if e["kind"] == "attestation")


def test_sample_tee_onboarding_in_one_round_trip(served: ServedBroker, tmp_path: Path) -> None:
    admin(served, "resource", "put", "default/key/db", "--value", "s3cret")
    # 1. The guest is refused: the broker trusts no reference value yet.
    code, out, err = guest_get(served, "default/key/db")
    assert code == 1 and out == b"" and "PolicyDeny" in err
    cid = re.search(r"correlation id ([0-9a-f]{32})", err)
    assert cid is not None

    # 2. The admin sees every failed condition in one answer.
    why = admin(served, "denial", cid.group(1))
    for rv in ("launch_digest", "svn", "major_version", "minimum_minor_version"):
        assert f"reference value {rv} = null" in why, why
    assert 'claim input.sample.svn = "1"' in why
    assert "claim input.sample.platform_version.major = 1" in why

    # 3. The recorded attestation, replayed against the active policy, with suggestions.
    audit = tmp_path / "audit.jsonl"
    admin(served, "audit", "export", "--out", str(audit))
    policy = tmp_path / "default_cpu.rego"
    policy.write_text(admin(served, "policy", "get", "--kind", "attestation"))
    message = tmp_path / "suggested.json"
    replay = run_cli(
        "policy", "test", "--policy", str(policy),
        "--attestation", f"{audit}:{_attestation_seq(audit)}",
        "--suggest", "--suggest-message", str(message),
    )  # fmt: skip
    text = replay.stdout.decode()
    assert replay.returncode == 3, replay.stderr.decode()  # the candidate still refuses
    assert "TRUST ON FIRST USE" in text and "Nothing was registered" in text
    assert "custodes admin reference-value register --type number --single major_version 1" in (
        text
    )
    assert "custodes admin reference-value register svn 1" in text
    assert "with them the candidate decides: affirming" in text
    assert message.stat().st_mode & 0o777 == 0o600
    # Suggesting registered nothing: the broker still has no reference value.
    assert admin(served, "reference-value", "list", "-o", "json").strip() == "[]"

    # 4. The admin approves them; the guest's next try is affirming.
    admin(served, "reference-value", "register", "--message", str(message))
    code, out, err = guest_get(served, "default/key/db")
    assert code == 0, err
    assert out == b"s3cret"
    stored = json.loads(admin(served, "reference-value", "get", "major_version", "-o", "json"))
    assert stored["value"] == 1  # a number, as the claim it is compared with


def test_typed_register_on_the_command_line(served: ServedBroker) -> None:
    admin(served, "reference-value", "register", "major_version", "1", "--type", "number",
          "--single")  # fmt: skip
    admin(served, "reference-value", "register", "svn", "1")
    admin(served, "reference-value", "register", "flags", "true", "false", "--type", "bool")
    values = {
        name: json.loads(admin(served, "reference-value", "get", name, "-o", "json"))["value"]
        for name in ("major_version", "svn", "flags")
    }
    assert values == {"major_version": 1, "svn": ["1"], "flags": [True, False]}
    bad = run_cli(
        "admin", "--url", served.url, "--key", str(served.admin_key),
        "reference-value", "register", "major_version", "one", "--type", "number",
    )  # fmt: skip
    assert bad.returncode == 1
    assert bad.stderr.decode().startswith("custodes: error: --type number: 'one'")
    assert b"Traceback" not in bad.stderr


def test_export_then_register_into_a_fresh_broker(served: ServedBroker, tmp_path: Path) -> None:
    # One explicit expiry for both: default expiries are "now + lifetime", and two commands
    # either side of a second boundary would make two expiration times instead of one.
    admin(served, "reference-value", "register", "svn", "1", "2",
          "--expires", "2031-01-01T00:00:00Z")  # fmt: skip
    admin(served, "reference-value", "register", "major_version", "1", "--type", "number",
          "--single", "--expires", "2031-01-01T00:00:00Z")  # fmt: skip
    admin(served, "reference-value", "register", "launch_digest", "abcde",
          "--expires", "2030-01-31T00:00:00Z")  # fmt: skip
    exported = tmp_path / "rv.json"
    admin(served, "reference-value", "export", "--out", str(exported))
    assert exported.stat().st_mode & 0o777 == 0o600
    messages = json.loads(exported.read_text())
    assert len(messages) == 2  # one per expiration time

    def values(broker: ServedBroker) -> dict[str, object]:
        names = json.loads(admin(broker, "reference-value", "list", "-o", "json"))
        return {
            name: json.loads(admin(broker, "reference-value", "get", name, "-o", "json"))
            for name in names
        }

    before = values(served)
    fresh_dir = tmp_path / "fresh"
    fresh_dir.mkdir()
    with served_broker(fresh_dir) as fresh:
        assert values(fresh) == {}
        admin(fresh, "reference-value", "register", "--message", str(exported))
        assert values(fresh) == before
    assert before["launch_digest"]["expiration"] == "2030-01-31T00:00:00Z"  # type: ignore[index]


def test_a_bad_message_file_registers_nothing(served: ServedBroker, tmp_path: Path) -> None:
    good = {"version": "0.1.0", "type": "sample", "payload": "eyJhIjogWzFdfQ=="}  # {"a": [1]}
    bad = {"version": "0.1.0", "type": "nope", "payload": ""}
    path = tmp_path / "two.json"
    path.write_text(json.dumps([good, bad]))
    result = run_cli(
        "admin", "--url", served.url, "--key", str(served.admin_key),
        "reference-value", "register", "--message", str(path),
    )  # fmt: skip
    assert result.returncode == 1
    assert "unknown reference value type 'nope'" in result.stderr.decode()
    assert admin(served, "reference-value", "list", "-o", "json").strip() == "[]"


def test_message_file_errors_are_one_line(tmp_path: Path) -> None:
    key = tmp_path / "unused-key.pem"
    base = ("admin", "--url", "http://127.0.0.1:9", "--key", str(key), "reference-value")
    not_json = tmp_path / "m.json"
    not_json.write_text("{not json")
    for args, message in (
        (("register", "svn", "--message", str(not_json)), "--message FILE takes no NAME"),
        (("register", "--message", str(not_json)), f"cannot read RVPS message {not_json}"),
        (("register", "--message", str(tmp_path / "missing.json")), "cannot read RVPS message"),
    ):
        result = run_cli(*base, *args)
        err = result.stderr.decode()
        assert result.returncode == 1, err
        assert err.startswith(f"custodes: error: {message}"), err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    result = run_cli(*base, "register", "--message", str(empty))
    assert "expected an RVPS message object or a non-empty array" in result.stderr.decode()
