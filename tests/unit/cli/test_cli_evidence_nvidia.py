"""``custodes evidence verify --tee nvidia`` offline on upstream's recorded Hopper vectors,
through the real ``custodes`` entry point (pinned NVIDIA root, no network)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from custodes.cli import main
from custodes.cli._evidence_input import session_binding
from custodes.protocol.binding import HashAlgorithm, device_runtime_data_digest
from custodes.protocol.tee_key import TeeKeyPair
from nvidia_support import RECORDED_NONCE, evidence, recorded_chain, recorded_report

Run = tuple[int, str, str]


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


def _file(tmp_path: Path, chain: str = "hopper_cert_chain_case1.txt") -> Path:
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps(evidence(recorded_report(), recorded_chain(chain))))
    return path


def test_recorded_hopper_report_verifies_offline(cli: Any, tmp_path: Path) -> None:
    code, out, err = cli(
        "evidence", "verify", "--tee", "nvidia", "--report-data", RECORDED_NONCE.hex(),
        _file(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    gpu = result["claims"]["gpu0"]
    assert gpu["arch"] == "Hopper"
    assert gpu["config"]["driver_version"] == "550.90.07"
    assert gpu["config"]["vbios_version"] == "96.00.9f.00.01"
    assert len(gpu["measurements"]) == 64


def test_another_sessions_report_data_names_the_nonce_step(cli: Any, tmp_path: Path) -> None:
    code, out, err = cli(
        "evidence", "verify", "--tee", "nvidia", "--report-data", "00" * 48, _file(tmp_path)
    )  # fmt: skip
    assert code == 1
    assert out == ""
    assert "step report-data (binding-mismatch/nvidia-nonce, NonceMismatch)" in err


def test_missing_intermediate_names_the_chain_step(cli: Any, tmp_path: Path) -> None:
    code, _, err = cli(
        "evidence", "verify", "--tee", "nvidia", "--report-data", RECORDED_NONCE.hex(),
        _file(tmp_path, "hopper_cert_chain_case3.txt"),
    )  # fmt: skip
    assert code == 1
    assert "step certificate-chain (chain-invalid/nvidia-device-chain" in err
    assert "Traceback" not in err


def test_nonce_and_key_bind_the_device_digest_not_the_cpu_one() -> None:
    jwk = TeeKeyPair.generate().public_jwk()
    args = argparse.Namespace(
        tee="nvidia",
        report_data=None,
        nonce="b0RqzzQRaIg2m9Ds9IzjPRWMuPyKLEBtfAbI8hBxcFc",
        tee_pubkey=json.dumps(jwk),
        hash=None,
        additional_evidence=None,
    )
    digest, _ = session_binding(args)
    assert digest == device_runtime_data_digest(args.nonce, jwk, HashAlgorithm.SHA384)
