"""Every command, fed bad inputs: one line on stderr, a non-zero exit, no traceback, and
nothing left in the output directory.

The table runs in-process through ``custodes.cli.main`` (the same top-level handler as the
installed command); the cases where the process itself matters — a traceback printed by the
interpreter, a closed pipe, a failed broker start — run the real command as a subprocess.
Inputs: a missing file, a directory where a file is expected (the unreadable case: tests run
as root, where ``chmod 000`` does not stop reads), an empty file, bytes that are not text,
a key of the wrong type, malformed TOML/JSON/YAML/Rego, a broker that is down (a closed
loopback port) and a URL with the wrong scheme.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from custodes.cli import main
from live_broker import run_cli

if TYPE_CHECKING:
    from live_broker import LiveBroker

REPO = Path(__file__).resolve().parents[2]
E2E_SNP = REPO / "tests/vectors/trustee/attestation-service/tests/e2e/evidence.json"
KEY_ID = "kbs:///default/dataset/d"

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: app
  namespace: default
spec:
  containers:
    - name: app
      image: registry.example/app:1
"""
AGENT_POLICY_OK = "package agent_policy\n\ndefault AllowRequestsFailingPolicy := false\n"


def _pem(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _public_pem(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """One directory of good and bad inputs, and an empty ``out/`` for the outputs."""
    d = tmp_path
    (d / "out").mkdir()
    (d / "dir").mkdir()
    (d / "empty").write_bytes(b"")
    (d / "binary").write_bytes(b"\xff\xfe\x00not text\x80")
    (d / "bad.toml").write_text("[server\nlisten = ", encoding="utf-8")
    (d / "bad.json").write_text('{"tee": ', encoding="utf-8")
    (d / "bad.yaml").write_text("kind: [Pod\n  - : :", encoding="utf-8")
    (d / "bad.rego").write_text("package policy\n\nallow if {\n", encoding="utf-8")
    (d / "bad-agent.rego").write_text("package agent_policy\n\nallow if {\n", encoding="utf-8")
    (d / "wrong-package.rego").write_text("package policy\n\ndefault allow := false\n")
    (d / "ok.rego").write_text("package policy\n\ndefault allow := false\n", encoding="utf-8")
    (d / "agent.rego").write_text(AGENT_POLICY_OK, encoding="utf-8")
    (d / "claims.json").write_text("{}", encoding="utf-8")
    (d / "aa.toml").write_text('[token_configs]\n[token_configs.kbc]\nurl = "http://b"\n')
    (d / "cdh.toml").write_text('[kbc]\nname = "cc_kbc"\nurl = "http://b"\n')
    (d / "pod.yaml").write_text(POD, encoding="utf-8")
    (d / "plain").write_bytes(b"some plaintext")
    (d / "data.key").write_bytes(os.urandom(32))
    (d / "p384.pem").write_bytes(_pem(ec.generate_private_key(ec.SECP384R1())))
    ed = ed25519.Ed25519PrivateKey.generate()
    (d / "ed25519.pem").write_bytes(_pem(ed))
    (d / "ed25519.pub.pem").write_bytes(_public_pem(ed))
    (d / "p256.pub.pem").write_bytes(_public_pem(ec.generate_private_key(ec.SECP256R1())))
    (d / "audit.jsonl").write_bytes(b"")
    (d / "tls.toml").write_text(
        f'[server]\nlisten = "127.0.0.1:0"\ntls_cert = "{d}/nocert.pem"\n'
        f'tls_key = "{d}/nokey.pem"\n',
        encoding="utf-8",
    )
    return d


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...]  # {d}: the inputs directory, {port}: a closed loopback port
    expect: str  # a fragment of the one error line (case-insensitive)


def case(name: str, command: str, expect: str) -> Case:
    return Case(name, tuple(command.split()), expect)


CLOSED = "http://127.0.0.1:{port}"
ADMIN = f"--url {CLOSED} --key {{d}}/ed25519.pem"

CASES = [
    # serve
    case("serve/config-missing", "serve --config {d}/missing.toml", "missing.toml"),
    case("serve/config-malformed", "serve --config {d}/bad.toml", "toml"),
    case("serve/config-is-dir", "serve --config {d}/dir", "dir"),
    case(
        "serve/tls-cert-missing",
        "serve --config {d}/tls.toml --data-dir {d}/out/data",
        "nocert.pem does not exist",
    ),
    case("serve/data-dir-is-file", "serve --data-dir {d}/empty --listen 127.0.0.1:0", "empty"),
    # admin
    case("admin/server-down", f"admin {ADMIN} resource list", "cannot reach"),
    case("admin/wrong-scheme", "admin --url ftp://x --key {d}/ed25519.pem resource list", "http"),
    case("admin/key-missing", f"admin --url {CLOSED} --key {{d}}/nokey resource list", "nokey"),
    case("admin/key-is-dir", f"admin --url {CLOSED} --key {{d}}/dir resource list", "dir"),
    case("admin/key-empty", f"admin --url {CLOSED} --key {{d}}/empty resource list", "pem"),
    case(
        "admin/key-wrong-type",
        f"admin --url {CLOSED} --key {{d}}/p384.pem resource list",
        "ed25519 or ec p-256",
    ),
    case(
        "admin/cacert-missing",
        "admin --url https://127.0.0.1:{port} --key {d}/ed25519.pem --cacert {d}/ca.pem "
        "resource list",
        "ca.pem",
    ),
    case(
        "admin/put-file-missing", f"admin {ADMIN} resource put a/b/c --file {{d}}/nofile", "nofile"
    ),
    case("admin/put-file-is-dir", f"admin {ADMIN} resource put a/b/c --file {{d}}/dir", "dir"),
    case("admin/policy-missing", f"admin {ADMIN} policy set --kind resource {{d}}/nopol", "nopol"),
    # guest
    case("guest/server-down", "guest attest --url " + CLOSED + " --tee sample", "cannot reach"),
    case("guest/wrong-scheme", "guest attest --url ftp://127.0.0.1 --tee sample", "http"),
    case(
        "guest/cacert-missing",
        "guest attest --url https://127.0.0.1:{port} --tee sample --cacert {d}/ca.pem",
        "ca.pem does not exist",
    ),
    case(
        "guest/cacert-is-dir",
        "guest attest --url https://127.0.0.1:{port} --tee sample --cacert {d}/dir",
        "is a directory",
    ),
    case(
        "guest/cacert-empty",
        "guest attest --url https://127.0.0.1:{port} --tee sample --cacert {d}/empty",
        "no pem certificate",
    ),
    case(
        "guest/get-resource-server-down",
        f"guest get-resource --url {CLOSED} --tee sample kbs:///a/b/c --out {{d}}/out/r",
        "cannot reach",
    ),
    case(
        "guest/init-data-missing",
        f"guest attest --url {CLOSED} --tee sample --init-data {{d}}/noinit",
        "noinit",
    ),
    # run (the pod's entrypoint)
    case("run/config-missing", "run --config {d}/noconf.toml -- true", "noconf.toml"),
    case("run/config-malformed", "run --config {d}/bad.toml -- true", "toml"),
    case(
        "run/cacert-missing",
        "run --url https://127.0.0.1:{port} --cacert {d}/ca.pem -- true",
        "ca.pem",
    ),
    case(
        "run/initdata-empty",
        f"run --url {CLOSED} --initdata {{d}}/empty -- true",
        "init-data is empty",
    ),
    case("run/initdata-is-dir", f"run --url {CLOSED} --initdata {{d}}/dir -- true", "dir"),
    # secret
    case(
        "secret/keygen-missing-dir",
        "secret keygen --kid k1 --out-private {d}/out/k.jwk --out-public {d}/out/nodir/p.jwk",
        "does not exist",
    ),
    case(
        "secret/keygen-onto-dir",
        "secret keygen --kid k1 --out-private {d}/dir --out-public {d}/out/p.jwk",
        "is a directory",
    ),
    case(
        "secret/seal-key-missing",
        "secret seal --kid k1 --key {d}/nokey vault --resource kbs:///a/b/c",
        "nokey",
    ),
    case(
        "secret/seal-key-wrong-type",
        "secret seal --kid k1 --key {d}/ed25519.pem vault --resource kbs:///a/b/c",
        "not an ec",
    ),
    case(
        "secret/seal-key-malformed",
        "secret seal --kid k1 --key {d}/bad.json vault --resource kbs:///a/b/c",
        "json",
    ),
    case("secret/unseal-file-missing", "secret unseal --file {d}/nosealed", "nosealed"),
    # initdata
    case("initdata/build-aa-missing", "initdata build --aa {d}/noaa --cdh {d}/cdh.toml", "noaa"),
    case("initdata/build-aa-binary", "initdata build --aa {d}/binary --cdh {d}/cdh.toml", "utf-8"),
    case(
        "initdata/build-missing-dir",
        "initdata build --aa {d}/aa.toml --cdh {d}/cdh.toml --out {d}/out/nodir/i.toml",
        "does not exist",
    ),
    case(
        "initdata/build-onto-dir",
        "initdata build --aa {d}/aa.toml --cdh {d}/cdh.toml --out {d}/dir",
        "is a directory",
    ),
    case("initdata/digest-empty", "initdata digest {d}/empty", "init-data is empty"),
    case("initdata/digest-malformed", "initdata digest {d}/bad.toml", "toml"),
    case("initdata/digest-missing", "initdata digest {d}/noinit", "noinit"),
    case("initdata/annotation-is-dir", "initdata annotation {d}/dir", "dir"),
    # evidence verify
    case(
        "evidence/missing", "evidence verify --tee snp --report-data 00 {d}/noev.json", "noev.json"
    ),
    case("evidence/malformed", "evidence verify --tee snp --report-data 00 {d}/bad.json", "json"),
    case("evidence/empty", "evidence verify --tee snp --report-data 00 {d}/empty", "empty"),
    case("evidence/is-dir", "evidence verify --tee snp --report-data 00 {d}/dir", "dir"),
    # audit
    case(
        "audit/verify-missing",
        "audit verify {d}/nolog.jsonl --public-key {d}/p256.pub.pem",
        "nolog.jsonl",
    ),
    case(
        "audit/verify-key-missing",
        "audit verify {d}/audit.jsonl --public-key {d}/nokey.pem",
        "nokey.pem",
    ),
    case(
        "audit/verify-key-wrong-type",
        "audit verify {d}/audit.jsonl --public-key {d}/ed25519.pub.pem",
        "p-256",
    ),
    case("audit/matrix-yaml-malformed", "audit access-matrix --rbac {d}/bad.yaml", "yaml"),
    case("audit/matrix-missing", "audit access-matrix --rbac {d}/norbac.yaml", "norbac.yaml"),
    case(
        "audit/matrix-onto-dir",
        "audit access-matrix --rbac {d}/pod.yaml --out {d}/dir",
        "is a directory",
    ),
    # k8s
    case("k8s/validate-malformed", "k8s validate -f {d}/bad.yaml", "yaml"),
    case("k8s/validate-missing", "k8s validate -f {d}/nomanifest.yaml", "nomanifest.yaml"),
    case(
        "k8s/pod-rego-malformed",
        "k8s pod -f {d}/pod.yaml --broker-url https://b --policy {d}/bad-agent.rego "
        "--out {d}/out/pod.yaml",
        "does not compile",
    ),
    case(
        "k8s/pod-rego-wrong-package",
        "k8s pod -f {d}/pod.yaml --broker-url https://b --policy {d}/wrong-package.rego "
        "--out {d}/out/pod.yaml",
        "package agent_policy",
    ),
    case(
        "k8s/pod-missing-dir",
        "k8s pod -f {d}/pod.yaml --broker-url https://b --out {d}/out/nodir/pod.yaml",
        "does not exist",
    ),
    case(
        "k8s/pod-manifest-missing", "k8s pod -f {d}/nopod.yaml --broker-url https://b", "nopod.yaml"
    ),
    case(
        "k8s/secret-signing-key-missing",
        f"k8s secret --name s --from-literal a=b --repo r {ADMIN} --signing-key {{d}}/nokey "
        "--kid k1",
        "nokey",
    ),
    case(
        "k8s/webhook-config-missing",
        "k8s webhook serve --tls-cert {d}/nocert --tls-key {d}/nokey --config {d}/noconf",
        "cannot read webhook config",
    ),
    case(
        "k8s/webhook-tls-missing",
        "k8s webhook serve --tls-cert {d}/nocert --tls-key {d}/nokey --config {d}/empty "
        "--listen 127.0.0.1:0",
        "nocert",
    ),
    # rv
    case(
        "rv/ovmf-missing",
        "rv snp-measurement --ovmf {d}/noovmf --vcpus 1 --vcpu-type EPYC-v4",
        "noovmf",
    ),
    case(
        "rv/ovmf-empty",
        "rv snp-measurement --ovmf {d}/empty --vcpus 1 --vcpu-type EPYC-v4",
        "empty",
    ),
    # policy test
    case(
        "policy/rego-malformed",
        "policy test --policy {d}/bad.rego --claims {d}/claims.json",
        "compile",
    ),
    case(
        "policy/rego-missing",
        "policy test --policy {d}/nopol.rego --claims {d}/claims.json",
        "nopol.rego",
    ),
    case(
        "policy/claims-malformed", "policy test --policy {d}/ok.rego --claims {d}/bad.json", "json"
    ),
    # dataset
    case(
        "dataset/key-missing",
        f"dataset encrypt --key-file {{d}}/nokey --key-id {KEY_ID} {{d}}/plain {{d}}/out/x",
        "nokey",
    ),
    case(
        "dataset/key-wrong-size",
        f"dataset encrypt --key-file {{d}}/plain --key-id {KEY_ID} {{d}}/plain {{d}}/out/x",
        "key",
    ),
    case(
        "dataset/encrypt-missing-dir",
        f"dataset encrypt --key-file {{d}}/data.key --key-id {KEY_ID} {{d}}/plain "
        "{d}/out/nonexistent/x",
        "does not exist",
    ),
    case(
        "dataset/decrypt-not-a-dataset",
        "dataset decrypt --key-file {d}/data.key {d}/binary {d}/out/x",
        "not a custodes dataset",
    ),
    case(
        "dataset/decrypt-url-wrong-scheme",
        "dataset decrypt --url ftp://x --tee sample {d}/binary {d}/out/x",
        "dataset",
    ),
    case("dataset/inspect-missing", "dataset inspect {d}/nodata.cdx", "nodata.cdx"),
    case("dataset/keygen-missing-dir", "dataset keygen --out {d}/out/nodir/k", "does not exist"),
]


def _argv(c: Case, d: Path, port: int) -> list[str]:
    return [a.replace("{d}", str(d)).replace("{port}", str(port)) for a in c.argv]


def _tree(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_and_leaves_nothing(
    c: Case, inputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _tree(inputs)
    try:
        code = main(_argv(c, inputs, _closed_port()))
    except SystemExit as e:  # argparse: a usage error is exit 2, its own two lines
        pytest.fail(f"usage error instead of a handled one: {e}")
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if not ln.startswith("WARNING ")]
    assert code == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    assert len(lines) == 1, captured.err
    # `evidence verify` names refused evidence its own way (exit 1 means "evidence invalid").
    assert lines[0].startswith(("custodes: error: ", "custodes: evidence invalid: ")), lines[0]
    assert c.expect.lower() in lines[0].lower(), lines[0]
    assert "unexpected error" not in lines[0], lines[0]
    assert _tree(inputs) == before  # nothing written, nothing left half-written


# --- the real process: tracebacks, pipes, exit statuses -----------------------------------


def _one_error_line(result: subprocess.CompletedProcess[bytes]) -> str:
    err = result.stderr.decode()
    assert "Traceback" not in err
    errors = [ln for ln in err.splitlines() if ln.startswith("custodes: error: ")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.mark.parametrize(
    "name",
    [
        "guest/cacert-missing",
        "run/cacert-missing",
        "serve/data-dir-is-file",
        "initdata/build-onto-dir",
        "admin/server-down",
        "dataset/encrypt-missing-dir",
        "k8s/pod-rego-malformed",
        "initdata/digest-empty",
    ],
)
def test_bad_input_in_a_real_process(name: str, inputs: Path) -> None:
    c = next(c for c in CASES if c.name == name)
    before = _tree(inputs)
    result = run_cli(*_argv(c, inputs, _closed_port()))
    assert result.returncode == 1, result.stderr.decode()
    line = _one_error_line(result)
    assert c.expect.lower() in line.lower()
    assert result.stderr.decode().strip().splitlines()[-1] == line
    assert _tree(inputs) == before


def test_unexpected_error_is_one_line_with_a_hint_and_vv_shows_the_traceback(
    inputs: Path,
) -> None:
    """A failure nobody anticipated: one line and the -vv hint; with -vv the traceback too."""
    # A file that vanishes between the checks and the read is hard to stage; a command
    # module that raises a plain RuntimeError is not: run main() with one patched in.
    script = (
        "import sys, custodes.cli.dataset as m\n"
        "def boom(args): raise RuntimeError('boom')\n"
        "m._inspect = boom\n"
        "from custodes.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    argv = [sys.executable, "-c", script, "dataset", "inspect", str(inputs / "empty")]
    quiet = subprocess.run(argv, capture_output=True, check=False, timeout=60)
    assert quiet.returncode == 1
    assert quiet.stderr.decode().splitlines() == [
        "custodes: error: unexpected error: RuntimeError: boom (run with -vv for the traceback)"
    ]
    loud = subprocess.run(
        [*argv[:3], "-vv", *argv[3:]], capture_output=True, check=False, timeout=60
    )
    assert loud.returncode == 1
    assert "Traceback" in loud.stderr.decode()
    assert loud.stderr.decode().splitlines()[-1].startswith("custodes: error: unexpected error")


def test_evidence_verify_into_a_closed_pipe_exits_quietly(vectors: Path) -> None:
    """`custodes evidence verify … | head`: no BrokenPipeError traceback, no "Exception
    ignored", and not exit 1 (which means "evidence invalid")."""
    e2e = json.loads(E2E_SNP.read_text())
    report_data = bytes(e2e["attestation_report"]["report_data"]).hex()
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "custodes",
                "evidence",
                "verify",
                "--tee",
                "snp",
                str(E2E_SNP),
                "--report-data",
                report_data,
                "--at",
                "2026-01-01T00:00:00Z",
            ],
            stdout=write_end,
            stderr=subprocess.PIPE,
            check=False,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert proc.stderr == b""
    assert proc.returncode == 128 + signal.SIGPIPE


def test_a_closed_pipe_in_process_is_not_an_error(
    inputs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def closed(*_: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("custodes.cli.dataset._inspect", closed)
    assert main(["dataset", "inspect", str(inputs / "empty")]) == 128 + signal.SIGPIPE


# --- regressions ----------------------------------------------------------------------------


def test_serve_failed_first_start_leaves_nothing(tmp_path: Path) -> None:
    """The port is taken: the start fails after creating keys, a master key and a store;
    all of it (and the directories it made) is removed."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli(
            "serve", "--data-dir", str(tmp_path / "new" / "data"), "--listen", f"127.0.0.1:{port}"
        )
    assert result.returncode == 1
    assert "cannot listen" in _one_error_line(result)
    assert "removed what it had created" in result.stderr.decode()
    assert list(tmp_path.iterdir()) == []


def test_serve_failed_start_keeps_what_existed(tmp_path: Path) -> None:
    """A second start that fails removes only what it created, never the earlier state."""
    data = tmp_path / "data"
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "custodes",
            "serve",
            "--data-dir",
            str(data),
            "--listen",
            "127.0.0.1:0",
        ],
        stderr=subprocess.PIPE,
    )
    try:
        assert first.stderr is not None
        seen: list[str] = []
        while not any(line.startswith("custodes serve") for line in seen):
            line = first.stderr.readline().decode()
            assert line, "".join(seen)  # the broker stopped before its banner
            seen.append(line)
    finally:
        first.terminate()
        first.communicate(timeout=30)  # drains and closes its stderr
    existing = {
        p: p.read_bytes()
        for p in data.rglob("*")
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))  # SQLite's, while open
    }
    assert data / "admin-key.pem" in existing
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        (data / "dropped-by-hand").write_bytes(b"not the broker's")
        result = run_cli("serve", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 1
    for path, content in existing.items():
        if path.suffix == ".db":  # the store existed: kept (the failed start may have written)
            assert path.exists()
        else:
            assert path.read_bytes() == content, path
    assert (data / "dropped-by-hand").exists()


def test_audit_export_onto_a_directory_leaves_no_plaintext(
    broker: LiveBroker, tmp_path: Path
) -> None:
    """Issue 12 #6: `admin audit export --output DIR` (now `--out`) failed with a traceback and left
    DIR.part, a plaintext copy of the audit stream."""
    out = tmp_path / "out"
    out.mkdir()
    target = out / "export"
    target.mkdir()
    result = run_cli(
        "admin",
        "--url",
        broker.url,
        "--key",
        str(broker.data_dir / "admin-key.pem"),
        "audit",
        "export",
        "--out",
        str(target),
    )
    assert result.returncode == 1
    assert "is a directory" in _one_error_line(result)
    assert sorted(p.name for p in out.iterdir()) == ["export"]
    assert list(target.iterdir()) == []


def test_audit_export_to_a_file_is_private(broker: LiveBroker, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = out / "audit.jsonl"
    result = run_cli(
        "admin",
        "--url",
        broker.url,
        "--key",
        str(broker.data_dir / "admin-key.pem"),
        "audit",
        "export",
        "--out",
        str(target),
    )
    assert result.returncode == 0, result.stderr.decode()
    assert target.stat().st_mode & 0o777 == 0o600
    assert target.read_bytes()  # the broker's start is in the log
    assert sorted(p.name for p in out.iterdir()) == ["audit.jsonl"]


def test_k8s_pod_accepts_an_agent_policy_that_compiles(inputs: Path) -> None:
    out = inputs / "out" / "pod.yaml"
    code = main(
        [
            "k8s",
            "pod",
            "-f",
            str(inputs / "pod.yaml"),
            "--broker-url",
            "https://b",
            "--policy",
            str(inputs / "agent.rego"),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert "cc_init_data" in out.read_text() or "initdata" in out.read_text()


@pytest.fixture
def shm() -> Iterator[Path]:
    if not Path("/dev/shm").is_dir():
        pytest.fail("/dev/shm is needed for memory-backed output")
    d = Path(tempfile.mkdtemp(prefix="custodes-test-", dir="/dev/shm"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_dataset_decrypt_url_server_down_leaves_nothing(inputs: Path, shm: Path) -> None:
    sealed = inputs / "out" / "x.cdx"
    assert (
        main(
            [
                "dataset",
                "encrypt",
                "--key-file",
                str(inputs / "data.key"),
                "--key-id",
                KEY_ID,
                str(inputs / "plain"),
                str(sealed),
            ]
        )
        == 0
    )
    result = run_cli(
        "dataset",
        "decrypt",
        "--url",
        f"http://127.0.0.1:{_closed_port()}",
        "--tee",
        "sample",
        str(sealed),
        str(shm / "plain"),
    )
    assert result.returncode == 1
    assert "cannot reach" in _one_error_line(result)
    assert list(shm.iterdir()) == []
