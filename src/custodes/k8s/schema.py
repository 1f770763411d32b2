"""Validation against the Kubernetes JSON schemas (the API server's OpenAPI, as JSON Schema).

There is no API server to ask, so the published schemas stand in for it: ``kubernetes-validate``
ships them for every Kubernetes minor version it knows. Validation is *strict* by default
(unknown fields are errors, as ``kubectl apply --validate=strict`` makes them), which catches
the typo that would otherwise silently drop, say, a ``securityContext``.

The package is a development dependency of custodes; without it :func:`validate_object`
raises :class:`~custodes.errors.ConfigError` saying so.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable
from typing import Any, Final

from custodes.errors import ConfigError
from custodes.k8s.errors import ManifestSchemaError
from custodes.k8s.workloads import describe
from custodes.types.json import JsonObject

# A fixed version, so the same manifest validates the same way on every machine.
DEFAULT_K8S_VERSION: Final = "1.31"


def available() -> bool:
    """Whether the schemas are installed (``kubernetes-validate``)."""
    return importlib.util.find_spec("kubernetes_validate") is not None


def _library() -> Any:
    try:
        return importlib.import_module("kubernetes_validate")
    except ImportError as e:
        raise ConfigError(
            "validating against the Kubernetes schemas needs the kubernetes-validate package "
            "(a development dependency of custodes): install it, or skip validation"
        ) from e


def _path(parts: Iterable[object]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _reason(error: Any) -> str:
    # jsonschema's message quotes the offending value, which may be a secret: say what the
    # schema expected instead. These two messages quote only field names.
    if error.validator in ("additionalProperties", "required"):
        return str(error.message)
    return f"fails {error.validator!r} (schema expects {error.validator_value!r})"


def has_schema(obj: JsonObject, version: str = DEFAULT_K8S_VERSION) -> bool:
    """Whether the schemas know ``obj``'s kind and apiVersion (custom resources: no)."""
    kv = _library()
    if not isinstance(obj.get("apiVersion"), str) or not isinstance(obj.get("kind"), str):
        return True  # validate_object says what is wrong
    try:
        kv.validate(obj, version, strict=True)
    except kv.SchemaNotFoundError:
        return False
    except kv.ValidationError:
        return True
    return True


def validate_object(
    obj: JsonObject, version: str = DEFAULT_K8S_VERSION, *, strict: bool = True
) -> None:
    """Raise :class:`ManifestSchemaError` naming the object, the field and the reason."""
    kv = _library()
    if not isinstance(obj.get("apiVersion"), str) or not isinstance(obj.get("kind"), str):
        raise ManifestSchemaError(f"{describe(obj)}: apiVersion and kind must be strings")
    try:
        kv.validate(obj, version, strict=strict)
    except kv.ValidationError as e:
        where = _path(e.path) or "(object)"
        raise ManifestSchemaError(
            f"{describe(obj)} does not validate against Kubernetes {version}: {where}: {_reason(e)}"
        ) from None
    except kv.SchemaNotFoundError as e:
        raise ManifestSchemaError(
            f"{describe(obj)}: no Kubernetes {version} schema for {obj['apiVersion']} {obj['kind']}"
        ) from e
    except kv.utils.VersionNotSupportedError as e:
        raise ConfigError(
            f"Kubernetes version {version} is not known to kubernetes-validate"
        ) from e
