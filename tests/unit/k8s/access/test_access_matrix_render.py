"""The access matrix's four formats, their escaping, and the `access-matrix` command."""

from __future__ import annotations

import argparse
import base64
import json
import stat
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from custodes.cli._parser import CommandParser
from custodes.cli.access import register_access_matrix
from custodes.errors import ConfigError
from custodes.k8s.access.analysis import build_matrix
from custodes.k8s.access.model import Matrix, MatrixOptions
from custodes.k8s.access.render import FORMATS, md, render, render_table
from custodes.sealed.keys import generate_signing_key
from custodes.sealed.payload import VaultPayload
from custodes.sealed.seal import seal

VECTORS = Path(__file__).resolve().parents[3] / "vectors" / "access-matrix"
AFTER = VECTORS / "after.yaml"
BEFORE = VECTORS / "before.yaml"
HOSTILE = "<img src=x onerror=alert(1)>|`*_[x](y)#\\"


@pytest.fixture(scope="module")
def after() -> Matrix:
    return build_matrix([AFTER])


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    """A cluster whose User name and sealed resource URI try to break out of the output."""
    sealed = seal(VaultPayload(name=f"kbs:///a/b/{HOSTILE}"), generate_signing_key(), "k")
    doc = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "kind": "Secret",
                "metadata": {"name": "s", "namespace": "ns"},
                "data": {
                    "plain": base64.b64encode(b"value-never-printed").decode(),
                    "sealed": base64.b64encode(sealed.encode()).decode(),
                },
            },
            {
                "kind": "Pod",
                "metadata": {"name": "p", "namespace": "ns"},
                "spec": {"containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "s"}}]}]},
            },
            {
                "kind": "ClusterRole",
                "metadata": {"name": "r"},
                "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
            },
            {
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "b"},
                "roleRef": {"kind": "ClusterRole", "name": "r"},
                "subjects": [{"kind": "User", "name": HOSTILE}],
            },
        ],
    }
    path = tmp_path / "hostile.yaml"
    path.write_text(json.dumps(doc))  # JSON is YAML
    return path


# --- formats ------------------------------------------------------------------------------


def test_table(after: Matrix) -> None:
    text = render(after, "table")
    assert "[2] trading/api-key[token]: sealed -> kbs:///trading/exchange/api-token" in text
    header = next(line for line in text.splitlines() if line.startswith("principal"))
    assert [c.strip() for c in header.split(" | ")] == ["principal", "[1]", "[2]", "[3]", "[4]"]
    row = next(line for line in text.splitlines() if line.startswith("cluster admin"))
    assert [c.strip() for c in row.split(" | ")] == [
        "cluster admin",
        "plaintext via secrets/get",
        "sealed: TEE only",
        "sealed: TEE only",
        "sealed: TEE only",
    ]
    assert "summary:" in text and "assumptions:" in text
    assert "warnings:" not in text  # the example cluster is clean


def test_table_clips_long_cells() -> None:
    m = build_matrix([BEFORE])
    row = next(
        line for line in render(m, "table").splitlines() if line.startswith("User:release-bot")
    )
    assert "plaintext via impersonate -> deployments/create" in row
    narrow = render_table(m, cell_width=12)
    row = next(line for line in narrow.splitlines() if line.startswith("User:release-bot"))
    assert "plaintext v~" in row


def test_json_is_the_whole_matrix(after: Matrix) -> None:
    doc = json.loads(render(after, "json"))
    assert doc["format"] == "custodes-access-matrix/1"
    assert len(doc["cells"]) == len(after.principals) * len(after.secrets)
    cell = next(
        c
        for c in doc["cells"]
        if c["principal"] == "role:workload-admin:trading"
        and c["secret"] == "trading/db-credentials[password]"
    )
    assert cell["status"] == "plaintext" and cell["label"] == "plaintext via broker"
    assert cell["paths"][0]["via"] == "broker" and cell["paths"][0]["chain"] == []
    admin = next(
        c
        for c in doc["cells"]
        if c["principal"] == "role:cluster-admin" and c["secret"] == "trading/api-key[token]"
    )
    assert admin["status"] == "sealed" and admin["paths"] == []
    reasons = {b["via"]: b["blocked"] for b in admin["blocked"]}
    assert reasons["node-memory"] == "TEE memory is encrypted"
    secrets = {s["id"]: s for s in doc["secrets"]}
    assert secrets["trading/api-key[token]"]["kind"] == "sealed"
    assert secrets["ingress-system/ingress-tls"]["keys"] == ["tls.crt", "tls.key"]
    assert doc["summary"] == list(after.summary)


def test_json_chains_name_each_step() -> None:
    doc = json.loads(render(build_matrix([BEFORE]), "json"))
    cell = next(
        c
        for c in doc["cells"]
        if c["principal"] == "User:release-bot" and c["secret"] == "trading/api-key"
    )
    (path,) = cell["paths"]
    assert [s["step"] for s in path["chain"]] == ["impersonate"]
    assert "serviceaccounts 'deployer' in ci" in path["chain"][0]["detail"]
    assert path["via"] == "deployments/create"


def test_markdown(after: Matrix) -> None:
    text = render(after, "markdown")
    assert text.startswith("# Access matrix")
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| principal |"))
    assert header.count("|") == len(after.secrets) + 2
    assert "| cluster admin | plaintext via secrets/get | sealed: TEE only |" in text
    assert "### workload admin (trading)" in text
    assert "TEE memory is encrypted" in text


def test_reports_show_a_varied_few_paths_per_cell(after: Matrix) -> None:
    text = render(after, "markdown")
    section = text[text.index("### cluster admin") : text.index("### workload admin")]
    first_cell = section.split("- **")[2]  # the first sealed cell
    shown = [line for line in first_cell.splitlines() if line.startswith("  - ")]
    assert len(shown) == 7 and shown[-1].endswith("more (--format json lists every path)")
    # One secrets/* path only among those shown, then other kinds.
    assert sum("secrets/" in line.split(":")[0] for line in shown) == 1
    assert "the JSON format lists every path" in render(after, "html")


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_is_one_self_contained_page(after: Matrix) -> None:
    page = render(after, "html")
    parser = _Collector()
    parser.feed(page)
    assert page.startswith("<!DOCTYPE html>")
    assert "script" not in parser.tags and "link" not in parser.tags and "img" not in parser.tags
    assert all(name in ("lang", "charset", "class") for name, _ in parser.attrs)
    assert parser.tags.count("td") == len(after.principals) * len(after.secrets)
    assert "sealed: TEE only" in "".join(parser.text)


def test_unknown_format_is_refused(after: Matrix) -> None:
    with pytest.raises(ValueError, match="format"):
        render(after, "pdf")  # type: ignore[arg-type]


# --- escaping and secrecy -----------------------------------------------------------------


def test_markdown_escapes_hostile_names(hostile: Path) -> None:
    text = render(build_matrix([hostile]), "markdown")
    assert "<img" not in text
    assert md(HOSTILE) in text
    row = next(line for line in text.splitlines() if line.startswith("| User:"))
    # Only the real separators are unescaped pipes.
    assert row.replace("\\|", "").count("|") == 1 + 3


def test_html_escapes_hostile_names(hostile: Path) -> None:
    page = render(build_matrix([hostile]), "html")
    parser = _Collector()
    parser.feed(page)
    assert "img" not in parser.tags and "script" not in parser.tags
    assert f"User:{HOSTILE}" in "".join(parser.text)


def test_json_keeps_hostile_names_as_data(hostile: Path) -> None:
    doc = json.loads(render(build_matrix([hostile]), "json"))
    assert f"User:{HOSTILE}" in {p["id"] for p in doc["principals"]}


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_format_prints_a_secret_value(hostile: Path, fmt: Any) -> None:
    text = render(build_matrix([hostile]), fmt)
    assert "value-never-printed" not in text
    assert "sealed.ey" not in text  # nor the sealed string itself


def test_md_escape() -> None:
    assert md("a|b") == "a\\|b"
    assert md("<x>&") == "&lt;x&gt;&amp;"
    assert md("line\nbreak") == "line break"


# --- the command --------------------------------------------------------------------------


def command(*argv: str) -> argparse.Namespace:
    parser: argparse.ArgumentParser = CommandParser(prog="custodes audit")
    register_access_matrix(parser.add_subparsers(dest="action", required=True))
    return parser.parse_args(["access-matrix", *argv])


def test_command_prints_the_table(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    args = command("--rbac", str(BEFORE), "--workloads", str(AFTER))
    assert args.func(args) == 0
    out = capsysbinary.readouterr().out.decode()
    assert out.startswith("Access matrix") and "cluster admin" in out


def test_command_writes_a_file(tmp_path: Path) -> None:
    out = tmp_path / "matrix.html"
    args = command("--rbac", str(AFTER), "-o", "html", "--out", str(out))
    assert args.func(args) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_command_options_reach_the_analysis(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    args = command(
        "--workloads",
        str(AFTER),
        "--output",
        "json",
        "--confidential-cluster",
        "--broker",
        "https://broker.example",
        "--workload-namespace",
        "trading",
        "--tee-runtime-class",
        "kata-qemu-snp",
    )
    assert args.func(args) == 0
    doc = json.loads(capsysbinary.readouterr().out)
    roles = [p["id"] for p in doc["principals"] if p["kind"] == "role"]
    assert roles == [
        "role:infrastructure-admin",
        "role:cluster-admin",
        "role:workload-admin:trading",
    ]
    assert doc["summary"][0].startswith("infrastructure admin: can obtain 0 of 4")
    assert any("kata-qemu-snp (the name" in a for a in doc["assumptions"])
    assert any("--broker https://broker.example" in a for a in doc["assumptions"])


def test_command_tee_class_list_replaces_the_default(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    args = command("--rbac", str(AFTER), "--format", "json", "--tee-runtime-class", "kata-cc")
    assert args.func(args) == 0
    doc = json.loads(capsysbinary.readouterr().out)
    (engine,) = [w for w in doc["workloads"] if w["id"].startswith("trading/")]
    assert engine["tee"] is False


def test_command_needs_input() -> None:
    args = command()
    with pytest.raises(ConfigError):
        args.func(args)


def test_command_refuses_a_bad_broker(tmp_path: Path) -> None:
    args = command("--rbac", str(AFTER), "--broker", str(tmp_path / "nope"))
    with pytest.raises(ConfigError):
        args.func(args)


def test_command_refuses_an_empty_tee_class() -> None:
    args = command("--rbac", str(AFTER), "--tee-runtime-class", "")
    with pytest.raises(ConfigError):
        args.func(args)


def test_command_refuses_a_bad_format(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        command("--rbac", str(AFTER), "--format", "pdf")
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_help_says_live_clusters_are_not_read(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        command("--help")
    text = capsys.readouterr().out
    assert "kubeconfig is not supported" in text
    assert "kubectl get clusterroles,clusterrolebindings,roles,rolebindings,pods,secrets" in text


def test_default_options_are_the_documented_ones() -> None:
    assert MatrixOptions().confidential_cluster is False
    assert "kata-qemu-snp" in MatrixOptions().tee_runtime_classes
