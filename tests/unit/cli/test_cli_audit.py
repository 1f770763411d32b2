"""``custodes audit verify`` on real exports: the two outputs, exit codes, the anchor, and
errors without tracebacks (also through the installed command, as a subprocess)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from custodes._internal.clock import FrozenClock
from custodes.audit.entry import AuditKind
from custodes.audit.log import AuditLog
from custodes.cli import main
from custodes.storage.memory import MemoryStore

STREAM = "acme"


def write_public(path: Path, key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> Path:
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


class Exported:
    """A six-entry stream exported to ``acme.jsonl`` (so seven lines: the export's checkpoint
    is entry 6) with its public key beside it."""

    def __init__(self, tmp_path: Path) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        clock = FrozenClock(1_767_225_600.0)
        self.log = AuditLog(MemoryStore(), self.key, clock)
        kinds = [k for k in AuditKind if k is not AuditKind.CHECKPOINT]
        for i in range(6):
            self.log.append(STREAM, kinds[i % len(kinds)], f"admin-{i}", {"n": i})
            clock.advance(1.0)
        self.file = tmp_path / "acme.jsonl"
        buf = io.BytesIO()
        self.log.export(STREAM, buf)
        self.file.write_bytes(buf.getvalue())
        self.pem = write_public(tmp_path / "audit.pub.pem", self.key)
        head = self.log.head(STREAM)
        assert head is not None
        self.head = head
        self.checkpoint_time = self.log.entries(STREAM)[-1].time

    def ok(self, count: int = 7) -> str:
        """The output of a good verification of the whole export."""
        return (
            f"ok: {count} entries, head 6 {self.head[1]}\n"
            f"stream {STREAM} ends at checkpoint 6 (export, signed {self.checkpoint_time}); "
            "1 checkpoints verified\n"
        )

    def anchor(self) -> str:
        return f"{self.head[0]}:{self.head[1]}"

    def lines(self) -> list[bytes]:
        return self.file.read_bytes().splitlines()

    def rewrite(self, lines: list[bytes]) -> None:
        self.file.write_bytes(b"".join(line + b"\n" for line in lines))


@pytest.fixture
def export(tmp_path: Path) -> Exported:
    return Exported(tmp_path)


def verify(
    capsys: pytest.CaptureFixture[str], export: Exported, *extra: str
) -> tuple[int, str, str]:
    code = main(["audit", "verify", str(export.file), "--audit-key", str(export.pem), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_ok(capsys: pytest.CaptureFixture[str], export: Exported) -> None:
    code, out, err = verify(capsys, export)
    assert code == 0
    assert out == export.ok()
    assert err == ""


def test_ok_with_anchor(capsys: pytest.CaptureFixture[str], export: Exported) -> None:
    code, out, err = verify(capsys, export, "--head", export.anchor())
    assert code == 0
    assert out == export.ok()
    assert err == ""


def test_edited_entry(capsys: pytest.CaptureFixture[str], export: Exported) -> None:
    lines = export.lines()
    obj = json.loads(lines[3])
    obj["event"]["n"] = 99
    lines[3] = json.dumps(obj).encode()
    export.rewrite(lines)
    code, out, _ = verify(capsys, export)
    assert code == 1
    assert out.startswith("audit log broken at entry 3: hash mismatch")


def test_deleted_entry(capsys: pytest.CaptureFixture[str], export: Exported) -> None:
    lines = export.lines()
    del lines[2]
    export.rewrite(lines)
    code, out, _ = verify(capsys, export)
    assert (code, out) == (
        1,
        "audit log broken at entry 2: entry 2 is missing: deleted from the log\n",
    )


def test_reordered_entries(capsys: pytest.CaptureFixture[str], export: Exported) -> None:
    lines = export.lines()
    lines[1], lines[2] = lines[2], lines[1]
    export.rewrite(lines)
    code, out, _ = verify(capsys, export)
    assert code == 1
    assert out.startswith("audit log broken at entry 1: ") and "reordered" in out


def test_truncated_tail(capsys: pytest.CaptureFixture[str], export: Exported) -> None:
    export.rewrite(export.lines()[:4])
    code, out, err = verify(capsys, export)
    assert (code, err) == (1, "")
    assert out.startswith("audit log broken at entry 4: no checkpoint: nothing signed says ")
    code, out, _ = verify(capsys, export, "--head", export.anchor())
    assert code == 1
    assert out.startswith("audit log broken at entry 4: entries 4..6 are missing at the end")


def test_only_the_checkpoint_cut(capsys: pytest.CaptureFixture[str], export: Exported) -> None:
    export.rewrite(export.lines()[:-1])
    code, out, _ = verify(capsys, export)
    assert code == 1 and out.startswith("audit log broken at entry 6: no checkpoint")


def test_tail_after_the_checkpoint(capsys: pytest.CaptureFixture[str], export: Exported) -> None:
    export.log.append(STREAM, AuditKind.ADMIN, "admin", {"n": 6})
    added = export.log.entries(STREAM)[-1].to_bytes()
    export.rewrite([*export.lines(), added])
    code, out, _ = verify(capsys, export)
    assert code == 1 and out.startswith(
        "audit log broken at entry 8: entry 7 comes after the last checkpoint (entry 6)"
    )


def test_allow_unanchored_is_loud(capsys: pytest.CaptureFixture[str], export: Exported) -> None:
    export.rewrite(export.lines()[:4])
    code, out, err = verify(capsys, export, "--allow-unanchored")
    assert code == 0 and out == f"ok: 4 entries, head 3 {json.loads(export.lines()[3])['hash']}\n"
    assert err.startswith("WARNING: --allow-unanchored: the stream does not end at a signed")
    # With an earlier checkpoint and a tail after it, the checkpoint is shown as not the end.
    export.log.append(STREAM, AuditKind.ADMIN, "admin", {"n": 6})
    buf = io.BytesIO()
    export.log.export(STREAM, buf)  # entries 0..7, the export's checkpoint is entry 8
    export.log.append(STREAM, AuditKind.ADMIN, "admin", {"n": 7})
    lines = buf.getvalue().splitlines()
    export.rewrite([*lines, export.log.entries(STREAM)[-1].to_bytes()])
    code, out, err = verify(capsys, export, "--allow-unanchored")
    assert code == 0 and "does NOT end at checkpoint 8 (export" in out
    assert "2 checkpoints verified" in out and err.startswith("WARNING: ")
    # A complete stream: no warning, even with the option.
    export.rewrite(lines)
    code, out, err = verify(capsys, export, "--allow-unanchored")
    assert code == 0 and "ends at checkpoint 8" in out and err == ""


def test_partial_file(capsys: pytest.CaptureFixture[str], export: Exported) -> None:
    export.rewrite(export.lines()[2:])
    code, out, _ = verify(capsys, export)
    assert code == 1
    assert out == "audit log broken at entry 0: entries 0..1 are missing: deleted from the log\n"
    code, out, err = verify(capsys, export, "--head", export.anchor(), "--from", "2")
    assert code == 0 and out == export.ok(count=5)
    assert "starts at entry 2" in err


def test_stream(capsys: pytest.CaptureFixture[str], export: Exported) -> None:
    code, out, _ = verify(capsys, export, "--stream", STREAM)
    assert code == 0 and out == export.ok()
    code, out, _ = verify(capsys, export, "--stream", "beta")
    assert code == 1 and out.startswith("audit log broken at entry 0: entry of stream 'acme'")


def test_wrong_public_key(
    capsys: pytest.CaptureFixture[str], export: Exported, tmp_path: Path
) -> None:
    export.pem = write_public(tmp_path / "other.pem", ec.generate_private_key(ec.SECP256R1()))
    code, out, _ = verify(capsys, export)
    assert code == 1 and out.startswith("audit log broken at entry 0: signed by unknown key")


def test_rotated_keys_repeat_the_option(
    capsys: pytest.CaptureFixture[str], export: Exported, tmp_path: Path
) -> None:
    other = write_public(tmp_path / "other.pem", ec.generate_private_key(ec.SECP256R1()))
    code, out, _ = verify(capsys, export, "--audit-key", str(other))
    assert code == 0 and out == export.ok()


def test_empty_file(capsys: pytest.CaptureFixture[str], export: Exported) -> None:
    export.file.write_bytes(b"")
    refused = "audit log broken at entry 0: no entries: an empty stream proves nothing\n"
    for extra in ((), ("--allow-unanchored",)):
        code, out, _ = verify(capsys, export, *extra)
        assert (code, out) == (1, refused)
    code, out, _ = verify(capsys, export, "--head", export.anchor())
    assert code == 1 and out.startswith("audit log broken at entry 0: entries 0..6 are missing")


@pytest.mark.parametrize("what", ["missing-file", "missing-key", "not-pem", "ed25519", "private"])
def test_errors(
    capsys: pytest.CaptureFixture[str], export: Exported, tmp_path: Path, what: str
) -> None:
    if what == "missing-file":
        export.file = tmp_path / "absent.jsonl"
    elif what == "missing-key":
        export.pem = tmp_path / "absent.pem"
    elif what == "not-pem":
        export.pem.write_text("not a key\n")
    elif what == "ed25519":
        write_public(export.pem, ed25519.Ed25519PrivateKey.generate())
    else:
        export.pem.write_bytes(
            export.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    code, out, err = verify(capsys, export)
    assert code == 1 and out == ""
    assert err.startswith("custodes: error: ")


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--head", "5"),
        ("--head", "5:abc"),
        ("--head", "x:" + "0" * 64),
        ("--from", "-1"),
        ("--from", "x"),
        ("--stream", "a/b"),
    ],
)
def test_usage_errors(
    capsys: pytest.CaptureFixture[str], export: Exported, option: str, value: str
) -> None:
    with pytest.raises(SystemExit) as info:
        verify(capsys, export, f"{option}={value}")
    assert info.value.code == 2
    assert option in capsys.readouterr().err


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "custodes", "audit", "verify", *args],
        input=None if stdin is None else stdin.decode(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_installed_command(export: Exported) -> None:
    ok = run_cli(str(export.file), "--audit-key", str(export.pem), "--head", export.anchor())
    assert ok.returncode == 0 and ok.stdout == export.ok()
    assert "Traceback" not in ok.stderr
    from_stdin = run_cli("-", "--audit-key", str(export.pem), stdin=export.file.read_bytes())
    assert from_stdin.returncode == 0 and from_stdin.stdout == export.ok()
    lines = export.lines()
    lines[4] = lines[4].replace(b'"n":4', b'"n":5')
    export.rewrite(lines)
    bad = run_cli(str(export.file), "--public-key", str(export.pem))
    assert bad.returncode == 1
    assert bad.stdout.startswith("audit log broken at entry 4: hash mismatch")
    assert "Traceback" not in bad.stderr
    garbage = export.file.with_name("garbage.jsonl")
    garbage.write_bytes(b"\x00\xff not json\n")
    worse = run_cli(str(garbage), "--public-key", str(export.pem))
    assert worse.returncode == 1 and worse.stdout.startswith("audit log broken at entry 0: ")
    assert "Traceback" not in worse.stderr
    missing = run_cli(str(export.file), "--audit-key", str(export.file.with_name("none.pem")))
    assert missing.returncode == 1 and missing.stderr.startswith("custodes: error: ")
    assert "Traceback" not in missing.stderr
