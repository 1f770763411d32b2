"""The package as a new user gets it: a wheel installed into an empty virtualenv, no extras.

README command 1 must work on a machine without any system library, so the core package may
depend on nothing that compiles against one. This test builds the wheel from the checkout,
installs it (with its pinned dependencies, from the package index) into a fresh virtualenv
that does not see this environment's packages, and runs the demo there. The TPM attester's
binding is the optional ``tpm`` extra: without it, a TPM command says which extra to install.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        argv, capture_output=True, text=True, timeout=900, check=False, **kwargs
    )


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fresh")
    dist = root / "dist"
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(REPO)]
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("custodes-*.whl")

    env_dir = root / "venv"
    venv.create(env_dir, with_pip=True, system_site_packages=False)
    python = env_dir / "bin" / "python"
    installed = _run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)]
    )
    assert installed.returncode == 0, installed.stderr
    return env_dir


def _clean_env() -> dict[str, str]:
    # Nothing of this environment's virtualenv may leak into the fresh one.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env.pop("CUSTODES_URL", None)
    env.pop("CUSTODES_ADMIN_KEY", None)
    return env


def test_the_core_package_installs_without_the_tpm_binding(fresh_venv: Path) -> None:
    probe = _run([str(fresh_venv / "bin" / "python"), "-c", "import tpm2_pytss"], env=_clean_env())
    assert probe.returncode != 0
    assert "No module named 'tpm2_pytss'" in probe.stderr


def test_the_demo_runs_from_a_wheel_without_extras(fresh_venv: Path, tmp_path: Path) -> None:
    demo = _run([str(fresh_venv / "bin" / "custodes"), "demo"], env=_clean_env(), cwd=tmp_path)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "received, decrypted inside the TEE: 'correct horse battery staple'" in demo.stdout
    assert "the guest is refused (401)" in demo.stdout
    assert "Traceback" not in demo.stderr


def test_a_tpm_command_names_the_missing_extra(fresh_venv: Path, tmp_path: Path) -> None:
    result = _run(
        [
            str(fresh_venv / "bin" / "custodes"),
            "guest",
            "attest",
            "--url",
            "http://127.0.0.1:9",
            "--tee",
            "tpm",
            "--tcti",
            "swtpm:host=127.0.0.1,port=9",
        ],
        env=_clean_env(),
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "custodes[tpm]" in lines[0]
