"""`custodes initdata` through the real command entry point (in process), against the
upstream vectors: outputs, exit codes (1 for refusals, 2 for usage) and no tracebacks."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from custodes.cli import main
from custodes.initdata.build import build
from custodes.initdata.encoding import pack_image, unpack_image

INITDATA = "guest-components/initdata"
STOCK_ZLIB = "ng" not in zlib.ZLIB_RUNTIME_VERSION
AA = '[token_configs]\n[token_configs.kbs]\nurl = "https://broker:8080"\n'
CDH = '[kbc]\nname = "cc_kbc"\nurl = "https://broker:8080"\n'


def run(capsysbinary: pytest.CaptureFixture[bytes], *argv: str) -> tuple[int, bytes, str]:
    code = main(["initdata", *argv])
    out, err = capsysbinary.readouterr()
    return code, out, err.decode()


def usage(capsysbinary: pytest.CaptureFixture[bytes], *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main(["initdata", *argv])
    assert exc.value.code == 2
    return capsysbinary.readouterr().err.decode()


def refused(capsysbinary: pytest.CaptureFixture[bytes], *argv: str) -> str:
    code, out, err = run(capsysbinary, *argv)
    assert code == 1 and out == b""
    assert err.startswith("custodes: error: ") and "Traceback" not in err
    return err


def _derived(vectors: Path) -> dict[str, dict[str, Any]]:
    entries = json.loads((vectors / "guest-components/derived-vectors.json").read_text())
    return {e["file"]: e for e in entries["initdata"] if "file" in e}


@pytest.fixture
def configs(tmp_path: Path) -> Path:
    (tmp_path / "aa.toml").write_text(AA)
    (tmp_path / "cdh.toml").write_text(CDH)
    (tmp_path / "policy.rego").write_text("package agent_policy\n")
    return tmp_path


# --- build --------------------------------------------------------------------------------


def test_build_to_stdout(capsysbinary: pytest.CaptureFixture[bytes], configs: Path) -> None:
    code, out, _ = run(
        capsysbinary, "build", "--aa", str(configs / "aa.toml"), "--cdh", str(configs / "cdh.toml")
    )
    assert code == 0 and out == build(aa=AA, cdh=CDH).raw_bytes


def test_build_to_file_is_deterministic(
    capsysbinary: pytest.CaptureFixture[bytes], configs: Path
) -> None:
    outputs = []
    for name in ("one.toml", "two.toml"):
        code, _, err = run(
            capsysbinary,
            "build",
            "--aa",
            str(configs / "aa.toml"),
            "--cdh",
            str(configs / "cdh.toml"),
            "--policy",
            str(configs / "policy.rego"),
            "--algorithm",
            "sha384",
            "--out",
            str(configs / name),
        )
        assert code == 0
        outputs.append((configs / name).read_bytes())
    expected = build(aa=AA, cdh=CDH, policy="package agent_policy\n", algorithm="sha384")
    assert outputs == [expected.raw_bytes] * 2
    assert f"sha384 {expected.digest.hex()}" in err


def test_build_usage_errors(capsysbinary: pytest.CaptureFixture[bytes], configs: Path) -> None:
    usage(capsysbinary, "build", "--cdh", str(configs / "cdh.toml"))
    usage(
        capsysbinary,
        "build",
        "--aa",
        str(configs / "aa.toml"),
        "--cdh",
        str(configs / "cdh.toml"),
        "--algorithm",
        "sha-256",
    )
    usage(capsysbinary)


def test_build_refusals(capsysbinary: pytest.CaptureFixture[bytes], configs: Path) -> None:
    err = refused(
        capsysbinary,
        "build",
        "--aa",
        str(configs / "missing.toml"),
        "--cdh",
        str(configs / "cdh.toml"),
    )
    assert "missing.toml" in err
    (configs / "bad.toml").write_text("[kbc")
    err = refused(
        capsysbinary, "build", "--aa", str(configs / "aa.toml"), "--cdh", str(configs / "bad.toml")
    )
    assert "cdh.toml" in err


# --- digest -------------------------------------------------------------------------------


def test_digest_of_every_vector(capsysbinary: pytest.CaptureFixture[bytes], vectors: Path) -> None:
    derived = _derived(vectors)
    assert len(derived) == 4
    for name, entry in derived.items():
        code, out, _ = run(capsysbinary, "digest", str(vectors / "guest-components" / name))
        assert code == 0
        assert out.decode().splitlines() == [
            f"algorithm: {entry['algorithm']}",
            f"digest: {entry['digest_hex']}",
        ]


def test_digest_with_tee(capsysbinary: pytest.CaptureFixture[bytes], vectors: Path) -> None:
    for name, entry in _derived(vectors).items():
        path = str(vectors / "guest-components" / name)
        code, out, _ = run(capsysbinary, "digest", path, "--tee", "tdx")
        assert code == 0
        assert f"mrconfigid-base64: {entry['tdx_mrconfigid_48_b64']}" in out.decode().splitlines()
        if entry["algorithm"] == "sha256":
            code, out, _ = run(capsysbinary, "digest", path, "--tee", "snp")
            assert code == 0
            lines = out.decode().splitlines()
            assert f"hostdata-base64: {entry['snp_hostdata_32_b64']}" in lines
            assert f"hostdata: {entry['digest_hex']}" in lines
            code, out, _ = run(capsysbinary, "digest", path, "--tee", "tpm")
            assert code == 0 and out.decode().splitlines()[2].startswith("pcr8: ")
        else:
            err = refused(capsysbinary, "digest", path, "--tee", "snp")
            assert "sha384" in err and "HOST_DATA" in err
            err = refused(capsysbinary, "digest", path, "--tee", "tpm")
            assert "sha384" in err and "PCR8" in err


def test_digest_sha512_refused_for_tdx(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    path = tmp_path / "initdata.toml"
    path.write_bytes(build(aa=AA, algorithm="sha512").raw_bytes)
    err = refused(capsysbinary, "digest", str(path), "--tee", "tdx")
    assert "sha512" in err and "MRCONFIGID" in err


def test_digest_from_annotation_and_image(
    capsysbinary: pytest.CaptureFixture[bytes], vectors: Path, tmp_path: Path
) -> None:
    base = vectors / INITDATA
    entry = _derived(vectors)["initdata/kata-howto-policy-annotation.decoded.toml"]
    code, out, _ = run(
        capsysbinary,
        "digest",
        "--from",
        "annotation",
        str(base / "kata-howto-policy-annotation.b64"),
    )
    assert code == 0 and f"digest: {entry['digest_hex']}" in out.decode()
    image = tmp_path / "initdata.img"
    image.write_bytes(pack_image((base / "kata-howto-policy-annotation.decoded.toml").read_bytes()))
    code, out, _ = run(capsysbinary, "digest", "--from", "image", str(image))
    assert code == 0 and f"digest: {entry['digest_hex']}" in out.decode()


def test_digest_from_stdin(
    capsysbinary: pytest.CaptureFixture[bytes], vectors: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = (vectors / INITDATA / "kata-default-initdata.toml").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))
    code, out, _ = run(capsysbinary, "digest", "-")
    assert code == 0 and out.decode().splitlines()[1] == (
        "digest: 5fbba2d190b4c600dc48b80802559460ecae499f76f079e9ad2ebd4e3c7eb65f"
    )


def test_digest_refusals(capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path) -> None:
    refused(capsysbinary, "digest", str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    for text in (
        "not = = toml",
        'version = "0.2.0"\nalgorithm = "sha256"\n[data]\n',
        'version = "0.1.0"\nalgorithm = "sha-256"\n[data]\n',
        'version = "0.1.0"\nalgorithm = "sha256"\n[data]\nk = 1\n',
    ):
        bad.write_text(text)
        refused(capsysbinary, "digest", str(bad))
    usage(capsysbinary, "digest", str(bad), "--tee", "sample")
    usage(capsysbinary, "digest")


# --- annotation ---------------------------------------------------------------------------


def test_annotation_both_ways(capsysbinary: pytest.CaptureFixture[bytes], vectors: Path) -> None:
    for stem in ("kata-howto-policy-annotation", "website-runtime-attestation-annotation"):
        value = (vectors / INITDATA / f"{stem}.b64").read_text().strip()
        toml = vectors / INITDATA / f"{stem}.decoded.toml"
        code, out, _ = run(capsysbinary, "annotation", str(toml))
        assert code == 0 and out.endswith(b"\n")
        if STOCK_ZLIB:
            assert out.decode().strip() == value
        code, decoded, _ = run(capsysbinary, "annotation", "--decode", out.decode().strip())
        assert code == 0 and decoded == toml.read_bytes()
        code, decoded, _ = run(capsysbinary, "annotation", "--decode", value)
        assert code == 0 and decoded == toml.read_bytes()
        code, decoded, _ = run(
            capsysbinary, "annotation", "--decode", f"@{vectors / INITDATA / f'{stem}.b64'}"
        )
        assert code == 0 and decoded == toml.read_bytes()


def test_annotation_to_file(
    capsysbinary: pytest.CaptureFixture[bytes], vectors: Path, tmp_path: Path
) -> None:
    toml = vectors / INITDATA / "website-initdata-example.toml"
    out_file = tmp_path / "value.b64"
    code, out, _ = run(capsysbinary, "annotation", str(toml), "--out", str(out_file))
    assert code == 0 and out == b""
    decoded_file = tmp_path / "decoded.toml"
    # --output FILE, the former spelling of --out, is still accepted.
    code, _, _ = run(
        capsysbinary, "annotation", "--decode", f"@{out_file}", "--output", str(decoded_file)
    )
    assert code == 0 and decoded_file.read_bytes() == toml.read_bytes()


def test_annotation_refusals(capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path) -> None:
    refused(capsysbinary, "annotation", "--decode", "not base64!")
    refused(capsysbinary, "annotation", "--decode", "aGVsbG8=")  # base64 of "hello": no gzip
    refused(capsysbinary, "annotation", "--decode", f"@{tmp_path / 'missing'}")
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe")
    refused(capsysbinary, "annotation", "--decode", f"@{binary}")
    bad = tmp_path / "bad.toml"
    bad.write_text('version = "0.1.0"\nalgorithm = "sha-256"\n[data]\n')
    refused(capsysbinary, "annotation", str(bad))


def test_annotation_usage(capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path) -> None:
    usage(capsysbinary, "annotation")
    usage(capsysbinary, "annotation", str(tmp_path / "x.toml"), "--decode", "AAAA")


# --- image --------------------------------------------------------------------------------


def test_image_both_ways(
    capsysbinary: pytest.CaptureFixture[bytes], vectors: Path, tmp_path: Path
) -> None:
    toml = vectors / INITDATA / "website-runtime-attestation-annotation.decoded.toml"
    img = tmp_path / "initdata.img"
    code, _, err = run(capsysbinary, "image", str(toml), "--out", str(img))
    assert code == 0 and "wrote 512 bytes" in err
    assert unpack_image(img.read_bytes()) == toml.read_bytes()
    code, out, _ = run(capsysbinary, "image", "--decode", str(img))
    assert code == 0 and out == toml.read_bytes()


def test_image_refusals(
    capsysbinary: pytest.CaptureFixture[bytes], vectors: Path, tmp_path: Path
) -> None:
    # The kata test image holds "some content", which is not an init-data document.
    err = refused(
        capsysbinary,
        "image",
        "--decode",
        str(vectors / INITDATA / "kata-agent-testdata-initdata.img"),
    )
    assert "TOML" in err
    wrong = tmp_path / "wrong.img"
    wrong.write_bytes(b"notinit!" + bytes(504))
    refused(capsysbinary, "image", "--decode", str(wrong))
    truncated = tmp_path / "truncated.img"
    truncated.write_bytes(pack_image(b"x")[:20])
    refused(capsysbinary, "image", "--decode", str(truncated))
    refused(capsysbinary, "image", "--decode", str(tmp_path / "missing.img"))


def test_image_usage(capsysbinary: pytest.CaptureFixture[bytes], vectors: Path) -> None:
    err = usage(capsysbinary, "image", str(vectors / INITDATA / "kata-default-initdata.toml"))
    assert "--out" in err
    usage(capsysbinary, "image")


def test_no_traceback_from_the_installed_command(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "custodes", "initdata", "digest", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("custodes: error: ") and "Traceback" not in result.stderr
