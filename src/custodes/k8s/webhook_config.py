"""The admission webhook's configuration (TOML): which namespaces are confidential, which
tenant each belongs to, and which brokers and sealed-only Secrets each may use.

The webhook cannot ask the API server for a namespace's labels (it holds no credentials, and
none are available here), so it learns them one of two ways, set by
``[webhook] confidential_namespaces``:

* ``"selector"`` (default): the API server only calls the webhook for namespaces that its
  ``namespaceSelector`` matches (``custodes.io/confidential: "true"``, see
  ``deploy/webhook/``), so every namespace it is asked about is confidential;
* ``"config"``: a namespace is confidential when ``[namespaces.<ns>] labels`` in this file
  says ``custodes.io/confidential = "true"`` (keep it in step with the cluster).

Either way, the tenant comes from ``[namespaces.<ns>] tenant`` and its brokers from
``[tenants.<t>] brokers``. A confidential namespace with no tenant gets every pod refused
(fail closed), with a message that says so. ::

    [webhook]
    confidential_namespaces = "selector"
    mutate = true                           # inject runtime class + init-data when missing
    default_runtime_class = "kata-qemu-snp"

    [namespaces.payments]
    tenant = "bank"
    sealed_secrets = ["db-credentials"]     # Secrets that hold only sealed values

    [tenants.bank]
    brokers = ["https://broker.bank.example:8443"]
    broker_cert = "bank-ca.pem"             # relative to this file; used when mutating
    policy = "bank-agent-policy.rego"       # optional Kata agent policy, when mutating
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, NoReturn, cast

from custodes._internal.toml_file import read_toml
from custodes.errors import ConfigError, CustodesError
from custodes.initdata.build import read_entry
from custodes.initdata.encoding import encode_annotation
from custodes.k8s.errors import WebhookConfigError
from custodes.k8s.guestconfig import broker_initdata, normalize_url
from custodes.k8s.pod import DEFAULT_RUNTIME_CLASS
from custodes.k8s.podcheck import COCO_RUNTIME_CLASSES, PodRules

CONFIDENTIAL_LABEL: Final = "custodes.io/confidential"
MODES: Final = ("selector", "config")
DEFAULT_MAX_BODY_BYTES: Final = 4 * 1024 * 1024
_LABEL_RE: Final = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
_SUBDOMAIN_RE: Final = re.compile(r"[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?")

Mode = Literal["selector", "config"]


@dataclass(frozen=True, slots=True)
class TenantConfig:
    name: str
    brokers: tuple[str, ...]
    # The init-data annotation injected when mutating: the first broker, its CA, the policy.
    annotation: str

    @property
    def normalized_brokers(self) -> frozenset[str]:
        return frozenset(normalize_url(b) for b in self.brokers)


@dataclass(frozen=True, slots=True)
class NamespaceConfig:
    name: str
    tenant: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    sealed_secrets: frozenset[str] = frozenset()
    runtime_class: str | None = None


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    mode: Mode = "selector"
    mutate: bool = False
    runtime_classes: frozenset[str] = frozenset(COCO_RUNTIME_CLASSES)
    default_runtime_class: str = DEFAULT_RUNTIME_CLASS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    namespaces: Mapping[str, NamespaceConfig] = field(default_factory=dict)
    tenants: Mapping[str, TenantConfig] = field(default_factory=dict)

    def is_confidential(self, namespace: str) -> bool:
        if self.mode == "selector":
            return True
        ns = self.namespaces.get(namespace)
        return ns is not None and ns.labels.get(CONFIDENTIAL_LABEL) == "true"

    def tenant_of(self, namespace: str) -> TenantConfig | None:
        ns = self.namespaces.get(namespace)
        if ns is None or ns.tenant is None:
            return None
        return self.tenants[ns.tenant]

    def rules_for(self, namespace: str) -> PodRules | None:
        """The rules of a confidential namespace; ``None`` when it maps to no tenant."""
        tenant = self.tenant_of(namespace)
        if tenant is None:
            return None
        return PodRules(
            tenant=tenant.name,
            brokers=tenant.normalized_brokers,
            runtime_classes=self.runtime_classes,
            sealed_secrets=self.namespaces[namespace].sealed_secrets,
        )

    def runtime_class_for(self, namespace: str) -> str:
        ns = self.namespaces.get(namespace)
        if ns is not None and ns.runtime_class is not None:
            return ns.runtime_class
        return self.default_runtime_class


def _fail(msg: str) -> NoReturn:
    raise WebhookConfigError(msg)


def _table(raw: object, where: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        _fail(f"[{where}] must be a table")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        _fail(
            f"unknown setting(s) {', '.join(unknown)} in [{where}] "
            f"(known: {', '.join(sorted(allowed))})"
        )
    return raw


def _tables(top: dict[str, Any], where: str) -> dict[str, Any]:
    """``[where.<name>]`` tables, by name."""
    raw = top.get(where, {})
    if not isinstance(raw, dict):
        _fail(f"[{where}] must be a table of [{where}.<name>] tables")
    return raw


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        _fail(f"{where} must be a list of non-empty strings")
    return tuple(value)


def _string(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        _fail(f"{where} must be a non-empty string")
    return value


def _path(value: object, where: str, base_dir: Path) -> Path:
    p = Path(_string(value, where)).expanduser()
    return p if p.is_absolute() else base_dir / p


def _file(table: dict[str, Any], key: str, where: str, base_dir: Path) -> str | None:
    if key not in table:
        return None
    try:
        return read_entry(_path(table[key], f"{where}.{key}", base_dir))
    except WebhookConfigError:
        raise
    except ConfigError as e:
        _fail(f"{where}.{key}: {e}")


def _tenant(name: str, raw: object, base_dir: Path) -> TenantConfig:
    where = f"tenants.{name}"
    table = _table(raw, where, {"brokers", "broker_cert", "policy"})
    brokers = _strings(table.get("brokers"), f"{where}.brokers")
    if not brokers:
        _fail(f"{where}.brokers must name at least one broker URL")
    for url in brokers:
        try:
            normalize_url(url)
        except ConfigError as e:
            _fail(f"{where}.brokers: {e}")
    cert = _file(table, "broker_cert", where, base_dir)
    policy = _file(table, "policy", where, base_dir)
    try:
        annotation = encode_annotation(broker_initdata(brokers[0], cert=cert, policy=policy))
    except CustodesError as e:
        _fail(f"{where}: cannot build the init-data to inject: {e}")
    return TenantConfig(name=name, brokers=brokers, annotation=annotation)


def _namespace(name: str, raw: object, tenants: Mapping[str, TenantConfig]) -> NamespaceConfig:
    where = f"namespaces.{name}"
    if not _LABEL_RE.fullmatch(name):
        _fail(f"[{where}]: {name!r} is not a namespace name (DNS-1123 label)")
    table = _table(raw, where, {"tenant", "labels", "sealed_secrets", "runtime_class"})
    tenant = None
    if "tenant" in table:
        tenant = _string(table["tenant"], f"{where}.tenant")
        if tenant not in tenants:
            _fail(f"{where}.tenant: no [tenants.{tenant}] table")
    labels = table.get("labels", {})
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        _fail(f"{where}.labels must map label names to strings")
    secrets = _strings(table.get("sealed_secrets", []), f"{where}.sealed_secrets")
    for secret in secrets:
        if len(secret) > 253 or not _SUBDOMAIN_RE.fullmatch(secret):
            _fail(f"{where}.sealed_secrets: {secret!r} is not a Secret name")
    runtime_class = None
    if "runtime_class" in table:
        runtime_class = _string(table["runtime_class"], f"{where}.runtime_class")
    return NamespaceConfig(
        name=name,
        tenant=tenant,
        labels=MappingProxyType(dict(labels)),
        sealed_secrets=frozenset(secrets),
        runtime_class=runtime_class,
    )


def parse_webhook_config(raw: Mapping[str, Any], base_dir: Path) -> WebhookConfig:
    """A configuration from parsed TOML; paths are relative to ``base_dir``."""
    top = _table(dict(raw), "(top level)", {"webhook", "namespaces", "tenants"})
    hook = _table(
        top.get("webhook", {}),
        "webhook",
        {
            "confidential_namespaces",
            "mutate",
            "runtime_classes",
            "default_runtime_class",
            "max_body_bytes",
        },
    )
    mode = hook.get("confidential_namespaces", "selector")
    if mode not in MODES:
        _fail(f"webhook.confidential_namespaces must be one of {', '.join(MODES)}")
    mutate = hook.get("mutate", False)
    if not isinstance(mutate, bool):
        _fail("webhook.mutate must be true or false")
    classes = frozenset(
        _strings(hook.get("runtime_classes", list(COCO_RUNTIME_CLASSES)), "webhook.runtime_classes")
    )
    if not classes:
        _fail("webhook.runtime_classes must not be empty")
    default_class = _string(
        hook.get("default_runtime_class", DEFAULT_RUNTIME_CLASS), "webhook.default_runtime_class"
    )
    max_body = hook.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES)
    if not isinstance(max_body, int) or isinstance(max_body, bool) or max_body <= 0:
        _fail("webhook.max_body_bytes must be a positive integer")
    tenants = {
        name: _tenant(name, value, base_dir) for name, value in _tables(top, "tenants").items()
    }
    namespaces = {
        name: _namespace(name, value, tenants) for name, value in _tables(top, "namespaces").items()
    }
    chosen = [default_class, *(ns.runtime_class for ns in namespaces.values() if ns.runtime_class)]
    for runtime_class in chosen:
        if runtime_class not in classes:
            _fail(f"runtime class {runtime_class!r} is not in webhook.runtime_classes")
    return WebhookConfig(
        mode=cast(Mode, mode),
        mutate=mutate,
        runtime_classes=classes,
        default_runtime_class=default_class,
        max_body_bytes=max_body,
        namespaces=MappingProxyType(namespaces),
        tenants=MappingProxyType(tenants),
    )


def load_webhook_config(path: Path) -> WebhookConfig:
    raw = read_toml(path, "webhook config", WebhookConfigError)
    return parse_webhook_config(raw, path.resolve().parent)
