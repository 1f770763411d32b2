"""The conventions every command follows, checked over the whole parser and through the real
CLI: examples in every leaf's help, one `-o table|json|yaml` flag for printed data, `--out
FILE` for written files, one name per concept, CUSTODES_CACERT, shell completion, and
libtss2's own error lines kept quiet unless -v."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from custodes.cli import COMMANDS, build_parser, main
from custodes.cli._output import render, rfc3339, table
from custodes.cli._parser import subcommands, walk
from custodes.cli.completion import bash_script, commands, fish_script, zsh_script
from live_broker import LiveBroker

PARSER = build_parser()
LEAVES = {
    " ".join(path): parser for path, parser in walk(PARSER) if path and not subcommands(parser)
}

# Commands that print data: each takes -o/--output FORMAT.
DATA_COMMANDS = (
    "admin resource list",
    "admin resource get-info",
    "admin policy get",
    "admin policy versions",
    "admin denial",
    "admin reference-value get",
    "admin reference-value list",
    "initdata digest",
    "secret inspect",
    "dataset inspect",
    "evidence verify",
    "policy test",
    "audit access-matrix",
    "k8s webhook check-config",
    "k8s secret",
    "k8s pod",
    "rv nvidia-rim",
)
# Commands that write a file: --out FILE, and --output FILE (hidden) where -o is not a format.
FILE_COMMANDS = (
    "guest get-resource",
    "admin audit export",
    "admin audit public-key",
    "initdata build",
    "initdata annotation",
    "initdata image",
    "secret unseal",
)


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return parser._option_string_actions.get(flag)


def _shown(parser: argparse.ArgumentParser) -> set[str]:
    """The option strings a user sees in --help."""
    return {
        flag
        for action in parser._actions
        if action.help != argparse.SUPPRESS
        for flag in action.option_strings
    }


# --- examples ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(LEAVES))
def test_every_leaf_has_examples_of_itself(path: str) -> None:
    help_text = LEAVES[path].format_help()
    assert "\nExamples:\n  " in help_text, path
    block = help_text.split("\nExamples:\n", 1)[1]
    words = path.split()
    # An indented example line that runs this very command (options may come between).
    rest = rf".*\b{re.escape(words[-1])}\b" if len(words) > 1 else ""
    pattern = rf"^\s+.*(^|[\s(])custodes {re.escape(words[0])}\b{rest}"
    assert re.search(pattern, block, re.MULTILINE), (path, block)


def test_examples_keep_their_lines_and_prose_is_wrapped() -> None:
    help_text = LEAVES["guest get-resource"].format_help()
    assert (
        "  custodes guest get-resource --url https://broker:8080 --cacert ca.pem "
        "kbs:///default/key/db-password\n" in help_text
    )
    run_help = LEAVES["run"].format_help()
    assert max(len(line) for line in run_help.split("\nExamples:")[0].splitlines()) <= 100


# --- -o FORMAT and --out FILE -----------------------------------------------------------------


@pytest.mark.parametrize("path", DATA_COMMANDS)
def test_data_commands_take_the_same_output_flag(path: str) -> None:
    parser = LEAVES[path]
    action = _option(parser, "-o")
    assert action is not None and action.option_strings == ["-o", "--output"], path
    assert action.dest == "output_format" and action.metavar == "FORMAT"
    assert action.choices is not None and action.default in action.choices
    assert set(action.choices) <= {"table", "json", "yaml", "markdown", "html"}
    assert "--json" not in _shown(parser) and "--format" not in _shown(parser)


def test_no_other_meaning_of_o_or_output() -> None:
    for path, parser in LEAVES.items():
        for flag in ("-o", "--output"):
            action = _option(parser, flag)
            if action is None or action.help == argparse.SUPPRESS:
                continue
            assert action.dest == "output_format", (path, flag)


@pytest.mark.parametrize("path", FILE_COMMANDS)
def test_file_commands_take_out(path: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = LEAVES[path]
    out = _option(parser, "--out")
    legacy = _option(parser, "--output")
    assert out is not None and out.dest == "output" and out.metavar == "FILE"
    assert legacy is not None and legacy.dest == "output" and legacy.help == argparse.SUPPRESS
    assert "--out" in _shown(parser) and "--output" not in _shown(parser)
    with pytest.raises(SystemExit) as done:
        main([*path.split(), "-o", "file.bin"])
    assert done.value.code == 2
    assert "-o chooses an output format; write to a file with --out FILE" in (
        capsys.readouterr().err
    )


def test_table_rendering() -> None:
    rows = [{"version": 1, "active": False}, {"version": 12, "active": True, "note": None}]
    assert table(rows).splitlines() == [
        "VERSION  ACTIVE  NOTE",
        "1        no      -",
        "12       yes     -",
    ]
    assert table({"path": "default/key/a", "size": 3}).splitlines() == [
        "path  default/key/a",
        "size  3",
    ]
    assert table(["a", "b"]) == "a\nb"
    assert table([]) == ""
    assert table({"nested": {"b": 1, "a": [1, 2]}}) == 'nested  {"a":[1,2],"b":1}'


def test_json_and_yaml_are_stable_and_the_same_data() -> None:
    data = {"b": [1, {"z": None, "y": True}], "a": "é"}
    text = render(data, "json")
    assert text == render({"a": "é", "b": [1, {"y": True, "z": None}]}, "json")
    assert text.index('"a"') < text.index('"b"')
    assert json.loads(text) == data
    assert yaml.safe_load(render(data, "yaml")) == data


def test_times_are_rfc3339_utc() -> None:
    assert rfc3339(1796626800) == "2026-12-07T07:00:00Z"
    assert rfc3339(1796626800.9) == "2026-12-07T07:00:00Z"
    assert rfc3339(0) == "1970-01-01T00:00:00Z"


def test_admin_data_in_every_format(
    broker: LiveBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = ["admin", "--url", broker.url, "--key", str(broker.data_dir / "admin-key.pem")]
    value = tmp_path / "value"
    value.write_bytes(b"12345")
    assert main([*admin, "resource", "put", "default/key/b", "--file", str(value)]) == 0
    assert main([*admin, "resource", "put", "default/key/a", "--value", "x"]) == 0
    capsys.readouterr()

    def out(*argv: str) -> str:
        assert main([*admin, *argv]) == 0
        return capsys.readouterr().out

    assert out("resource", "list") == "default/key/a\ndefault/key/b\n"
    assert json.loads(out("resource", "list", "-o", "json")) == ["default/key/a", "default/key/b"]
    assert yaml.safe_load(out("resource", "list", "--output", "yaml")) == [
        "default/key/a",
        "default/key/b",
    ]
    updated = datetime.fromtimestamp(int(broker.clock.now()), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    info = json.loads(out("resource", "get-info", "default/key/b", "-o", "json"))
    assert info == {"path": "default/key/b", "size": 5, "updated": updated}
    assert out("resource", "get-info", "default/key/b") == (
        f"path     default/key/b\nsize     5\nupdated  {updated}\n"
    )
    svn = yaml.safe_load(out("reference-value", "get", "svn", "-o", "yaml"))
    assert svn["name"] == "svn" and svn["value"] == ["1"]
    assert "svn" in json.loads(out("reference-value", "list", "-o", "json"))
    policy = json.loads(out("policy", "get", "--kind", "resource", "-o", "json"))
    assert policy["kind"] == "resource" and "package policy" in policy["policy"]
    assert out("policy", "get", "--kind", "resource") == policy["policy"]


# --- one name per concept ---------------------------------------------------------------------


def test_the_audit_key_has_one_name() -> None:
    verify = LEAVES["audit verify"]
    assert "--audit-key" in _shown(verify) and "--public-key" not in _shown(verify)
    legacy = _option(verify, "--public-key")
    assert legacy is not None and legacy.dest == "audit_key"
    assert "--audit-key" in _shown(LEAVES["policy test"])
    args = build_parser("audit").parse_args(["audit", "verify", "x.jsonl", "--public-key", "k"])
    assert args.audit_key == [Path("k")]


# --- CUSTODES_CACERT --------------------------------------------------------------------------


def test_every_cacert_option_reads_the_environment() -> None:
    every = {" ".join(path): parser for path, parser in walk(PARSER)}
    with_cacert = {path for path, p in every.items() if _option(p, "--cacert") is not None}
    assert {"guest attest", "guest get-resource", "run", "admin", "k8s secret"} <= with_cacert
    for path in with_cacert:
        action = _option(every[path], "--cacert")
        assert action is not None and "CUSTODES_CACERT" in str(action.help), path


def _cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "custodes", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_cacert_from_the_environment(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    argv = ("guest", "attest", "--url", "https://127.0.0.1:9", "--tee", "sample")
    used = _cli(*argv, env={"CUSTODES_CACERT": str(junk)})
    assert used.returncode == 1
    # The file named by the variable was used: its contents are refused, by name.
    assert used.stderr.splitlines()[-1].startswith("custodes: error: ")
    assert str(junk) in used.stderr or "NO_CERTIFICATE" in used.stderr
    environ = {k: v for k, v in os.environ.items() if k != "CUSTODES_CACERT"}
    plain = subprocess.run(
        [sys.executable, "-m", "custodes", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        check=False,
    )
    assert plain.returncode == 1 and "cannot reach" in plain.stderr
    # The option still wins over the environment.
    chosen = _cli(
        *argv, "--cacert", str(tmp_path / "absent.pem"), env={"CUSTODES_CACERT": str(junk)}
    )
    assert chosen.returncode == 1 and str(junk) not in chosen.stderr
    assert "NO_CERTIFICATE" not in chosen.stderr
    assert "absent.pem" in chosen.stderr or "No such file" in chosen.stderr


def test_cacert_from_the_environment_is_not_a_usage_error(tmp_path: Path) -> None:
    """`dataset decrypt --key-file` refuses --cacert (it goes with --url), but not a
    CUSTODES_CACERT that the shell sets for every command."""
    key = tmp_path / "data.key"
    plain = tmp_path / "plain.txt"
    plain.write_text("rows\n")
    assert _cli("dataset", "keygen", "--out", str(key)).returncode == 0
    sealed = tmp_path / "plain.txt.cdx"
    kid = "kbs:///default/dataset/k"
    encrypted = _cli(
        "dataset", "encrypt", "--key-file", str(key), "--key-id", kid, str(plain), str(sealed)
    )
    assert encrypted.returncode == 0, encrypted.stderr
    env = {"CUSTODES_CACERT": str(tmp_path / "ca.pem")}
    back = tmp_path / "back.txt"
    done = _cli("dataset", "decrypt", "--key-file", str(key), str(sealed), str(back), env=env)
    assert done.returncode == 0, done.stderr
    assert back.read_text() == "rows\n"
    given = _cli(
        "dataset", "decrypt", "--key-file", str(key), "--cacert", "other.pem", str(sealed),
        str(tmp_path / "again.txt"), env=env,
    )  # fmt: skip
    assert given.returncode == 1 and "--cacert" in given.stderr


# --- libtss2's log ----------------------------------------------------------------------------


def test_libtss2_lines_only_with_verbose(broker: LiveBroker) -> None:
    argv = ("guest", "attest", "--url", broker.url, "--tee", "tpm", "--tcti", "device:/dev/none")
    environ = {k: v for k, v in os.environ.items() if k != "TSS2_LOG"}
    quiet = subprocess.run(
        [sys.executable, "-m", "custodes", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        check=False,
    )
    assert quiet.returncode == 1
    assert quiet.stderr.splitlines() == [
        "custodes: error: cannot open the TPM at 'device:/dev/none': tcti:IO failure"
    ]
    verbose = subprocess.run(
        [sys.executable, "-m", "custodes", "-v", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        check=False,
    )
    assert verbose.returncode == 1 and "ERROR:tcti:" in verbose.stderr


def test_libtss2_setting_stays_out_of_the_workload() -> None:
    """`custodes run` execs the workload with its own environment, not custodes' setting."""
    environ = {k: v for k, v in os.environ.items() if k != "TSS2_LOG"}
    argv = ("run", "--url", "http://127.0.0.1:9", "--tee", "sample", "--", "/usr/bin/env")
    done = subprocess.run(
        [sys.executable, "-m", "custodes", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "PATH=" in done.stdout and "TSS2_LOG" not in done.stdout
    kept = _cli(*argv, env={"TSS2_LOG": "all+debug"})
    assert kept.returncode == 0 and "TSS2_LOG=all+debug\n" in kept.stdout


# --- completion -------------------------------------------------------------------------------


def test_bash_completion_is_valid_and_complete(tmp_path: Path) -> None:
    done = _cli("completion", "bash")
    assert done.returncode == 0
    script = tmp_path / "custodes.bash"
    script.write_text(done.stdout)
    subprocess.run(["bash", "-n", str(script)], check=True)
    for name in COMMANDS:
        assert re.search(rf"\b{name}\b", done.stdout.splitlines()[2]), name

    def complete(*words: str) -> list[str]:
        probe = (
            f"source {script}; COMP_WORDS=(custodes {' '.join(words)}); "
            f"COMP_CWORD={len(words)}; _custodes; printf '%s\\n' \"${{COMPREPLY[@]}}\""
        )
        result = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True)
        return result.stdout.split()

    assert complete("adm") == ["admin"]
    assert complete("admin", "resource", "") == ["put", "get-info", "delete", "list"]
    assert complete("admin", "--url", "x", "policy", "set", "--kind", "") == [
        "attestation",
        "resource",
    ]
    assert complete("admin", "resource", "list", "-o", "") == ["table", "json", "yaml"]
    assert complete("guest", "get-resource", "--ou") == ["--out"]  # --output is hidden


def test_zsh_and_fish_scripts_cover_every_command() -> None:
    paths = {c.path for c in commands(PARSER)}
    assert set(LEAVES) <= paths
    zsh = zsh_script(PARSER)
    assert "bashcompinit" in zsh and bash_script(PARSER) in zsh
    fish = fish_script(PARSER).splitlines()
    for path in LEAVES:
        condition = f"complete -c custodes -n 'test (__custodes_path) = \"{path}\"'"
        assert any(line.startswith(condition) for line in fish), path
    get_resource = [line for line in fish if '= "guest get-resource"' in line]
    assert any(line.endswith("-l out -r -F") for line in get_resource)
    assert not any("-l output" in line for line in get_resource)  # hidden former spelling
    assert any(line.endswith("-l via -x -a 'bearer cookie'") for line in get_resource)
