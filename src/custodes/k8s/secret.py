"""Secret manifests that hold only sealed values.

For each key of a secret, the plaintext goes to the tenant's broker as the resource
``<repo>/<secret name>/<key>`` (over the admin API: the caller passes the store function), and
the Secret gets, in its place, a *vault* sealed secret pointing at that resource. What the
cluster admin applies, and etcd stores, is that pointer: signed, and useless outside an
attested TEE.

Sources: ``key=value`` literals, files, or an existing plain Secret manifest (``data`` and
``stringData``). From a manifest, only the name, namespace, labels and annotations are kept,
and never ``kubectl.kubernetes.io/last-applied-configuration``, which holds the plaintext.
Before returning, the output is scanned for every value (raw and base64) as a last check.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec

from custodes._internal.b64 import b64std_decode, b64std_encode
from custodes.errors import CustodesError, InvalidResourcePath, UpstreamError
from custodes.k8s.errors import ManifestError, SecretSourceError
from custodes.k8s.workloads import flatten
from custodes.protocol.resource import MAX_SEGMENT_LENGTH, SEGMENT_RE, ResourcePath, ResourceUri
from custodes.sealed.format import PREFIX
from custodes.sealed.payload import VaultPayload
from custodes.sealed.seal import seal
from custodes.types.json import JsonObject
from custodes.types.secret import Secret

# Kubernetes' rules (apimachinery validation): Secret keys, object names, namespaces.
_KEY_RE: Final = re.compile(r"[-._a-zA-Z0-9]{1,253}")
_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_SUBDOMAIN_RE: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_NAMESPACE_RE: Final = re.compile(_LABEL)
_MAX_NAME: Final = 253

LAST_APPLIED: Final = "kubectl.kubernetes.io/last-applied-configuration"
SEALED_LABEL: Final = "custodes.io/sealed"
KID_ANNOTATION: Final = "custodes.io/sealed-kid"
MANAGED_BY: Final = "app.kubernetes.io/managed-by"
# Types whose values the workload reads; the others are read by the kubelet or a controller
# outside the TEE, where a sealed string would break them.
SEALABLE_TYPES: Final = ("Opaque", "kubernetes.io/basic-auth", "kubernetes.io/ssh-auth")
# Shorter values are too likely to occur by chance in the output for the scan to mean much.
MIN_SCANNED_BYTES: Final = 6
MAX_VALUE_BYTES: Final = 1024 * 1024

Store = Callable[[ResourcePath, bytes], None]


@dataclass(frozen=True, slots=True)
class SecretSource:
    """A secret to seal: its name and where it lives, and its values (never printed)."""

    name: str
    values: Mapping[str, Secret[bytes]]
    namespace: str | None = None
    type: str = "Opaque"
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.namespace is not None and not _NAMESPACE_RE.fullmatch(self.namespace):
            raise SecretSourceError(f"namespace {self.namespace!r} is not a DNS-1123 label")
        if not self.values:
            raise SecretSourceError(f"Secret {self.name!r} has no values to seal")
        if self.type not in SEALABLE_TYPES:
            raise SecretSourceError(
                f"Secret {self.name!r} has type {self.type!r}: its values are read outside the "
                f"TEE (kubelet or a controller), so they cannot be sealed; sealable types: "
                f"{', '.join(SEALABLE_TYPES)}"
            )
        for key, value in self.values.items():
            check_key(key)
            raw = value.reveal()
            if len(raw) > MAX_VALUE_BYTES:
                raise SecretSourceError(f"value of {key!r} is larger than {MAX_VALUE_BYTES} bytes")
            if raw.startswith(PREFIX.encode()):
                raise SecretSourceError(f"value of {key!r} is already a sealed secret")


def check_name(name: str) -> str:
    if len(name) > min(_MAX_NAME, MAX_SEGMENT_LENGTH) or not _SUBDOMAIN_RE.fullmatch(name):
        raise SecretSourceError(
            f"Secret name {name!r} must be a DNS-1123 subdomain of at most "
            f"{MAX_SEGMENT_LENGTH} characters (it names the broker resource's type segment)"
        )
    return name


def check_key(key: str) -> str:
    if not _KEY_RE.fullmatch(key):
        raise SecretSourceError(f"Secret key {key!r} may hold only letters, digits, '-', '_', '.'")
    if len(key) > MAX_SEGMENT_LENGTH or not SEGMENT_RE.match(key):
        raise SecretSourceError(
            f"Secret key {key!r} cannot name a broker resource (no leading '.', at most "
            f"{MAX_SEGMENT_LENGTH} characters)"
        )
    return key


def _add(values: dict[str, Secret[bytes]], key: str, value: bytes, origin: str) -> None:
    check_key(key)
    if key in values:
        raise SecretSourceError(f"key {key!r} is given twice ({origin})")
    values[key] = Secret(value)


def values_from_literals(pairs: Iterable[str]) -> dict[str, Secret[bytes]]:
    """``KEY=VALUE`` strings (``kubectl create secret --from-literal``)."""
    values: dict[str, Secret[bytes]] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise SecretSourceError("--from-literal takes KEY=VALUE")
        _add(values, key, value.encode("utf-8"), "--from-literal")
    return values


def values_from_files(specs: Iterable[str]) -> dict[str, Secret[bytes]]:
    """``KEY=PATH`` or ``PATH`` (key = file name), as ``kubectl --from-file``; raw bytes."""
    values: dict[str, Secret[bytes]] = {}
    for spec in specs:
        key, eq, path_text = spec.partition("=")
        path = Path(path_text if eq else spec)
        if not eq:
            key = path.name
        try:
            with path.open("rb") as f:
                data = f.read(MAX_VALUE_BYTES + 1)
        except OSError as e:
            raise SecretSourceError(f"cannot read {path}: {e.strerror or e}") from e
        if len(data) > MAX_VALUE_BYTES:
            raise SecretSourceError(f"{path} is larger than {MAX_VALUE_BYTES} bytes")
        _add(values, key, data, "--from-file")
    return values


def values_from(literals: Iterable[str], files: Iterable[str]) -> dict[str, Secret[bytes]]:
    """``--from-literal`` and ``--from-file`` together, as kubectl mixes them: every key once."""
    values = values_from_literals(literals)
    for key, value in values_from_files(files).items():
        if key in values:
            raise SecretSourceError(f"key {key!r} is given twice (--from-literal and --from-file)")
        values[key] = value
    return values


def _string_map(obj: JsonObject, name: str, where: str) -> dict[str, str]:
    value = obj.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ManifestError(f"{where}.{name} must map strings to strings")
    return dict(value)


def source_from_manifest(doc: JsonObject) -> SecretSource:
    """A plain v1 Secret object as a :class:`SecretSource` (values decoded, metadata trimmed)."""
    if doc.get("apiVersion") != "v1" or doc.get("kind") != "Secret":
        raise ManifestError(
            f"expected a v1 Secret, got {doc.get('apiVersion')!r} {doc.get('kind')!r}"
        )
    metadata = doc.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        raise ManifestError("Secret has no metadata.name")
    name = metadata["name"]
    where = f"Secret {name!r}"
    namespace = metadata.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise ManifestError(f"{where}: metadata.namespace is not a string")
    values: dict[str, Secret[bytes]] = {}
    for key, text in _string_map(doc, "data", where).items():
        try:
            raw = b64std_decode(text)
        except ValueError as e:
            raise ManifestError(f"{where}: data.{key} is not padded standard base64") from e
        _add(values, key, raw, "data")
    for key, text in _string_map(doc, "stringData", where).items():
        # The API server would let stringData win; which one was meant is the author's call.
        if key in values:
            raise SecretSourceError(f"{where}: key {key!r} is in both data and stringData")
        _add(values, key, text.encode("utf-8"), "stringData")
    type_ = doc.get("type", "Opaque")
    if not isinstance(type_, str):
        raise ManifestError(f"{where}: type is not a string")
    annotations = _string_map(metadata, "annotations", where)
    annotations.pop(LAST_APPLIED, None)
    return SecretSource(
        name=name,
        values=values,
        namespace=namespace,
        type=type_,
        labels=_string_map(metadata, "labels", where),
        annotations=annotations,
    )


def sources_from_manifests(docs: list[JsonObject]) -> list[SecretSource]:
    """Every Secret of a manifest stream (a ``List`` is expanded); other kinds are refused."""
    objects = flatten(docs)
    if not objects:
        raise ManifestError("the manifest holds no Secret")
    return [source_from_manifest(obj) for obj in objects]


def resource_path(repo: str, secret_name: str, key: str) -> ResourcePath:
    try:
        return ResourcePath(repo, secret_name, key)
    except InvalidResourcePath as e:
        raise SecretSourceError(f"cannot name a broker resource for {key!r}: {e}") from e


def _scan(output: JsonObject, source: SecretSource) -> None:
    text = json.dumps(output)
    for key, value in source.values.items():
        raw = value.reveal()
        if len(raw) < MIN_SCANNED_BYTES:
            continue
        needles = [b64std_encode(raw)]
        try:
            needles.append(json.dumps(raw.decode("utf-8"))[1:-1])
        except UnicodeDecodeError:
            pass
        if any(needle in text for needle in needles):
            raise SecretSourceError(
                f"the sealed Secret would contain the value of {key!r}; refusing to write it"
            )


def _metadata(source: SecretSource, kid: str) -> JsonObject:
    metadata: JsonObject = {"name": source.name}
    if source.namespace is not None:
        metadata["namespace"] = source.namespace
    metadata["labels"] = {**source.labels, MANAGED_BY: "custodes", SEALED_LABEL: "true"}
    metadata["annotations"] = {**source.annotations, KID_ANNOTATION: kid}
    return metadata


def sealed_secret_manifest(
    source: SecretSource,
    *,
    repo: str,
    store: Store,
    signing_key: ec.EllipticCurvePrivateKey,
    kid: str,
) -> JsonObject:
    """Store every value in the broker, then return the v1 Secret that holds only pointers.

    ``store`` raises on failure; values stored before a failure stay in the broker (the
    error names the key that failed), and no manifest is returned.
    """
    paths = {key: resource_path(repo, source.name, key) for key in source.values}
    metadata = _metadata(source, kid)
    # Before anything reaches the broker: metadata copied from a manifest must not carry a value.
    _scan({"metadata": metadata}, source)
    sealed: dict[str, str] = {}
    for key, value in source.values.items():
        try:
            store(paths[key], value.reveal())
        except CustodesError as e:
            done = ", ".join(repr(k) for k in sealed) or "none"
            raise UpstreamError(
                f"storing {key!r} at {paths[key]} failed (already stored: {done}): {e}"
            ) from e
        payload = VaultPayload(name=str(ResourceUri(host=None, path=paths[key])))
        sealed[key] = b64std_encode(seal(payload, signing_key, kid).encode("ascii"))
    output: JsonObject = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": source.type,
        "data": sealed,
    }
    _scan(output, source)
    return output
