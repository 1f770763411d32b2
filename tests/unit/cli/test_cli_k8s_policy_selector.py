"""`custodes k8s pod --policy-selector`: the selector goes where the pod's guest reads it, in
the init-data's ``aa.toml`` (upstream's ``[token_configs.kbs] attestation_policy_selector``)
and, with ``--entrypoint-wrap``, on the ``custodes run`` command line."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from custodes.cli import build_parser, main
from custodes.initdata.encoding import ANNOTATION_KEY, decode_annotation
from custodes.k8s.yamlio import load_documents

BROKER = "https://broker.bank.example:8443"
POD = (
    "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
    "spec: {containers: [{name: app, image: 'app:1', command: [./serve]}]}\n"
)


def pod(tmp_path: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(POD)
    code = main(["k8s", "pod", "-f", str(manifest), "--broker-url", BROKER, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_selector_is_in_the_init_data_and_on_custodes_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = pod(
        tmp_path, capsys, "--policy-selector", "confidential-ai", "--entrypoint-wrap"
    )
    assert code == 0, err
    (manifest,) = load_documents(out)
    init_data = decode_annotation(manifest["metadata"]["annotations"][ANNOTATION_KEY])
    aa = tomllib.loads(init_data.data["aa.toml"])
    assert aa["token_configs"]["kbs"] == {
        "url": BROKER,
        "attestation_policy_selector": "confidential-ai",
    }
    command = manifest["spec"]["containers"][0]["command"]
    assert command == [
        "custodes", "run", "--url", BROKER, "--policy-selector", "confidential-ai", "--",
        "./serve",
    ]  # fmt: skip
    # The wrapped command line is one `custodes run` reads back as written.
    args = build_parser("run").parse_args(command[1:])
    assert (args.url, args.policy_selector, args.command) == (
        BROKER,
        "confidential-ai",
        ["--", "./serve"],
    )


def test_without_a_selector_nothing_is_added(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = pod(tmp_path, capsys, "--entrypoint-wrap")
    assert code == 0, err
    (manifest,) = load_documents(out)
    init_data = decode_annotation(manifest["metadata"]["annotations"][ANNOTATION_KEY])
    assert "attestation_policy_selector" not in init_data.data["aa.toml"]
    assert "--policy-selector" not in manifest["spec"]["containers"][0]["command"]


def test_a_bad_selector_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = pod(tmp_path, capsys, "--policy-selector", 'x"\n[evil]')
    assert code == 1 and out == ""
    [line] = err.strip().splitlines()
    assert line.startswith("custodes: error: --policy-selector: 'x\"\\n[evil]' is not a valid")
