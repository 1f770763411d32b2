"""Where each workload kind keeps its pod template."""

from __future__ import annotations

import pytest

from custodes.k8s.errors import ManifestError
from custodes.k8s.workloads import flatten, pod_template
from custodes.types.json import JsonObject


def _spec() -> dict[str, object]:
    return {"containers": [{"name": "a", "image": "b"}]}


@pytest.mark.parametrize(
    ("obj", "path"),
    [
        ({"apiVersion": "v1", "kind": "Pod", "spec": _spec()}, ""),
        (
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "spec": {"template": {"spec": _spec()}},
            },
            "spec.template",
        ),
        (
            {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": _spec()}}},
            "spec.template",
        ),
        (
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "spec": {"jobTemplate": {"spec": {"template": {"spec": _spec()}}}},
            },
            "spec.jobTemplate.spec.template",
        ),
    ],
)
def test_pod_template_is_a_live_reference(obj: dict[str, object], path: str) -> None:
    template = pod_template(obj)
    assert template.path == path
    template.spec["runtimeClassName"] = "kata-cc"
    template.metadata["annotations"] = {"k": "v"}
    again = pod_template(obj)
    assert again.spec["runtimeClassName"] == "kata-cc"
    assert again.metadata == {"annotations": {"k": "v"}}
    assert template.field("spec.containers[0]") == (
        f"{path}.spec.containers[0]" if path else "spec.containers[0]"
    )


@pytest.mark.parametrize(
    ("obj", "needle"),
    [
        ({"apiVersion": "v1", "kind": "Service"}, "not a workload kind"),
        ({"apiVersion": "extensions/v1beta1", "kind": "Deployment"}, "apiVersion"),
        (
            {"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"template": []}},
            "not an object",
        ),
        ({"apiVersion": "v1", "kind": "Pod"}, "spec is missing"),
    ],
)
def test_pod_template_refusals(obj: dict[str, object], needle: str) -> None:
    with pytest.raises(ManifestError, match=needle):
        pod_template(obj)


def test_flatten_expands_lists() -> None:
    inner: JsonObject = {"apiVersion": "v1", "kind": "Secret"}
    docs: list[JsonObject] = [
        {"apiVersion": "v1", "kind": "List", "items": [inner, {"kind": "X"}]},
        {"kind": "Y"},
    ]
    flat = flatten(docs)
    assert [d["kind"] for d in flat] == ["Secret", "X", "Y"]
    assert flat[0] is inner
    with pytest.raises(ManifestError, match="items"):
        flatten([{"apiVersion": "v1", "kind": "List", "items": "nope"}])
