"""``custodes rv nvidia-rim`` offline, through the real ``custodes`` entry point, on upstream's
recorded NVIDIA RIM (pinned NVIDIA RIM root, no network). Registering through a broker is
tested in tests/integration/test_gpu_rim.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from custodes.cli import main
from custodes.rvps.messages import parse_message
from nvidia_rim_support import RIM_VALID_AT, RIM_VECTOR, derived_rims, recorded_rim

Run = tuple[int, str, str]
AT = "2024-06-01T00:00:00Z"


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    def run(*argv: str | Path) -> Run:
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:
            code = int(e.code) if isinstance(e.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_recorded_rim_as_base64_checks_out(cli: Any) -> None:
    code, out, err = cli("rv", "nvidia-rim", "--at", AT, "-o", "json", RIM_VECTOR)
    assert code == 0, err
    data = json.loads(out)
    assert (data["component"], data["version"], data["product"]) == (
        "vbios",
        "96.00.74.00.1C",
        "GH100",
    )
    assert data["valid_until"] == "2025-12-04T08:02:39Z"
    assert sorted(data["measurements"], key=int)[:3] == ["1", "2", "3"]  # report indices
    assert "nvidia_rim/vbios/96.00.74.00.1c" in data["reference_values"]


def test_recorded_rim_as_xml_in_a_table(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "rim.swidtag"
    path.write_bytes(recorded_rim())
    code, out, err = cli("rv", "nvidia-rim", "--at", AT, path)
    assert code == 0, err
    assert out.startswith("NVIDIA vbios RIM 96.00.74.00.1C for GH100: signature and chain")
    assert "12 active measurements" in out


def test_out_writes_the_swid_message(cli: Any, tmp_path: Path) -> None:
    target = tmp_path / "message.json"
    code, _, err = cli("rv", "nvidia-rim", "--at", AT, "--out", target, RIM_VECTOR)
    assert code == 0, err
    message = json.loads(target.read_text())
    assert message["type"] == "swid"
    names = {rv.name for rv in parse_message(message, now=RIM_VALID_AT)}
    assert "nvidia_rim/vbios/96.00.74.00.1c" in names


def test_expired_rim_is_one_line_error_and_writes_nothing(cli: Any, tmp_path: Path) -> None:
    target = tmp_path / "message.json"
    code, out, err = cli("rv", "nvidia-rim", "--out", target, RIM_VECTOR)  # today's clock
    assert code == 1 and out == ""
    assert err.startswith("custodes: error: the RIM's certificate 'HCC RIM L4 Signer' is outside")
    assert len(err.strip().splitlines()) == 1
    assert not target.exists()


def test_rim_signed_by_another_ca_refused(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "derived.swidtag"
    path.write_bytes(derived_rims()[0])
    code, _, err = cli("rv", "nvidia-rim", path)
    assert code == 1
    assert "not at the pinned NVIDIA RIM root" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"not a rim", "neither XML nor standard base64"), (b"<a/>", "not a SWID SoftwareIdentity")],
)
def test_bad_file_is_one_line_error(cli: Any, tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "rim"
    path.write_bytes(content)
    code, _, err = cli("rv", "nvidia-rim", path)
    assert code == 1 and message in err and "Traceback" not in err


def test_missing_file_and_bad_time(cli: Any, tmp_path: Path) -> None:
    code, _, err = cli("rv", "nvidia-rim", tmp_path / "absent")
    assert code == 1 and "cannot read RIM" in err
    code, _, err = cli("rv", "nvidia-rim", "--at", "yesterday", RIM_VECTOR)
    assert code == 2 and "--at:" in err
