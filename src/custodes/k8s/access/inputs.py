"""The input of the access analysis: ``kubectl get … -o yaml`` dumps, read strictly.

The files go through the Kubernetes tooling's strict YAML loader
(:func:`custodes.k8s.yamlio.load_documents`: no duplicate keys, aliases or merge keys,
timestamps stay strings) with a larger size limit, since a whole cluster's dump is larger than
one manifest; ``List`` objects are flattened. The small readers below take one field of a
dumped object and raise :class:`~custodes.k8s.errors.InventoryError`, naming the object, when
it has the wrong type: the dump is untrusted, and a field it lacks reads as empty.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Final

from custodes.k8s.errors import InventoryError, ManifestError
from custodes.k8s.yamlio import load_documents
from custodes.types.json import JsonObject

MAX_INPUT_BYTES: Final = 256 * 1024 * 1024


# --- small strict readers of dumped objects ------------------------------------------------


def describe(obj: Mapping[str, object]) -> str:
    """``Kind ns/name`` of a dumped object, for messages."""
    meta = obj.get("metadata")
    name = namespace = ""
    if isinstance(meta, dict):
        raw_name, raw_namespace = meta.get("name"), meta.get("namespace")
        name = raw_name if isinstance(raw_name, str) else "?"
        namespace = raw_namespace if isinstance(raw_namespace, str) else ""
    raw_kind = obj.get("kind")
    kind = raw_kind if isinstance(raw_kind, str) else "?"
    return f"{kind} {namespace + '/' if namespace else ''}{name or '?'}"


def get_object(obj: Mapping[str, object], key: str, where: str) -> JsonObject:
    """``obj[key]`` as a mapping; absent or null reads as ``{}``."""
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InventoryError(f"{where}: {key} is not a mapping")
    return value


def get_list(obj: Mapping[str, object], key: str, where: str) -> list[object]:
    """``obj[key]`` as a list; absent or null reads as ``[]``."""
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InventoryError(f"{where}: {key} is not a list")
    return value


def get_objects(obj: Mapping[str, object], key: str, where: str) -> list[JsonObject]:
    """``obj[key]`` as a list of mappings."""
    items = get_list(obj, key, where)
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InventoryError(f"{where}: {key}[{i}] is not a mapping")
    return [item for item in items if isinstance(item, dict)]


def get_str(obj: Mapping[str, object], key: str, where: str, *, required: bool = False) -> str:
    """``obj[key]`` as a string; absent reads as ``""`` unless ``required``."""
    value = obj.get(key)
    if value is None:
        if required:
            raise InventoryError(f"{where}: {key} is missing")
        return ""
    if not isinstance(value, str):
        raise InventoryError(f"{where}: {key} is not a string")
    if required and not value:
        raise InventoryError(f"{where}: {key} is empty")
    return value


def get_strings(obj: Mapping[str, object], key: str, where: str) -> tuple[str, ...]:
    """``obj[key]`` as a list of strings."""
    items = get_list(obj, key, where)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise InventoryError(f"{where}: {key}[{i}] is not a string")
    return tuple(str(item) for item in items)


def get_labels(obj: Mapping[str, object], key: str, where: str) -> Mapping[str, str]:
    """A string-to-string map such as ``metadata.labels``."""
    raw = get_object(obj, key, where)
    for k, v in raw.items():
        if not isinstance(v, str):
            raise InventoryError(f"{where}: {key}.{k} is not a string")
    return MappingProxyType(dict(raw))


def metadata(obj: Mapping[str, object]) -> tuple[str, str, str]:
    """``(where, namespace, name)`` of a dumped object; the name is required."""
    where = describe(obj)
    meta = get_object(obj, "metadata", where)
    return where, get_str(meta, "namespace", where), get_str(meta, "name", where, required=True)


def get_list_safe(obj: Mapping[str, object], key: str) -> list[object]:
    """``obj[key]`` if it is a list, else ``[]`` (for optional, free-form data)."""
    value = obj.get(key)
    return value if isinstance(value, list) else []


# --- documents ------------------------------------------------------------------------------


def _flatten(doc: object, source: str, out: list[JsonObject]) -> None:
    if doc is None:
        return
    if not isinstance(doc, dict):
        raise InventoryError(f"{source}: a document is not a mapping")
    kind = doc.get("kind")
    if not isinstance(kind, str) or not kind:
        raise InventoryError(f"{source}: an object has no kind")
    if kind == "List" or (kind.endswith("List") and "items" in doc):
        for item in get_list(doc, "items", f"{source}: {kind}"):
            _flatten(item, source, out)
        return
    out.append(doc)


def parse_documents(text: str, source: str = "<input>") -> list[JsonObject]:
    """Every object in a YAML (or JSON) stream: ``List`` items flattened, empty documents
    dropped. ``InventoryError`` for anything that is not YAML or not an object."""
    if len(text) > MAX_INPUT_BYTES:
        raise InventoryError(f"{source}: larger than {MAX_INPUT_BYTES} bytes")
    try:
        docs = load_documents(text, max_bytes=MAX_INPUT_BYTES)
    except ManifestError as e:
        raise InventoryError(f"{source}: {e}") from e
    out: list[JsonObject] = []
    for doc in docs:
        _flatten(doc, source, out)
    return out


def load_files(paths: Iterable[Path]) -> list[JsonObject]:
    """The objects of every file, in order."""
    objects: list[JsonObject] = []
    for path in paths:
        try:
            if path.stat().st_size > MAX_INPUT_BYTES:
                raise InventoryError(f"{path}: larger than {MAX_INPUT_BYTES} bytes")
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InventoryError(f"cannot read {path}: {e}") from e
        objects.extend(parse_documents(text, str(path)))
    return objects
