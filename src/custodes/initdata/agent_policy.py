"""The Kata agent policy (``policy.rego`` in init-data), read the way the agent's engine reads it.

The agent enforces what regorus makes of this text, so custodes derives everything it reports
about it (``agent_policy_claims``, the access matrix's verdicts) from regorus too: the policy
is compiled, its AST inspected, and ``data.agent_policy.policy_data`` evaluated. A text search
would take a ``policy_data := {...}`` inside a comment or a string for the real one, and
report an allow-list the agent never enforces.

Refused (:class:`AgentPolicyError`), because what the claims say would be ambiguous:

* a policy that does not compile as Rego v1 nor as v0 (the agent's regorus reads one of them;
  when both compile, both readings must give the same ``policy_data``);
* a package other than ``agent_policy`` (the agent queries ``data.agent_policy.*``);
* more than one definition of ``policy_data`` (``default``, partial ``policy_data[k]``,
  ``policy_data.x :=``, function heads and ``else`` all count);
* a ``policy_data`` that is not one constant JSON object: a body, a variable, a reference,
  a call, a comprehension, a set, a non-string or duplicate key;
* a ``with`` that replaces ``data`` or ``policy_data`` while a rule is evaluated, and an
  ``import`` named ``policy_data``: the rules would then see another ``policy_data``.

Only that one constant rule is evaluated (regorus's Python binding has no execution limit;
a constant evaluates in time linear in its size). Parsing is bounded by the nesting check of
:func:`custodes.policy.engine.check_nesting`, and the AST's size by :data:`MAX_TOKENS`.
Results are cached per text (a broker sees the same agent policy on every attestation of a
deployment).

What the claims cannot say: how the other rules use ``policy_data``. A policy whose rules
ignore it enforces something else; an attestation policy that must know the whole policy
compares its digest (the init-data digest already covers it).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from custodes._internal.bounded_cache import BoundedCache
from custodes.errors import PolicyError
from custodes.initdata.errors import InitDataError
from custodes.policy.engine import UNDEFINED, inspect_module
from custodes.types.json import Json, JsonObject

PACKAGE: Final = "data.agent_policy"
POLICY_DATA: Final = "policy_data"
_POLICY_DATA_RULE: Final = f"{PACKAGE}.{POLICY_DATA}"
_CACHE_SIZE: Final = 64
MAX_TOKENS: Final = 65_536
# Rego tokens, roughly: strings, raw strings, comments (not counted), names, numbers, others.
_TOKEN: Final = re.compile(r'"(?:[^"\\\n]|\\.)*"|`[^`]*`|#[^\n]*|[A-Za-z_]\w*|[0-9][0-9.eE+-]*|\S')


class AgentPolicyError(InitDataError):
    """``policy.rego`` does not compile, or what it enforces cannot be stated unambiguously."""

    code = "init-data-agent-policy"


@dataclass(frozen=True, slots=True)
class AgentPolicyModule:
    """What custodes knows of an agent policy: its ``policy_data`` (None when it defines none),
    the constant ``default`` value of each request it defaults, and the requests that have
    rules besides their default."""

    policy_data: JsonObject | None
    defaults: Mapping[str, Json] = field(default_factory=lambda: MappingProxyType({}))
    rules: frozenset[str] = frozenset()


_cache: BoundedCache[bytes, AgentPolicyModule | str] = BoundedCache(_CACHE_SIZE)


def parse_agent_policy(text: str) -> AgentPolicyModule:
    """Compile and inspect ``text``; :class:`AgentPolicyError` when it is refused."""
    key = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    cached = _cache.get(key)
    if cached is None:
        try:
            cached = _parse(text)
        except AgentPolicyError as e:
            cached = str(e)
        _cache.put(key, cached)
    if isinstance(cached, str):
        raise AgentPolicyError(cached)
    return cached


def _check_size(text: str) -> None:
    """Refuse a policy too large to analyse: regorus's AST costs 200-450 bytes of JSON per
    token (a 1 MiB policy of small numbers is a 220 MB AST), so the bound is on tokens, not
    bytes. genpolicy's rules plus the data of a pod's containers are far below it (Trustee's
    test policy: 8,200 tokens)."""
    tokens = sum(1 for m in _TOKEN.finditer(text) if not m.group().startswith("#"))
    if tokens > MAX_TOKENS:
        raise AgentPolicyError(
            f"policy.rego has {tokens} tokens, more than the {MAX_TOKENS} custodes analyses"
        )


def _parse(text: str) -> AgentPolicyModule:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise AgentPolicyError(f"policy.rego is not encodable as UTF-8: {e}") from None
    _check_size(text)
    # Rego v1 first (regorus's default since 0.11, and what genpolicy output compiles as);
    # v0 only for a policy that v1 refuses (older agents' engines read v0). A constant
    # policy_data reads the same either way; trying only what is needed also keeps regorus's
    # v0 warnings about `if` off the broker's stderr.
    try:
        return _read(text, rego_v0=False)
    except AgentPolicyError:
        raise
    except PolicyError as v1_failure:
        try:
            return _read(text, rego_v0=True)
        except AgentPolicyError:
            raise
        except PolicyError:
            raise AgentPolicyError(f"policy.rego: {v1_failure}") from None


def _read(text: str, *, rego_v0: bool) -> AgentPolicyModule:
    found: list[_Inspection] = []
    source = text.encode("utf-8")

    def select(ast: Json) -> list[str]:
        found.append(_inspect(ast, source))
        return [_POLICY_DATA_RULE] if found[0].defines_policy_data else []

    packages, _, values = inspect_module(text, rego_v0=rego_v0, select=select)
    if packages != [PACKAGE]:
        shown = ", ".join(p.removeprefix("data.") for p in packages) or "none"
        raise AgentPolicyError(f"policy.rego must declare `package agent_policy`, not {shown}")
    [inspection] = found
    policy_data: JsonObject | None = None
    if inspection.defines_policy_data:
        value = values.get(_POLICY_DATA_RULE, UNDEFINED)
        if not isinstance(value, dict):
            raise AgentPolicyError("policy.rego: policy_data does not evaluate to an object")
        policy_data = value
    return AgentPolicyModule(policy_data, MappingProxyType(inspection.defaults), inspection.rules)


# --- the AST (regorus's JSON: {"package", "imports", "rules"}) ----------------------------


class _NotConstant(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _Inspection:
    defines_policy_data: bool
    defaults: dict[str, Json]
    rules: frozenset[str]


def _malformed() -> AgentPolicyError:
    return AgentPolicyError("policy.rego: unexpected AST from the policy engine")


def _inspect(ast: Json, source: bytes) -> _Inspection:
    if not isinstance(ast, dict):
        raise _malformed()
    for imported in _list(ast.get("imports")):
        if isinstance(imported, dict) and _imported_name(imported, source) == POLICY_DATA:
            raise AgentPolicyError("policy.rego: an import is named policy_data")
    defaults: dict[str, Json] = {}
    rules: set[str] = set()
    definitions: list[dict[str, Json]] = []
    for rule in _list(ast.get("rules")):
        if not isinstance(rule, dict) or len(rule) != 1:
            raise _malformed()
        [(kind, node)] = rule.items()
        if not isinstance(node, dict):
            raise _malformed()
        head = node if kind == "Default" else _head(node)
        name = _base_name(head.get("refr"))
        if name == POLICY_DATA:
            definitions.append(rule)
        if kind == "Default":
            try:
                defaults[name] = _constant(node.get("value"))
            except _NotConstant:
                rules.add(name)
        else:
            rules.add(name)
    _refuse_with_on_policy_data(ast.get("rules"))
    if len(definitions) > 1:
        raise AgentPolicyError(
            f"policy.rego defines policy_data {len(definitions)} times; "
            "it must be one constant object"
        )
    if definitions:
        _check_constant_object(definitions[0])
    return _Inspection(bool(definitions), defaults, frozenset(rules))


def _list(value: Json) -> list[Json]:
    return value if isinstance(value, list) else []


def _head(spec: dict[str, Json]) -> dict[str, Json]:
    head = spec.get("head")
    if not isinstance(head, dict) or len(head) != 1:
        raise _malformed()
    [inner] = head.values()
    if not isinstance(inner, dict):
        raise _malformed()
    return inner


def _base_name(ref: object) -> str:
    """The variable a rule head or reference starts from (``a`` of ``a.b[c]``)."""
    while isinstance(ref, dict) and len(ref) == 1:
        [(kind, node)] = ref.items()
        if not isinstance(node, dict):
            break
        if kind == "Var":
            value = node.get("value")
            return value if isinstance(value, str) else ""
        ref = node.get("refr")
    return ""


def _ref_path(ref: object) -> list[str]:
    """``data.agent_policy.policy_data`` as ["data", "agent_policy", "policy_data"]; a bracket
    with a constant string counts as a field, any other bracket as the wildcard "*"."""
    path: list[str] = []
    while isinstance(ref, dict) and len(ref) == 1:
        [(kind, node)] = ref.items()
        if not isinstance(node, dict):
            break
        if kind == "Var":
            value = node.get("value")
            path.append(value if isinstance(value, str) else "*")
            break
        if kind == "RefDot":
            fields = _list(node.get("field"))
            path.append(str(fields[-1]) if fields else "*")
        elif kind == "RefBrack":
            try:
                index = _constant(node.get("index"))
            except _NotConstant:
                index = None
            path.append(index if isinstance(index, str) else "*")
        else:
            path.append("*")
            break
        ref = node.get("refr")
    return list(reversed(path))


def _imported_name(imported: dict[str, Json], source: bytes) -> str:
    """The name an import binds: its alias (regorus gives only the alias's source span, in
    bytes), else the last field of what it imports."""
    alias = imported.get("as")
    if isinstance(alias, dict):
        start, end = alias.get("start"), alias.get("end")
        if isinstance(start, int) and isinstance(end, int) and 0 <= start <= end:
            return source[start:end].decode("utf-8", "replace")
        raise _malformed()
    path = _ref_path(imported.get("refr"))
    return path[-1] if path else ""


def _replaces_policy_data(target: list[str]) -> bool:
    """Whether ``with <target> as ...`` changes what ``policy_data`` is."""
    if target[:1] == [POLICY_DATA]:
        return True
    if target[:1] != ["data"]:
        return False
    package, rule = (target[1:2] or ["*"])[0], (target[2:3] or ["*"])[0]
    return package in ("*", "agent_policy") and rule in ("*", POLICY_DATA)


def _refuse_with_on_policy_data(node: Json) -> None:
    """``with X as Y`` where X is ``data``, ``data.agent_policy`` or any part of
    ``policy_data``: the rule evaluated under it sees another ``policy_data``."""
    stack: list[Json] = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            for modifier in _list(item.get("with_mods")):
                if isinstance(modifier, dict) and _replaces_policy_data(
                    _ref_path(modifier.get("refr"))
                ):
                    raise AgentPolicyError(
                        "policy.rego replaces policy_data with `with` while evaluating a rule"
                    )
            stack.extend(item.values())


def _check_constant_object(rule: dict[str, Json]) -> None:
    [(kind, node)] = rule.items()
    problem = "policy_data must be one constant object: `policy_data := {...}`"
    if kind != "Spec" or not isinstance(node, dict) or _list(node.get("bodies")):
        raise AgentPolicyError(f"policy.rego: {problem}")
    head = node.get("head")
    if not isinstance(head, dict) or list(head) != ["Compr"]:
        raise AgentPolicyError(f"policy.rego: {problem}")
    compr = head["Compr"]
    if not isinstance(compr, dict) or _ref_path(compr.get("refr")) != [POLICY_DATA]:
        raise AgentPolicyError(f"policy.rego: {problem}")
    assign = compr.get("assign")
    if not isinstance(assign, dict) or assign.get("op") not in ("ColEq", "Eq"):
        raise AgentPolicyError(f"policy.rego: {problem}")
    try:
        value = _constant(assign.get("value"))
    except _NotConstant as e:
        raise AgentPolicyError(f"policy.rego: {problem} ({e})") from None
    if not isinstance(value, dict):
        raise AgentPolicyError(f"policy.rego: {problem}")


def _constant(node: object) -> Json:
    """A literal term of the AST as JSON; ``_NotConstant`` for anything evaluated."""
    if not isinstance(node, dict) or len(node) != 1:
        raise _NotConstant("an unexpected term")
    [(kind, body)] = node.items()
    if not isinstance(body, dict):
        raise _NotConstant("an unexpected term")
    if kind in ("String", "RawString"):
        value = body.get("value")
        if isinstance(value, str):
            return value
    elif kind == "Number":
        value = body.get("value")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
    elif kind == "Bool":
        value = body.get("value")
        if isinstance(value, bool):
            return value
    elif kind == "Null":
        return None
    elif kind == "Array":
        return [_constant(item) for item in _list(body.get("items"))]
    elif kind == "Object":
        result: JsonObject = {}
        for pair in _list(body.get("fields")):
            # [span, key, value] (regorus puts the field's source span first)
            if not isinstance(pair, list) or len(pair) not in (2, 3):
                raise _NotConstant("an unexpected object field")
            key = _constant(pair[-2])
            if not isinstance(key, str):
                raise _NotConstant(f"a key that is not a string: {key!r}")
            if key in result:
                raise _NotConstant(f"the key {key!r} appears twice")
            result[key] = _constant(pair[-1])
        return result
    raise _NotConstant(f"a {kind.lower()} where a constant is required")
