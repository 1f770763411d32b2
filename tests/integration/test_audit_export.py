"""Audit exports end with a signed checkpoint, end to end: ``custodes admin audit export``
against ``custodes serve`` on a loopback port, then ``custodes audit verify`` offline, both as
the installed command. A cut export, an empty one and a partial one, each through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from live_broker import SAMPLE_REFERENCE_VALUES, ServedBroker, run_cli


def admin(served: ServedBroker, *args: str) -> bytes:
    result = run_cli("admin", "--url", served.url, "--key", str(served.admin_key), *args)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def trust_sample(served: ServedBroker) -> None:
    for name, value in SAMPLE_REFERENCE_VALUES.items():
        if isinstance(value, list):
            admin(served, "reference-value", "register", name, *map(str, value))
        else:
            admin(served, "reference-value", "register", name, str(value), "--json", "--single")


def guest(served: ServedBroker, *args: str) -> int:
    result = run_cli("guest", *args[:1], "--url", served.url, "--tee", "sample", *args[1:])
    return result.returncode


def export(served: ServedBroker, path: Path, *extra: str) -> list[bytes]:
    admin(served, "audit", "export", "--out", str(path), *extra)
    return path.read_bytes().splitlines()


def verify(path: Path, key: Path, *extra: str) -> tuple[int, str, str]:
    result = run_cli("audit", "verify", str(path), "--audit-key", str(key), *extra)
    assert b"Traceback" not in result.stderr
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def test_an_export_proves_its_own_completeness(served: ServedBroker, tmp_path: Path) -> None:
    trust_sample(served)
    admin(served, "resource", "put", "default/key/one", "--value", "v")
    assert guest(served, "get-resource", "default/key/one") == 0
    key = tmp_path / "audit.pem"
    admin(served, "audit", "public-key", "--out", str(key))
    first = tmp_path / "first.jsonl"
    lines = export(served, first)
    last = json.loads(lines[-1])
    # The broker appended a checkpoint naming the exporter, the tenant, the size and the head.
    assert last["kind"] == "checkpoint" and last["actor"] == "admin"
    assert last["event"] == {
        "origin": "default",
        "size": len(lines) - 1,
        "head": json.loads(lines[-2])["hash"],
        "reason": "export",
    }
    code, out, err = verify(first, key, "--stream", "default")
    assert (code, err) == (0, "")
    assert out.startswith(f"ok: {len(lines)} entries, head {len(lines) - 1} {last['hash']}\n")
    assert f"stream default ends at checkpoint {len(lines) - 1} (export, signed " in out

    # The next export holds the first one's checkpoint and ends at its own.
    second = tmp_path / "second.jsonl"
    again = export(served, second)
    assert again[: len(lines)] == lines and len(again) == len(lines) + 1
    assert verify(second, key)[0] == 0


def test_a_cut_export_is_refused(served: ServedBroker, tmp_path: Path) -> None:
    admin(served, "resource", "put", "default/key/one", "--value", "v")
    admin(served, "resource", "put", "default/key/two", "--value", "w")
    key = tmp_path / "audit.pem"
    admin(served, "audit", "public-key", "--out", str(key))
    path = tmp_path / "audit.jsonl"
    lines = export(served, path)
    n = len(lines)
    for keep in (n - 1, 1):
        path.write_bytes(b"".join(line + b"\n" for line in lines[:keep]))
        code, out, _ = verify(path, key)
        assert code == 1
        assert out.startswith(f"audit log broken at entry {keep}: no checkpoint: ")
    # Accepted only when told so, and then loudly.
    code, out, err = verify(path, key, "--allow-unanchored")
    assert code == 0 and out.startswith("ok: 1 entries")
    assert err.startswith("WARNING: --allow-unanchored")
    path.write_bytes(b"")
    code, out, _ = verify(path, key, "--allow-unanchored")
    assert (code, out) == (
        1,
        "audit log broken at entry 0: no entries: an empty stream proves nothing\n",
    )


def test_a_partial_export_ends_with_a_checkpoint_too(served: ServedBroker, tmp_path: Path) -> None:
    for i in range(3):
        admin(served, "resource", "put", f"default/key/k{i}", "--value", "v")
    key = tmp_path / "audit.pem"
    admin(served, "audit", "public-key", "--out", str(key))
    path = tmp_path / "from-2.jsonl"
    lines = export(served, path, "--since", "2")
    assert json.loads(lines[0])["seq"] == 2 and json.loads(lines[-1])["kind"] == "checkpoint"
    code, out, _ = verify(path, key, "--from", "2")
    assert code == 0 and out.startswith(f"ok: {len(lines)} entries")
    code, out, _ = verify(path, key)
    assert code == 1 and out.startswith("audit log broken at entry 0: entries 0..1 are missing")
