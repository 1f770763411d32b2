"""Lint for resource policies: mistakes that make a deny release instead.

A resource policy decides ``data.policy.allow`` over the claims of an EAR token (``input``) and
``data`` = ``{"plugin": "resource", "resource-path": [REPO, TYPE, TAG], "query": {...}}``
(``custodes.kbs.app``). ``data["resource-path"]`` is a *list* of segments: a rule that compares
it with the string ``"default/key/db"`` silently never matches, and when that rule was meant
to deny (``not denied``, ``allow := false if ...``), every path is released.

Two derivations, both from the policy as the engine reads it, never from its text:

* **the AST** (regorus's): every ``==``, ``!=`` and ``=`` whose operands have types known to
  differ (a literal, a builtin's result, or a path of the input shape above, also through a
  local variable bound to one) is a ``type-mismatch``: ``==`` never holds, ``!=`` always does.
  ``default allow := true`` is a ``default-allow``.
* **probes**: the policy is evaluated on an affirming and a contraindicated token, for a path
  no policy names (random) and for paths built from the policy's own string literals.
  ``allows-unappraised``: a contraindicated token gets a path the policy never names, i.e.
  every path. ``path-ignored``: the policy reads ``data["resource-path"]`` yet no probe path
  changes its decision, and that decision releases: the path conditions are dead.

Findings are advice (the broker still enforces what the policy says); ``custodes policy lint``
prints them and ``custodes admin policy set`` shows them before activating.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from custodes.errors import PolicyError
from custodes.policy.engine import RegoEngine
from custodes.types.json import Json, JsonObject

_ALLOW: Final = "data.policy.allow"
_RESOURCE_PATH: Final = ("data", "resource-path")
_MAX_LITERAL_PROBES: Final = 24

# Types of the resource policy's input and data ("*": any key or index).
_KNOWN_TYPES: Final[Mapping[tuple[str, ...], str]] = {
    ("data",): "object",
    ("data", "resource-path"): "array",
    ("data", "resource-path", "*"): "string",
    ("data", "plugin"): "string",
    ("data", "query"): "object",
    ("data", "query", "*"): "string",
    ("input",): "object",
    ("input", "submods"): "object",
    ("input", "submods", "*"): "object",
    ("input", "submods", "*", "ear.status"): "string",
    ("input", "submods", "*", "ear.trustworthiness-vector"): "object",
    ("input", "submods", "*", "ear.trustworthiness-vector", "*"): "number",
    ("input", "submods", "*", "ear.appraisal-policy-id"): "string",
    ("input", "submods", "*", "ear.veraison.annotated-evidence"): "object",
    ("input", "eat_profile"): "string",
    ("input", "iat"): "number",
    ("input", "exp"): "number",
    ("input", "iss"): "string",
    ("input", "jti"): "string",
    ("input", "ear.verifier-id"): "object",
    ("input", "custodes.insecure"): "array",
    ("input", "custodes.tenant"): "string",
}

_BUILTIN_RESULTS: Final[Mapping[str, str]] = {
    **dict.fromkeys(
        (
            "concat",
            "sprintf",
            "lower",
            "upper",
            "trim",
            "trim_space",
            "trim_prefix",
            "trim_suffix",
            "trim_left",
            "trim_right",
            "replace",
            "substring",
            "format_int",
            "base64.encode",
            "base64.decode",
            "json.marshal",
        ),
        "string",
    ),
    **dict.fromkeys(("count", "to_number", "sum", "product", "abs", "time.now_ns"), "number"),
    **dict.fromkeys(
        (
            "startswith",
            "endswith",
            "contains",
            "regex.match",
            "glob.match",
            "is_string",
            "is_number",
            "is_array",
            "is_object",
            "is_boolean",
            "is_null",
            "is_set",
        ),
        "boolean",
    ),
    **dict.fromkeys(("split", "array.concat", "array.slice"), "array"),
}

_LITERAL_TYPES: Final[Mapping[str, str]] = {
    "String": "string",
    "RawString": "string",
    "Number": "number",
    "Bool": "boolean",
    "Null": "null",
    "Array": "array",
    "ArrayCompr": "array",
    "Object": "object",
    "ObjectCompr": "object",
    "Set": "set",
    "SetCompr": "set",
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: where (1-based line and column; 0 when the policy as a whole) and why."""

    check: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}, column {self.column}: " if self.line else ""
        return f"{where}{self.message} [{self.check}]"

    def to_json(self) -> JsonObject:
        return {
            "check": self.check,
            "line": self.line,
            "column": self.column,
            "message": self.message,
        }


def lint_resource_policy(policy: str) -> list[Finding]:
    """Every finding for ``policy`` (which must compile), in source order then probe order.
    ``PolicyError`` if it does not compile or defines no ``allow``."""
    module = RegoEngine.ast(policy)
    if not isinstance(module, dict):
        raise PolicyError("the policy engine returned an AST of an unexpected shape")
    source = policy.encode("utf-8")
    rules = [r for r in _items(module.get("rules")) if isinstance(r, dict) and len(r) == 1]
    if not any(_rule_name(r) == "allow" for r in rules):
        raise PolicyError(
            "the policy defines no `allow` rule: policy lint checks resource policies "
            "(data.policy.allow)"
        )
    findings: list[Finding] = []
    for rule in rules:
        findings.extend(_default_allow(rule))
        findings.extend(_type_mismatches(rule, source))
    findings.sort(key=lambda f: (f.line, f.column))
    findings.extend(_probe(policy, module))
    return findings


# --- the AST ----------------------------------------------------------------------------------


def _items(value: Json) -> list[Json]:
    return value if isinstance(value, list) else []


def _span(node: Json) -> tuple[int, int, int, int]:
    """(line, column, start, end) of a node (the span of its only child for a wrapper)."""
    if isinstance(node, dict):
        span = node.get("span")
        if isinstance(span, dict):
            line, col = span.get("line"), span.get("col")
            start, end = span.get("start"), span.get("end")
            if (
                isinstance(line, int)
                and isinstance(col, int)
                and isinstance(start, int)
                and isinstance(end, int)
            ):
                return line, col, start, end
        if len(node) == 1:
            return _span(next(iter(node.values())))
    return 0, 0, 0, 0


def _extent(node: Json) -> tuple[int, int]:
    """The byte range a term covers: from its earliest to its latest span."""
    low, high = -1, -1
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            span = item.get("span")
            if isinstance(span, dict):
                start, end = span.get("start"), span.get("end")
                if isinstance(start, int) and isinstance(end, int):
                    low = start if low < 0 else min(low, start)
                    high = max(high, end)
            stack.extend(item.values())
    return low, high


def _position(source: bytes, offset: int) -> tuple[int, int]:
    """1-based line and column of a byte offset (regorus's ``col`` is where a comparison's
    operator or a reference's last bracket is; its ``start`` is where the term begins)."""
    line_start = source.rfind(b"\n", 0, offset) + 1
    column = len(source[line_start:offset].decode("utf-8", "replace")) + 1
    return source.count(b"\n", 0, offset) + 1, column


def _text(node: Json, source: bytes) -> str:
    if isinstance(node, dict) and len(node) == 1:
        [(kind, body)] = node.items()
        value = body.get("value") if isinstance(body, dict) else None
        if kind in ("String", "RawString") and isinstance(value, str):
            return json.dumps(value) if len(value) <= 58 else json.dumps(value[:55]) + "..."
    start, end = _extent(node)
    text = source[start:end].decode("utf-8", "replace") if end > start else "?"
    return text if len(text) <= 60 else text[:57] + "..."


def _ref_path(node: Json) -> tuple[str, ...] | None:
    """``input.submods[x]["ear.status"]`` as ("input", "submods", "*", "ear.status")."""
    path: list[str] = []
    while isinstance(node, dict) and len(node) == 1:
        [(kind, body)] = node.items()
        if not isinstance(body, dict):
            return None
        if kind == "Var":
            value = body.get("value")
            if not isinstance(value, str):
                return None
            path.append(value)
            return tuple(reversed(path))
        if kind == "RefDot":
            field = _items(body.get("field"))
            name = field[-1] if field else None
            path.append(name if isinstance(name, str) else "*")
        elif kind == "RefBrack":
            index = body.get("index")
            literal = index.get("String") if isinstance(index, dict) else None
            value = literal.get("value") if isinstance(literal, dict) else None
            path.append(value if isinstance(value, str) else "*")
        else:
            return None
        node = body.get("refr")
    return None


def _known_type(path: tuple[str, ...]) -> str | None:
    for candidate, kind in _KNOWN_TYPES.items():
        if len(candidate) == len(path) and all(
            c in ("*", p) for c, p in zip(candidate, path, strict=True)
        ):
            return kind
    return None


def _type(node: Json, env: Mapping[str, str]) -> str | None:
    if not isinstance(node, dict) or len(node) != 1:
        return None
    [(kind, body)] = node.items()
    if kind in _LITERAL_TYPES:
        return _LITERAL_TYPES[kind]
    if kind == "Var" and isinstance(body, dict):
        name = body.get("value")
        if isinstance(name, str) and name in env:
            return env[name]
    if kind in ("Var", "RefDot", "RefBrack"):
        path = _ref_path(node)
        if path is None:
            return None
        if path[0] in env and len(path) == 1:
            return env[path[0]]
        return _known_type(path)
    if kind == "Call" and isinstance(body, dict):
        name = _ref_path(body.get("fcn"))
        return _BUILTIN_RESULTS.get(".".join(name)) if name else None
    return None


def _rule_name(rule: dict[str, Json]) -> str:
    [(kind, node)] = rule.items()
    if not isinstance(node, dict):
        return ""
    ref = node.get("refr")
    if kind != "Default":
        head = node.get("head")
        inner = next(iter(head.values()), None) if isinstance(head, dict) else None
        ref = inner.get("refr") if isinstance(inner, dict) else None
    path = _ref_path(ref)
    return path[0] if path else ""


def _default_allow(rule: dict[str, Json]) -> Iterator[Finding]:
    [(kind, node)] = rule.items()
    if kind != "Default" or _rule_name(rule) != "allow" or not isinstance(node, dict):
        return
    value = node.get("value")
    flag = value.get("Bool") if isinstance(value, dict) else None
    if isinstance(flag, dict) and flag.get("value") is True:
        line, col, _, _ = _span(node)
        yield Finding(
            "default-allow",
            line,
            col,
            "default allow := true: every request that no rule refuses is released, "
            "including paths and tokens nobody thought of; write default allow := false "
            "and rules that allow",
        )


def _type_mismatches(rule: dict[str, Json], source: bytes) -> Iterator[Finding]:
    yield from _walk(rule, {}, source)


def _walk(node: Json, env: Mapping[str, str], source: bytes) -> Iterator[Finding]:
    if isinstance(node, list):
        for item in node:
            yield from _walk(item, env, source)
        return
    if not isinstance(node, dict):
        return
    stmts = node.get("stmts")
    if isinstance(stmts, list):  # a query: its bindings are seen by the later statements
        scope = dict(env)
        for stmt in stmts:
            yield from _walk(stmt, scope, source)
            _bind(stmt, scope)
        return
    for kind in ("BoolExpr", "AssignExpr"):
        body = node.get(kind)
        if isinstance(body, dict):
            finding = _comparison(kind, body, env, source)
            if finding is not None:
                yield finding
    for value in node.values():
        yield from _walk(value, env, source)


def _bind(stmt: Json, scope: dict[str, str]) -> None:
    """``x := <typed term>`` makes ``x`` of that type in the rest of the query."""
    literal = stmt.get("literal") if isinstance(stmt, dict) else None
    expr = literal.get("Expr") if isinstance(literal, dict) else None
    inner = expr.get("expr") if isinstance(expr, dict) else None
    assign = inner.get("AssignExpr") if isinstance(inner, dict) else None
    if not isinstance(assign, dict) or assign.get("op") != "ColEq":
        return
    lhs = assign.get("lhs")
    var = lhs.get("Var") if isinstance(lhs, dict) else None
    name = var.get("value") if isinstance(var, dict) else None
    kind = _type(assign.get("rhs"), scope)
    if isinstance(name, str) and kind is not None:
        scope[name] = kind


def _comparison(
    kind: str, body: dict[str, Json], env: Mapping[str, str], source: bytes
) -> Finding | None:
    op = body.get("op")
    if op not in ("Eq", "Ne"):
        return None  # an AssignExpr ColEq binds; BoolExpr ordering is a total order in Rego
    left, right = body.get("lhs"), body.get("rhs")
    left_type, right_type = _type(left, env), _type(right, env)
    if left_type is None or right_type is None or left_type == right_type:
        return None
    symbol = {"Eq": "==" if kind == "BoolExpr" else "=", "Ne": "!="}[str(op)]
    outcome = "always holds" if op == "Ne" else "never holds"
    message = (
        f"`{_text(left, source)}` ({left_type}) {symbol} `{_text(right, source)}` "
        f"({right_type}): values of different types are never equal, so this condition "
        f"{outcome}"
    )
    if _RESOURCE_PATH in (_ref_path(left), _ref_path(right)):
        message += (
            '; data["resource-path"] is a list of segments such as ["default", "key", "db"]: '
            'compare it with a list, or concat("/", data["resource-path"]) with the string'
        )
    start, _ = _extent(left)
    line, col = _position(source, start) if start >= 0 else (0, 0)
    return Finding("type-mismatch", line, col, message)


# --- probes -------------------------------------------------------------------------------


def _token(status: str, level: int) -> JsonObject:
    vector = dict.fromkeys(
        ("instance-identity", "configuration", "executables", "hardware", "file-system"), level
    )
    return {
        "eat_profile": "tag:github.com,2023:veraison/ear",
        "iat": 1_700_000_000,
        "exp": 1_700_003_600,
        "iss": "custodes",
        "jti": "lint-probe",
        "ear.verifier-id": {"build": "custodes", "developer": "custodes"},
        "submods": {
            "cpu0": {
                "ear.status": status,
                "ear.trustworthiness-vector": vector,
                "ear.appraisal-policy-id": "default_cpu",
                "ear.veraison.annotated-evidence": {},
            }
        },
    }


_TOKENS: Final[Mapping[str, JsonObject]] = {
    "affirming": _token("affirming", 2),
    "contraindicated": _token("contraindicated", 96),
}


def _literals(node: Json, found: list[str]) -> None:
    if isinstance(node, list):
        for item in node:
            _literals(item, found)
    elif isinstance(node, dict):
        for kind in ("String", "RawString"):
            body = node.get(kind)
            value = body.get("value") if isinstance(body, dict) else None
            if isinstance(value, str) and value and value not in found:
                found.append(value)
        for value in node.values():
            _literals(value, found)


def _array_paths(node: Json, found: list[list[str]]) -> None:
    """Array literals of three strings (``["default", "key", "db"]``): whole paths."""
    if isinstance(node, list):
        for item in node:
            _array_paths(item, found)
    elif isinstance(node, dict):
        body = node.get("Array")
        items = _items(body.get("items")) if isinstance(body, dict) else []
        values = [_constant_string(item) for item in items]
        strings = [v for v in values if v]
        if len(items) == 3 and len(strings) == 3 and strings not in found:
            found.append(strings)
        for value in node.values():
            _array_paths(value, found)


def _constant_string(node: Json) -> str | None:
    for kind in ("String", "RawString"):
        body = node.get(kind) if isinstance(node, dict) else None
        value = body.get("value") if isinstance(body, dict) else None
        if isinstance(value, str):
            return value
    return None


def _probe_paths(module: dict[str, Json]) -> list[list[str]]:
    filler = "lint-probe-" + secrets.token_hex(4)
    paths: list[list[str]] = [[filler, filler, filler]]
    _array_paths(module.get("rules"), paths)
    literals: list[str] = []
    _literals(module.get("rules"), literals)
    for literal in literals[:_MAX_LITERAL_PROBES]:
        segments = literal.strip("/").split("/")
        if len(segments) == 3 and all(segments):
            paths.append(segments)
        elif "/" not in literal:
            paths.extend(
                [[literal, filler, filler], [filler, literal, filler], [filler, filler, literal]]
            )
    return paths


def _reads_resource_path(node: Json) -> bool:
    if isinstance(node, list):
        return any(_reads_resource_path(item) for item in node)
    if not isinstance(node, dict):
        return False
    if len(node) == 1 and next(iter(node)) in ("RefDot", "RefBrack"):
        path = _ref_path(node)
        if path is not None and path[:2] == _RESOURCE_PATH:
            return True
    return any(_reads_resource_path(value) for value in node.values())


def _probe(policy: str, module: dict[str, Json]) -> Iterator[Finding]:
    paths = _probe_paths(module)
    decisions: dict[str, list[bool]] = {}
    for name, token in _TOKENS.items():
        outcomes = decisions.setdefault(name, [])
        for path in paths:
            data: JsonObject = {"plugin": "resource", "resource-path": list(path), "query": {}}
            try:
                outcomes.append(RegoEngine.evaluate(policy, _ALLOW, input=token, data=data) is True)
            except PolicyError as e:
                yield Finding(
                    "evaluation-error",
                    0,
                    0,
                    f"evaluating allow for a {name} token and path {'/'.join(path)} fails "
                    f"({e}): the broker answers such a request with an error",
                )
                return
    if decisions["contraindicated"][0]:
        yield Finding(
            "allows-unappraised",
            0,
            0,
            "a token whose appraisal is contraindicated is released a path the policy never "
            f"names ({'/'.join(paths[0])}): every path is released without an affirming "
            "appraisal",
        )
    if _reads_resource_path(module.get("rules")):
        for name, outcomes in decisions.items():
            if all(outcomes) and len(paths) > 1:
                yield Finding(
                    "path-ignored",
                    0,
                    0,
                    f'the policy reads data["resource-path"], but no path changes its decision: '
                    f"every path tried ({len(paths)}, from its own literals) is released to the "
                    f"{name} probe token, so its conditions on the path never hold",
                )
                break
