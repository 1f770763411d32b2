"""Instrumented evaluation of a Rego policy: where each rule body stopped, and the values the
operands of its statements had there.

regorus parses the policy; its syntax tree gives every rule body's statements with their byte
spans. The policy is then evaluated as a rewritten copy in which each body prints a marker
when it is entered and after each statement, and each comparison prints its operands (as
JSON) before it runs. A statement passed when its marker printed in some evaluation of the
body (iterations of ``some`` and calls of a function count together: the furthest any of
them got); the first statement of an entered body whose marker never printed is the one that
stopped it. Statements can be *relaxed* (replaced by ``true``) to see what would stop the
body next: Rego stops a body at its first false statement, so this is how every failing
statement is found, one round per statement of the longest body.

Nothing here decides anything: the broker's decision is always the plain evaluation of the
unmodified policy (:mod:`custodes.policy.engine`). This runs only to explain a decision or to
suggest reference values, and a policy the rewrite does not fit is reported as untraceable.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import regorus

from custodes.errors import PolicyError
from custodes.policy.engine import UNDEFINED
from custodes.types.json import Json

_FILE: Final = "policy.rego"
_MARK: Final = "custodes-trace-mark"
_PROBE: Final = "custodes-trace-probe"
_PRINTED: Final = re.compile(r"^[^:]*:\d+: (\S+) (\S+)(?: (.*))?$", re.DOTALL)
# A statement that only tests which TEE the evidence is from (``input.snp``,
# ``vm := input["az-snp-vtpm"]``): it stops the body for every other TEE by design.
_GUARD: Final = re.compile(
    r"^\s*(?:[A-Za-z_][A-Za-z0-9_]*\s*:=\s*)?input(?:\.[A-Za-z_][A-Za-z0-9_-]*|\[\"[^\"]+\"\])\s*$"
)
_LITERALS: Final = frozenset({"String", "RawString", "Number", "Bool", "Null"})
_QUOTED: Final = frozenset({"String", "RawString"})
# Statements that can be replaced by ``true`` without leaving a later one with an unbound
# variable (``some x in ...`` and assignments bind variables).
_RELAXABLE: Final = frozenset({"Expr", "NotExpr", "Every"})


class TraceUnavailable(PolicyError):
    """The instrumented copy of the policy did not compile or evaluate."""


@dataclass(frozen=True, slots=True)
class Operand:
    """One side of a comparison, or one argument of a call."""

    text: str
    literal: bool
    strings: frozenset[str]
    names: frozenset[str]


@dataclass(frozen=True, slots=True)
class Statement:
    id: int
    body: int
    rule: str
    line: int
    start: int
    end: int
    text: str
    literal: str  # Expr, NotExpr, SomeIn, Every
    expr: str | None  # for Expr: BoolExpr, Membership, Call, AssignExpr, ...
    op: str | None  # for BoolExpr: Eq, Ne, Lt, Le, Gt, Ge
    operands: tuple[Operand, ...]
    binds: frozenset[str]
    strings: frozenset[str]
    names: frozenset[str]

    @property
    def relaxable(self) -> bool:
        return self.literal in _RELAXABLE and self.expr != "AssignExpr"

    @property
    def guard(self) -> bool:
        return bool(_GUARD.match(self.text))

    @property
    def condition(self) -> str:
        """The statement as shown to a person: its first line."""
        first = self.text.splitlines()[0].strip()
        return first if "\n" not in self.text or self.literal == "Every" else f"{first} …"


@dataclass(frozen=True, slots=True)
class Body:
    id: int
    rule: str
    braced: bool
    start: int
    end: int
    statements: tuple[Statement, ...]


def _typed(node: Json) -> Iterator[tuple[str, dict[str, Json]]]:
    """Every typed node (``{"Kind": {..."span"...}}``) of a syntax subtree."""
    if isinstance(node, dict):
        if len(node) == 1:
            ((kind, inner),) = node.items()
            if isinstance(inner, dict) and "span" in inner:
                yield kind, inner
        for value in node.values():
            yield from _typed(value)
    elif isinstance(node, list):
        for value in node:
            yield from _typed(value)


def _extent(node: Json) -> tuple[int, int]:
    """The byte span of a subtree (regorus's string spans exclude the quotes)."""
    starts, ends = [], []
    for kind, inner in _typed(node):
        span = inner["span"]
        quote = 1 if kind in _QUOTED else 0
        starts.append(span["start"] - quote)
        ends.append(span["end"] + quote)
    if isinstance(node, dict) and isinstance(node.get("span"), dict):
        starts.append(node["span"]["start"])
        ends.append(node["span"]["end"])
    return min(starts), max(ends)


def _strings(node: Json) -> frozenset[str]:
    return frozenset(
        inner["value"]
        for kind, inner in _typed(node)
        if kind in _QUOTED and isinstance(inner.get("value"), str)
    )


def _names(node: Json) -> frozenset[str]:
    return frozenset(
        inner["value"]
        for kind, inner in _typed(node)
        if kind == "Var" and isinstance(inner.get("value"), str)
    )


def _rule_name(head: Json) -> str:
    ((_, inner),) = head.items()
    refr = inner["refr"]
    while "Var" not in refr:
        ((_, deeper),) = refr.items()
        refr = deeper["refr"]
    name = refr["Var"]["value"]
    return str(name)


@dataclass(frozen=True, slots=True)
class Program:
    """A policy's rule bodies and statements, as regorus parsed them."""

    source: bytes
    bodies: tuple[Body, ...]
    # Rules worth looking inside when a statement that uses them fails: rules with a body that
    # are not one-statement functions (``accepted(v, id) if v in rv(id)`` is read as a leaf).
    helpers: frozenset[str]
    functions: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, policy: str) -> Program:
        engine = regorus.Engine()
        try:
            engine.add_policy(_FILE, policy)
            tree = json.loads(engine.get_ast_as_json())
        except (RuntimeError, ValueError) as e:
            raise TraceUnavailable(f"cannot read the policy's syntax tree: {e}") from e
        source = policy.encode("utf-8")
        bodies: list[Body] = []
        helpers: set[str] = set()
        functions: set[str] = set()
        next_statement = 0
        for rule in tree[0]["ast"]["rules"]:
            spec = rule.get("Spec")
            if not isinstance(spec, dict):
                continue  # default rules have no body
            head = spec["head"]
            name = _rule_name(head)
            is_function = "Func" in head
            if is_function:
                functions.add(name)
            for body in spec["bodies"]:
                query = body["query"]
                if not query["stmts"]:
                    continue  # `else := value` without a condition: nothing to trace
                q_start, q_end = query["span"]["start"], query["span"]["end"]
                statements = []
                for stmt in query["stmts"]:
                    s = cls._statement(source, next_statement, len(bodies), name, stmt)
                    statements.append(s)
                    next_statement += 1
                braced = source[q_start : q_start + 1] == b"{"
                bodies.append(Body(len(bodies), name, braced, q_start, q_end, tuple(statements)))
                if not is_function or len(statements) > 1:
                    helpers.add(name)
        return cls(source, tuple(bodies), frozenset(helpers), frozenset(functions))

    @staticmethod
    def _statement(source: bytes, sid: int, body: int, rule: str, stmt: Json) -> Statement:
        start, end = _extent(stmt)
        literal_kind, literal = next(iter(stmt["literal"].items()))
        expr_kind = op = None
        operands: list[Json] = []
        binds: frozenset[str] = frozenset()
        if literal_kind == "Expr":
            expr_kind, expr = next(iter(literal["expr"].items()))
            if expr_kind == "BoolExpr":
                op = str(expr["op"])
                operands = [expr["lhs"], expr["rhs"]]
            elif expr_kind == "Membership":
                operands = [x for x in (expr["key"], expr["value"], expr["collection"]) if x]
            elif expr_kind == "Call":
                operands = list(expr["params"])
            elif expr_kind == "AssignExpr":
                binds = _names(expr["lhs"])
            else:
                operands = [literal["expr"]]
        parsed = []
        for node in operands:
            o_start, o_end = _extent(node)
            parsed.append(
                Operand(
                    text=source[o_start:o_end].decode("utf-8"),
                    # A constant (``"x"``, ``[1, 2]``): nothing of the input to show.
                    literal=next(iter(node)) in _LITERALS or not _names(node),
                    strings=_strings(node),
                    names=_names(node),
                )
            )
        return Statement(
            id=sid,
            body=body,
            rule=rule,
            line=int(stmt["span"]["line"]),
            start=start,
            end=end,
            text=source[start:end].decode("utf-8"),
            literal=literal_kind,
            expr=expr_kind,
            op=op,
            operands=tuple(parsed),
            binds=binds,
            strings=_strings(stmt),
            names=_names(stmt),
        )

    @property
    def statements(self) -> dict[int, Statement]:
        return {s.id: s for b in self.bodies for s in b.statements}

    def rule_bodies(self, rule: str) -> list[Body]:
        return [b for b in self.bodies if b.rule == rule]

    def instrumented(self, relaxed: frozenset[int]) -> str:
        """The policy rewritten with markers, probes, and ``relaxed`` statements as ``true``."""
        edits: list[tuple[int, int, int, str]] = []  # (start, order, end, text)
        for body in self.bodies:
            entered = f'print("{_MARK} B{body.id}")'
            if body.braced:
                edits.append((body.start + 1, 0, body.start + 1, f" {entered}; "))
            else:
                edits.append((body.start, 0, body.start, f"{{ {entered}; "))
                edits.append((body.end, 9, body.end, " }"))
            for s in body.statements:
                for k, operand in enumerate(s.operands):
                    if operand.literal or s.id in relaxed:
                        continue
                    probe = f'print("{_PROBE} S{s.id}:{k}", json.marshal({operand.text})); '
                    edits.append((s.start, 1, s.start, probe))
                if s.id in relaxed:
                    edits.append((s.start, 2, s.end, "true"))
                edits.append((s.end, 3, s.end, f'; print("{_MARK} S{s.id}")'))
        out, cursor = [], 0
        for start, _, end, text in sorted(edits, key=lambda e: (e[0], e[1])):
            out.append(self.source[cursor:start])
            out.append(text.encode("utf-8"))
            cursor = max(cursor, end)
        out.append(self.source[cursor:])
        return b"".join(out).decode("utf-8")


@functools.lru_cache(maxsize=16)
def program_of(policy: str) -> Program:
    """:meth:`Program.parse`, remembered: reading the syntax tree costs several evaluations,
    and a broker explains denials under the same few active policies again and again."""
    return Program.parse(policy)


@dataclass(frozen=True, slots=True)
class Run:
    """What one instrumented evaluation printed."""

    entered: frozenset[int]
    passed: frozenset[int]
    # Statement id -> each evaluation's operand values (UNDEFINED where an operand had none).
    probes: Mapping[int, list[dict[int, Json]]]
    # Every reference value id the policy asked for, with the value it got.
    queried: Mapping[str, Json]

    def stopped_at(self, body: Body) -> Statement | None:
        """The statement that stopped ``body``; None if it was not entered or ran through."""
        if body.id not in self.entered:
            return None
        return next((s for s in body.statements if s.id not in self.passed), None)

    def values(self, statement: Statement, index: int) -> list[Json]:
        """The distinct defined values operand ``index`` of ``statement`` had."""
        seen: list[Json] = []
        for probe in self.probes.get(statement.id, []):
            value = probe.get(index, UNDEFINED)
            if value is not UNDEFINED and value not in seen:
                seen.append(value)
        return seen


Builtins = Mapping[str, tuple[int, Callable[..., Json]]]


def _first(error: BaseException) -> str:
    """regorus's message without its source excerpt and Rust backtrace: the first line."""
    lines = [x.strip() for x in str(error).splitlines() if x.strip()]
    return next((x for x in lines if x.startswith("error:")), lines[0] if lines else "error")


def run(
    program: Program,
    rules: Sequence[str],
    *,
    input: Json,
    data: Json | None,
    builtins: Builtins,
    relaxed: frozenset[int] = frozenset(),
) -> Run:
    """Evaluate ``data.policy.<rule>`` for each of ``rules`` on the instrumented copy."""
    queried: dict[str, Json] = {}
    engine = regorus.Engine()
    try:
        engine.add_policy(_FILE, program.instrumented(relaxed))
    except RuntimeError as e:
        raise TraceUnavailable(f"the instrumented policy does not compile: {_first(e)}") from e
    for name, (arity, function) in builtins.items():
        if name == "query_reference_value":

            def record(rv_id: Json, _f: Callable[..., Json] = function) -> Json:
                value = _f(rv_id)
                if isinstance(rv_id, str):
                    queried.setdefault(rv_id, value)
                return value

            engine.add_extension(name, arity, record)
        else:
            engine.add_extension(name, arity, function)
    if data is not None:
        engine.add_data(data)
    engine.set_input(input)
    engine.set_gather_prints(True)
    defined = {b.rule for b in program.bodies}
    for rule in rules:
        if rule not in defined:
            continue  # no such rule, or only its default: nothing to trace
        try:
            engine.eval_rule(f"data.policy.{rule}")
        except RuntimeError as e:
            raise TraceUnavailable(f"the instrumented policy does not evaluate: {_first(e)}") from e
    entered: set[int] = set()
    passed: set[int] = set()
    probes: dict[int, list[dict[int, Json]]] = {}
    for line in engine.take_prints():
        m = _PRINTED.match(line)
        if m is None:
            continue  # the policy's own print statements
        tag, what, value = m.groups()
        if tag == _MARK and what.startswith("B"):
            entered.add(int(what[1:]))
        elif tag == _MARK and what.startswith("S"):
            passed.add(int(what[1:]))
        elif tag == _PROBE:
            sid, _, k = what[1:].partition(":")
            parsed: Json = UNDEFINED
            if value is not None and value != "<undefined>":
                try:
                    parsed = json.loads(value)
                except ValueError:
                    parsed = UNDEFINED
            evaluations = probes.setdefault(int(sid), [])
            # A new evaluation of the statement starts at its first operand.
            if not evaluations or int(k) in evaluations[-1]:
                evaluations.append({})
            evaluations[-1][int(k)] = parsed
    return Run(frozenset(entered), frozenset(passed), probes, queried)


_INPUT_PATH: Final = re.compile(r"\binput((?:\.[A-Za-z_][A-Za-z0-9_]*|\[\"[^\"]*\"\])+)")
_DATA_PATH: Final = re.compile(r"\bdata((?:\.[A-Za-z_][A-Za-z0-9_]*|\[\"[^\"]*\"\])+)")
_PATH_PART: Final = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[\"([^\"]*)\"\]")


def _resolve(obj: Json, path: str) -> Json:
    for part in _PATH_PART.findall(path):
        key = part[0] or part[1]
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


@dataclass(frozen=True, slots=True)
class Failure:
    """A statement that stopped its body, with what it read."""

    statement: Statement
    # The rule asked about whose failure this explains (the statement may be in a helper).
    root: str
    # Reference value id -> the value the policy got for it.
    reference_values: dict[str, Json]
    # Operand text (or input/data path) -> its value (None when it had none).
    claims: dict[str, Json]
    # (operand index, values) of the operands that are not reference values: the claims a
    # reference value is compared with.
    compared: tuple[tuple[int, tuple[Json, ...]], ...]
    # Shown to the admin: it names a reference value or a claim the evidence has.
    reportable: bool
    # Replaced by ``true`` in the next round (not when a helper it calls is relaxed instead).
    relax: bool


def _bound_ids(body: Body, queried: Mapping[str, Json]) -> dict[str, set[str]]:
    """Variable -> the reference value ids its assignment in ``body`` read."""
    bound: dict[str, set[str]] = {}
    for s in body.statements:
        ids = {x for x in s.strings if x in queried}
        for var in s.binds:
            bound.setdefault(var, set()).update(ids)
    return bound


def reads(
    program: Program, run: Run, s: Statement, *, input: Json, data: Json | None
) -> tuple[dict[str, Json], dict[str, Json], tuple[tuple[int, tuple[Json, ...]], ...]]:
    """What ``s`` read in ``run``: (reference values, claims, compared claim values)."""
    body = program.bodies[s.body]
    bound = _bound_ids(body, run.queried)
    ids = {x for x in s.strings if x in run.queried}
    for var in s.names:
        ids |= bound.get(var, set())
    claims: dict[str, Json] = {}
    compared: list[tuple[int, tuple[Json, ...]]] = []
    for k, operand in enumerate(s.operands):
        rv_side = bool(operand.strings & run.queried.keys()) or any(
            bound.get(v) for v in operand.names
        )
        if operand.literal or rv_side:
            continue
        values = run.values(s, k)
        claims[operand.text] = values[0] if values else None
        compared.append((k, tuple(values)))
    if not s.operands:
        # ``every``, ``not``: the input and data paths the statement reads.
        claims = {f"input{p}": _resolve(input, p) for p in _INPUT_PATH.findall(s.text)}
        if data is not None:
            claims.update(
                {
                    f"data{p}": _resolve(data, p)
                    for p in _DATA_PATH.findall(s.text)
                    if not p.startswith(".policy")
                }
            )
    rvs = {rv: run.queried.get(rv) for rv in sorted(ids)}
    return rvs, claims, tuple(compared)


def failures(
    program: Program,
    run: Run,
    rules: Sequence[str],
    *,
    input: Json,
    data: Json | None = None,
) -> list[Failure]:
    """The statements that stopped the bodies of ``rules`` in ``run``, innermost first: a
    statement that uses a helper rule (``snp_platform_as_expected``) is replaced by the
    helper's own failing statements when they name something."""
    found: list[Failure] = []
    visited: set[str] = set()

    def visit(rule: str, root: str) -> tuple[bool, bool]:
        """(a reportable failure was found, a relaxable failure was found) under ``rule``."""
        visited.add(rule)
        any_report = any_relax = False
        for body in program.rule_bodies(rule):
            s = run.stopped_at(body)
            if s is None or s.guard:
                continue
            child_report = child_relax = False
            for helper in sorted((s.names & program.helpers) - visited - {rule}):
                r, x = visit(helper, root)
                child_report |= r
                child_relax |= x
            rvs, claims, compared = reads(program, run, s, input=input, data=data)
            named = bool(rvs) or any(v is not None for v in claims.values())
            reportable = named and not child_report
            relax = s.relaxable and not child_relax
            found.append(Failure(s, root, rvs, claims, compared, reportable, relax))
            any_report |= reportable or child_report
            any_relax |= relax or child_relax
        return any_report, any_relax

    for rule in rules:
        if rule not in visited:
            visit(rule, rule)
    return found
