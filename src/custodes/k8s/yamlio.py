"""Multi-document YAML in and out, strictly.

Reading refuses what would make a manifest mean something other than what a reviewer sees:
duplicate keys (YAML loaders keep the last one silently), aliases and merge keys (one edit
changes several places; alias chains also blow up when expanded), non-string keys and values
that have no JSON form. Timestamps stay strings, as the API server reads them. Empty documents
(a stray ``---``) are dropped, as ``kubectl`` does.

Writing keeps key order and writes multi-line strings as ``|`` blocks, so a container's
shell script stays readable.
"""

from __future__ import annotations

from typing import Any, Final

import yaml

from custodes.k8s.errors import ManifestError
from custodes.types.json import JsonObject

MAX_MANIFEST_BYTES: Final = 4 * 1024 * 1024


class _StrictLoader(yaml.SafeLoader):
    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):  # type: ignore[no-untyped-call]
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise ManifestError(f"YAML aliases are not accepted (line {mark.line + 1})")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                line = key_node.start_mark.line + 1
                raise ManifestError(f"YAML merge keys (<<) are not accepted (line {line})")
            key = key_node.value
            if key in seen:
                line = key_node.start_mark.line + 1
                raise ManifestError(f"duplicate key {key!r} (line {line})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _as_string(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    return str(loader.construct_scalar(node))  # type: ignore[arg-type]


# The API server reads a timestamp-looking scalar as a string; so do we.
_StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", _as_string)
# "=" alone is a string, not YAML 1.1's "value" key.
_StrictLoader.add_constructor("tag:yaml.org,2002:value", _as_string)


def _check_json(value: object, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ManifestError(f"{where}: key {key!r} is not a string")
            _check_json(item, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]")
    elif not isinstance(value, str | int | float | bool) and value is not None:
        raise ManifestError(f"{where}: a {type(value).__name__} has no JSON form")


def yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error in one line, ``line L, column C: PROBLEM (CONTEXT)``: PyYAML's own text
    spans several lines and quotes the source."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        mark = e.problem_mark
        context = f" ({e.context})" if e.context else ""
        return f"line {mark.line + 1}, column {mark.column + 1}: {e.problem}{context}"
    return " ".join(str(e).split())


def load_documents(text: str, *, max_bytes: int = MAX_MANIFEST_BYTES) -> list[JsonObject]:
    """Every non-empty document of a YAML stream; each must be a mapping. ``max_bytes``: a
    whole cluster's dump (the access analysis) is larger than one manifest."""
    if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ManifestError(f"manifest is larger than {max_bytes} bytes")
    try:
        raw = list(yaml.load_all(text, Loader=_StrictLoader))
    except yaml.YAMLError as e:
        raise ManifestError(f"not valid YAML: {yaml_problem(e)}") from e
    except RecursionError as e:
        raise ManifestError("YAML nested too deeply") from e
    docs: list[JsonObject] = []
    for number, doc in enumerate(raw, start=1):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ManifestError(f"document {number} is a {type(doc).__name__}, not a mapping")
        _check_json(doc, "")
        docs.append(doc)
    return docs


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # The emitter falls back to a quoted style when "|" cannot hold the text exactly.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_documents(docs: list[JsonObject]) -> str:
    """A YAML stream of ``docs``, each starting with ``---``."""
    return yaml.dump_all(
        docs,
        Dumper=_Dumper,
        sort_keys=False,
        explicit_start=True,
        allow_unicode=True,
        width=1 << 16,
    )
