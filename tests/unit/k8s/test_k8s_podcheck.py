"""The rules of a confidential namespace, one negative test per rule and per Secret path."""

from __future__ import annotations

from pathlib import Path

import pytest

from custodes.initdata.build import build
from custodes.initdata.encoding import ANNOTATION_KEY, encode_annotation
from custodes.k8s.guestconfig import broker_initdata, normalize_url
from custodes.k8s.podcheck import PodRules, check_pod, pod_warnings, secret_reads
from custodes.k8s.yamlio import load_documents
from custodes.types.json import JsonObject
from k8s_helpers import make_pod

BROKER = "https://broker.bank.example:8443"
RULES = PodRules(
    tenant="bank",
    brokers=frozenset({normalize_url(BROKER)}),
    sealed_secrets=frozenset({"sealed-db"}),
)


def _good(**spec: object) -> JsonObject:
    pod = make_pod(runtimeClassName="kata-qemu-snp", **spec)
    pod["metadata"]["annotations"] = {ANNOTATION_KEY: encode_annotation(broker_initdata(BROKER))}
    return pod


def test_good_pod_passes() -> None:
    pod = _good(volumes=[{"name": "v", "secret": {"secretName": "sealed-db"}}])
    assert check_pod(pod, RULES) == []


def test_every_secret_path_is_found() -> None:
    spec = {
        "initContainers": [
            {
                "name": "init",
                "envFrom": [{"configMapRef": {"name": "c"}}, {"secretRef": {"name": "s1"}}],
            }
        ],
        "containers": [
            {
                "name": "app",
                "env": [
                    {"name": "PLAIN", "value": "x"},
                    {"name": "DB", "valueFrom": {"secretKeyRef": {"name": "s2", "key": "k"}}},
                    {"name": "CM", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
                ],
            }
        ],
        "ephemeralContainers": [
            {
                "name": "dbg",
                "env": [{"name": "E", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "k"}}}],
            }
        ],
        "volumes": [
            {"name": "v1", "secret": {"secretName": "s4"}},
            {
                "name": "v2",
                "projected": {
                    "sources": [{"configMap": {"name": "c"}}, {"secret": {"name": "s5"}}]
                },
            },
            {"name": "v3", "emptyDir": {}},
        ],
    }
    reads = secret_reads(spec)
    assert [(r.path, r.secret) for r in reads] == [
        ("spec.initContainers[0].envFrom[1].secretRef", "s1"),
        ("spec.containers[0].env[1].valueFrom.secretKeyRef", "s2"),
        ("spec.ephemeralContainers[0].env[0].valueFrom.secretKeyRef", "s3"),
        ("spec.volumes[0].secret", "s4"),
        ("spec.volumes[1].projected.sources[1].secret", "s5"),
    ]
    assert reads[1].how == 'variable "DB" of container "app"'


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        (
            {
                "containers": [
                    {
                        "name": "a",
                        "image": "i",
                        "env": [
                            {
                                "name": "X",
                                "valueFrom": {"secretKeyRef": {"name": "plain", "key": "k"}},
                            }
                        ],
                    }
                ]
            },
            "spec.containers[0].env[0].valueFrom.secretKeyRef",
        ),
        (
            {
                "containers": [
                    {"name": "a", "image": "i", "envFrom": [{"secretRef": {"name": "plain"}}]}
                ]
            },
            "spec.containers[0].envFrom[0].secretRef",
        ),
        ({"volumes": [{"name": "v", "secret": {"secretName": "plain"}}]}, "spec.volumes[0].secret"),
        (
            {"volumes": [{"name": "v", "projected": {"sources": [{"secret": {"name": "plain"}}]}}]},
            "spec.volumes[0].projected.sources[0].secret",
        ),
    ],
)
def test_plain_secret_is_refused_with_its_path(spec: dict[str, object], path: str) -> None:
    violations = check_pod(_good(**spec), RULES)
    assert [v.path for v in violations] == [path]
    assert '"plain"' in violations[0].reason and "sealed-only" in violations[0].reason


@pytest.mark.parametrize("runtime_class", [None, "", "runc", "kata"])
def test_runtime_class_must_be_coco(runtime_class: str | None) -> None:
    pod = _good()
    if runtime_class is None:
        del pod["spec"]["runtimeClassName"]
    else:
        pod["spec"]["runtimeClassName"] = runtime_class
    violations = check_pod(pod, RULES)
    assert [v.path for v in violations] == ["spec.runtimeClassName"]
    assert "kata-qemu-snp" in violations[0].reason


def _with_annotation(value: object) -> JsonObject:
    pod = _good()
    pod["metadata"]["annotations"][ANNOTATION_KEY] = value
    return pod


ANNOTATION_PATH = f"metadata.annotations[{ANNOTATION_KEY}]"


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (
            encode_annotation(broker_initdata("https://evil.example:8443")),
            'not a broker of tenant "bank"',
        ),
        ("not base64!", "does not decode"),
        (12, "not a string"),
        (encode_annotation(build(aa="[log]\n", cdh="[log]\n")), "names no broker"),
        (
            encode_annotation(build(aa='[token_configs.kbs]\nurl = "ftp://x"\n', cdh="")),
            "must be an http:// or https:// URL with a host",
        ),
        (
            encode_annotation(
                build(
                    aa=f'[token_configs.kbs]\nurl = "{BROKER}"\n',
                    cdh='[kbc]\nname = "offline_fs_kbc"\n',
                )
            ),
            "offline_fs_kbc",
        ),
    ],
)
def test_init_data_refusals(value: object, needle: str) -> None:
    violations = check_pod(_with_annotation(value), RULES)
    assert violations and all(v.path == ANNOTATION_PATH for v in violations)
    assert any(needle in v.reason for v in violations)


def test_foreign_broker_in_cdh_only_is_caught() -> None:
    doc = build(
        aa=f'[token_configs.kbs]\nurl = "{BROKER}/"\n',
        cdh='[kbc]\nname = "cc_kbc"\nurl = "https://evil:1"\n',
    )
    violations = check_pod(_with_annotation(encode_annotation(doc)), RULES)
    assert [v.reason.split(" ")[0:3] for v in violations] == [
        ["cdh.toml:", "kbc.url", '"https://evil:1"']
    ]


def test_missing_annotation_and_spec() -> None:
    pod = _good()
    del pod["metadata"]["annotations"]
    assert [v.path for v in check_pod(pod, RULES)] == [ANNOTATION_PATH]
    assert [v.path for v in check_pod({"metadata": {}}, RULES)] == ["spec"]


def test_dev_runtime_class_warns() -> None:
    assert pod_warnings(make_pod(runtimeClassName="kata-qemu-coco-dev"))
    assert pod_warnings(make_pod(runtimeClassName="kata-qemu-tdx")) == []


def test_upstream_kata_vectors(vectors: Path) -> None:
    """The kata e2e pods read a sealed and a plain Secret and use runtime class "kata"."""
    for name, paths in (
        (
            "pod-sealed-secret.yaml",
            [
                "spec.containers[0].env[0].valueFrom.secretKeyRef",
                "spec.containers[0].env[1].valueFrom.secretKeyRef",
            ],
        ),
        ("pod-sealed-secret-as-file.yaml", ["spec.volumes[0].secret", "spec.volumes[1].secret"]),
    ):
        (pod,) = load_documents((vectors / "guest-components" / "kata-pods" / name).read_text())
        rules = PodRules(
            tenant="t", brokers=RULES.brokers, sealed_secrets=frozenset({"sealed-secret"})
        )
        violations = check_pod(pod, rules)
        assert [v.path for v in violations] == ["spec.runtimeClassName", paths[1], ANNOTATION_PATH]
        assert {r.path for r in secret_reads(pod["spec"])} == set(paths)
