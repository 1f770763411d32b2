"""Start-up: the parser is built from the command table, and a command's modules load only when
that command is named; its heavy dependencies only when it runs. Each case is a fresh
interpreter running the real entry point, which reports what it imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from custodes.cli import COMMANDS

# Importing any of these means the broker, the HTTP client or the crypto stack was loaded.
HEAVY = (
    "httpx",
    "cryptography",
    "starlette",
    "uvicorn",
    "regorus",
    "yaml",
    "psycopg",
    "sevsnpmeasure.guest",
    "tpm2_pytss",
    "custodes.kbs",
    "custodes.attestation.service",
    "custodes.attestation.verifiers.snp",
    "custodes.attestation.verifiers.tdx",
    "custodes.attestation.verifiers.tpm",
    "custodes.attestation.verifiers.azure",
    "custodes.admin_client",
    "custodes.guest.kbs_client",
)

PROBE = """
import json, sys
from custodes.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code
loaded = sorted(name for name, module in sys.modules.items() if module is not None)
print(json.dumps({"code": code, "modules": loaded}), file=sys.stderr)
"""


def _loaded(*argv: str) -> tuple[str, set[str]]:
    """stdout of ``custodes ARGV`` and every module it had imported when it was done."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=False
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["code"] == 0, done.stderr
    return done.stdout, set(report["modules"])


def _heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)}


def _command_modules(modules: set[str]) -> set[str]:
    return {module for module, _ in COMMANDS.values()} & modules


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_version_and_help_import_no_command_module(flag: str) -> None:
    _, modules = _loaded(flag)
    assert _command_modules(modules) == set()
    assert _heavy(modules) == set()


def test_help_lists_every_command() -> None:
    out, _ = _loaded("--help")
    for name, (_, help_text) in COMMANDS.items():
        assert f"    {name} " in out, name
        assert help_text.split()[0] in out, name


@pytest.mark.parametrize(
    ("argv", "module"),
    [
        (("guest", "get-resource", "--help"), "custodes.cli.guest"),
        (("run", "--help"), "custodes.cli.run"),
        (("serve", "--help"), "custodes.cli.serve"),
        (("admin", "resource", "list", "--help"), "custodes.cli.admin"),
        (("secret", "unseal", "--help"), "custodes.cli.secret"),
        (("dataset", "decrypt", "--help"), "custodes.cli.dataset"),
        (("initdata", "digest", "--help"), "custodes.cli.initdata"),
        (("completion", "--help"), "custodes.cli.completion"),
        (("evidence", "verify", "--help"), "custodes.cli.evidence"),
        (("rv", "snp-measurement", "--help"), "custodes.cli.rv"),
    ],
)
def test_command_help_imports_only_its_declarations(argv: tuple[str, ...], module: str) -> None:
    out, modules = _loaded(*argv)
    assert out.startswith(f"usage: custodes {' '.join(argv[:-1])}")
    assert _command_modules(modules) == {module}
    assert _heavy(modules) == set()


def test_httpx_command_line_client_is_not_imported() -> None:
    """httpx loads click/rich/pygments for its own CLI when they are installed; ours never
    needs them (measured at ~0.1 s of every networked command's start)."""
    probe = (
        "import custodes.cli, httpx, sys; "
        "print(sorted(m for m in ('rich', 'pygments', 'click') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_constants_declared_without_their_modules_match_them() -> None:
    """Two defaults are repeated in the declarations so that `--help` need not import
    cryptography; they must stay what the libraries use."""
    from custodes.cli import dataset, secret
    from custodes.datasets.format import DEFAULT_CHUNK_SIZE
    from custodes.sealed.keys import DEFAULT_KID

    assert secret.DEFAULT_KID == DEFAULT_KID
    assert dataset.DEFAULT_CHUNK_SIZE == DEFAULT_CHUNK_SIZE
