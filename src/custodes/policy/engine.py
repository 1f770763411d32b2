"""The Rego engine adapter: the only module that imports ``regorus`` (gordon-to-regorus).

Dialect: policies are compiled as **Rego v1**, always, and must declare ``package policy``.
Every policy Trustee ships or tests with (attestation policies, KBS sample resource policies,
policy-engine test data) compiles in v1 mode, including those without ``import rego.v1`` that
write ``default allow = false``: v1 accepts ``=`` there and only insists on ``if``/``contains``.
Pure v0 syntax (``allow { ... }`` without ``if``) is rejected with the compiler's message, as
Trustee's own engine (regorus in v1 mode) rejects it, so there is no v0 fallback. (regorus's v0
mode would read such a policy's ``if`` as an identifier and change its meaning.)

Evaluation uses a fresh engine per call, cloned from a cached parse of the policy text (parsing
costs about as much as evaluating; cloning is nearly free), so nothing leaks between calls. The
cache is per thread because regorus engines must stay on the thread that created them.
Custom builtins such as ``query_reference_value`` are registered per call. A query whose value
is undefined yields :data:`UNDEFINED`; every other failure is a :class:`PolicyError` carrying
the engine's message, except that an error a builtin raised on purpose (a ``CustodesError``, for
instance a storage failure behind ``query_reference_value``) is re-raised as itself.

Unknown functions are reported by regorus at evaluation, not at compile time, so
:meth:`RegoEngine.check` does not catch them.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Final

import regorus

from custodes.errors import CustodesError, PolicyError
from custodes.types.json import Json

MAX_POLICY_BYTES: Final = 1 << 20
# The deepest policy seen in practice (a genpolicy agent policy) nests 7 levels; 10 levels of
# the worst bracket pattern parse in about 1 ms per 40 bytes.
MAX_NESTING: Final = 10
_PACKAGE: Final = "data.policy"
_POLICY_FILE: Final = "policy.rego"
_CACHE_PER_THREAD: Final = 32
_thread_cache = threading.local()


class _Undefined:
    """The value of a rule that no body defines (Rego's "undefined")."""

    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False


UNDEFINED: Final = _Undefined()

Builtin = tuple[int, Callable[..., Json]]
_NO_BUILTINS: Final[Mapping[str, Builtin]] = MappingProxyType({})


def _message(error: BaseException) -> str:
    """regorus's message without the Rust backtrace it appends when RUST_BACKTRACE is set."""
    text = str(error).split("Stack backtrace:", 1)[0].strip()
    return text or type(error).__name__


def _json_value(value: object) -> Json:
    """Rego sets come back as Python sets; JSON has only arrays."""
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_json_value(v) for v in value), key=repr)
    return value


def check_nesting(text: str) -> None:
    """Refuse Rego whose brackets nest deeper than :data:`MAX_NESTING`, before regorus sees
    it: regorus's parser takes time exponential in the nesting of ``[``/``{`` (about 2-4x per
    level: 24 levels take 20 s), so a deep literal would hold a worker thread for minutes.
    Strings, raw strings and comments are skipped; balance is the compiler's business."""
    depth = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i += 1
            while i < n and text[i] != '"' and text[i] != "\n":
                i += 2 if text[i] == "\\" else 1
        elif c == "`":
            end = text.find("`", i + 1)
            i = n if end < 0 else end
        elif c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif c in "[{(":
            depth += 1
            if depth > MAX_NESTING:
                line = text.count("\n", 0, i) + 1
                raise PolicyError(
                    f"policy nests brackets more than {MAX_NESTING} deep (line {line}); "
                    "the Rego parser's time grows exponentially with nesting"
                )
        elif c in "]})":
            depth = max(depth - 1, 0)
        i += 1


def _load(policy: str, *, what: str) -> regorus.Engine:
    """A regorus engine holding ``policy`` (Rego v1), after the size and nesting limits that
    keep regorus's parser bounded; ``what`` starts the compile error's message."""
    if len(policy.encode("utf-8")) > MAX_POLICY_BYTES:
        raise PolicyError(f"policy is larger than {MAX_POLICY_BYTES} bytes")
    check_nesting(policy)
    engine = regorus.Engine()
    engine.set_rego_v0(False)
    try:
        engine.add_policy(_POLICY_FILE, policy)
    except Exception as e:  # regorus raises RuntimeError/ValueError with the compiler message
        raise PolicyError(f"{what}does not compile: {compiler_message(e)}") from e
    return engine


def _compile(policy: str) -> regorus.Engine:
    engine = _load(policy, what="policy ")
    packages = engine.get_packages()
    if packages != [_PACKAGE]:
        raise PolicyError(f"policy must declare `package policy`, found {packages}")
    return engine


def _parsed(policy: str) -> regorus.Engine:
    """A parsed engine for ``policy`` (a template: evaluations use clones of it).

    regorus engines are "unsendable": one created in a thread must never be touched from
    another (pyo3 panics). The broker evaluates in worker threads, so the cache is per thread.
    """
    if not isinstance(policy, str):
        raise PolicyError("a policy must be text")
    cache: OrderedDict[str, regorus.Engine] | None = getattr(_thread_cache, "engines", None)
    if cache is None:
        cache = _thread_cache.engines = OrderedDict()
    engine = cache.get(policy)
    if engine is not None:
        cache.move_to_end(policy)
        return engine
    engine = _compile(policy)
    cache[policy] = engine
    if len(cache) > _CACHE_PER_THREAD:
        cache.popitem(last=False)
    return engine


class RegoEngine:
    """Compile-check and evaluate Rego policies (stateless)."""

    @staticmethod
    def check(policy: str) -> None:
        """Raise ``PolicyError`` (with the compiler message) unless ``policy`` compiles."""
        _parsed(policy)

    @staticmethod
    def evaluate(
        policy: str,
        query: str,
        *,
        input: Json,
        data: Json | None = None,
        builtins: Mapping[str, Builtin] = _NO_BUILTINS,
    ) -> Json:
        """The value of ``query`` (e.g. ``"data.policy.allow"``), or :data:`UNDEFINED`.

        ``builtins`` maps a function name to ``(arity, callable)``; the callable receives
        JSON values and returns one.
        """
        return RegoEngine.evaluate_rules(
            policy, (query,), input=input, data=data, builtins=builtins
        )[query]

    @staticmethod
    def evaluate_rules(
        policy: str,
        queries: Sequence[str],
        *,
        input: Json,
        data: Json | None = None,
        builtins: Mapping[str, Builtin] = _NO_BUILTINS,
    ) -> dict[str, Json]:
        """Several queries over one input, on one engine: rules that both need share the
        evaluation of their common sub-rules (the attestation policy's ``trust_claims`` and
        ``extensions`` cost little more than one). Plain rule paths use ``eval_rule``, which
        is cheaper than a query; a rule the policy does not define is :data:`UNDEFINED`.
        """
        engine = _parsed(policy).clone()
        failures: list[Exception] = []
        results: dict[str, Json] = {}
        try:
            for name, (arity, function) in builtins.items():
                engine.add_extension(name, arity, _recording(function, failures))
            if data is not None:
                if not isinstance(data, dict):
                    raise PolicyError("policy data must be a JSON object")
                engine.add_data(data)
            engine.set_input(input)
            for query in queries:
                if _RULE_PATH.fullmatch(query):
                    results[query] = _rule_value(engine, query)
                else:
                    results[query] = _single_value(engine.eval_query(query))
        except PolicyError:
            raise
        except Exception as e:
            if failures:
                first = failures[0]
                if isinstance(first, CustodesError):
                    raise first from e
                raise PolicyError(f"policy builtin failed: {first!r}") from first
            raise PolicyError(f"policy evaluation failed: {_message(e)}") from e
        except BaseException as e:
            # A Rust panic inside regorus surfaces as pyo3's PanicException, which derives from
            # BaseException; it must fail this evaluation, not the worker running it.
            if type(e).__name__ != "PanicException":
                raise
            raise PolicyError(f"policy engine failure: {_message(e)}") from e
        return results

    @staticmethod
    def ast(policy: str) -> Json:
        """regorus's AST of ``policy`` (one module: package, imports, rules; every node with
        its source span), for analyses that must read the policy as the engine does."""
        return _ast_json(_parsed(policy))


def inspect_module(
    text: str, *, rego_v0: bool, select: Callable[[Json], Sequence[str]]
) -> tuple[list[str], Json, dict[str, Json]]:
    """Compile ``text`` alone, in whatever package it declares, as Rego v0 or v1; return its
    packages, its AST and the values of the rules that ``select(ast)`` names, evaluated with no
    input and no data (:data:`UNDEFINED` when undefined).

    For Rego that custodes reads but does not enforce (the Kata agent policy in init-data).
    regorus's Python binding has no execution limit, so ``select`` must name only rules it has
    checked, on the AST, to be constants; it may raise to refuse the module.
    """
    if len(text.encode("utf-8")) > MAX_POLICY_BYTES:
        raise PolicyError(f"policy is larger than {MAX_POLICY_BYTES} bytes")
    check_nesting(text)
    engine = regorus.Engine()
    engine.set_rego_v0(rego_v0)
    try:
        engine.add_policy(_POLICY_FILE, text)
    except Exception as e:  # regorus raises RuntimeError/ValueError with the compiler message
        raise PolicyError(f"policy does not compile: {compiler_message(e)}") from e
    packages = list(engine.get_packages())
    ast = _ast_json(engine)
    values: dict[str, Json] = {}
    try:
        for path in select(ast):
            values[path] = _rule_value(engine, path)
    except PolicyError:
        raise
    except Exception as e:
        if isinstance(e, CustodesError):
            raise
        raise PolicyError(f"policy evaluation failed: {_message(e)}") from e
    except BaseException as e:
        if type(e).__name__ != "PanicException":
            raise
        raise PolicyError(f"policy engine failure: {_message(e)}") from e
    return packages, ast, values


def _ast_json(engine: regorus.Engine) -> Json:
    try:
        modules = json.loads(engine.get_ast_as_json())
    except (ValueError, RecursionError) as e:
        raise PolicyError(f"the policy engine returned an unreadable AST: {e}") from e
    if not isinstance(modules, list) or len(modules) != 1 or not isinstance(modules[0], dict):
        raise PolicyError("the policy engine returned an AST of an unexpected shape")
    module = modules[0].get("ast")
    if not isinstance(module, dict):
        raise PolicyError("the policy engine returned an AST of an unexpected shape")
    return module


_RULE_PATH = re.compile(r"data(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def _rule_value(engine: regorus.Engine, path: str) -> Json:
    try:
        value = engine.eval_rule(path)
    except RuntimeError as e:
        # regorus's only way of saying "this policy has no such rule".
        if "not a valid rule path" in str(e):
            return UNDEFINED
        raise
    if value is None:
        # eval_rule answers None both for "undefined" and for a null value; a query tells.
        return _single_value(engine.eval_query(path))
    return _json_value(value)


def _recording(function: Callable[..., Json], failures: list[Exception]) -> Callable[..., Json]:
    """Wrap a builtin so that the exception it raises survives regorus's error conversion."""

    def call(*args: Json) -> Json:
        try:
            return function(*args)
        except Exception as e:
            failures.append(e)
            raise

    return call


def _single_value(result: object) -> Json:
    if not isinstance(result, dict) or not isinstance(result.get("result"), list):
        raise PolicyError("unexpected result shape from the policy engine")
    rows = result["result"]
    if not rows:
        return UNDEFINED
    if len(rows) != 1:
        raise PolicyError(f"query has {len(rows)} results; expected one")
    expressions = rows[0].get("expressions") if isinstance(rows[0], dict) else None
    if not isinstance(expressions, list) or len(expressions) != 1:
        raise PolicyError("query must be a single expression")
    expression = expressions[0]
    if not isinstance(expression, dict) or "value" not in expression:
        raise PolicyError("unexpected result shape from the policy engine")
    return _json_value(expression["value"])


_LOCATION: Final = re.compile(r"-->\s*[^:\s]*:(\d+):(\d+)")


def compiler_message(error: BaseException) -> str:
    """regorus's multi-line diagnostic as one line: ``line L, column C: MESSAGE``."""
    text = _message(error)
    where = _LOCATION.search(text)
    errors = [ln.strip()[len("error:") :].strip() for ln in text.splitlines() if "error:" in ln]
    what = errors[0] if errors else " ".join(text.split())
    return f"line {where[1]}, column {where[2]}: {what}" if where else what


def check_compiles(policy: str, *, package: str) -> None:
    """Raise ``PolicyError`` unless ``policy`` compiles (Rego v1, as every policy here) and
    declares exactly ``package`` — for Rego that is not a broker policy, such as the Kata
    agent policy carried in init-data (``package agent_policy``)."""
    engine = _load(policy, what="")
    packages = engine.get_packages()
    if packages != [f"data.{package}"]:
        found = ", ".join(p.removeprefix("data.") for p in packages) or "none"
        raise PolicyError(f"must declare `package {package}`, found {found}")
