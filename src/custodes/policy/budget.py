"""Rego evaluation with a time budget, for policies written by tenants.

regorus's Python binding has no execution limit, and a thread cannot be stopped, so a policy
that computes for minutes would hold its worker thread (and, on the event loop, the whole
broker) for minutes. Here an evaluation runs in a worker *process* instead: the caller waits at
most ``seconds`` for the answer; when the budget is spent the process is killed (the only
way to stop regorus mid-evaluation), a fresh one takes its place on the next call, and the
caller gets :class:`PolicyBudgetExceeded`.

Worker processes are fresh interpreters (never ``fork``: the broker has threads), started on
first need, at most :data:`MAX_WORKERS` at a time; an idle one is reused. Requests and answers
are JSON, as the policy's input and data are. A worker keeps the engine's
per-thread parse cache, so a policy is parsed once per worker, not per call. The cost per call
is one round trip over a pipe with the input as JSON (see ``docs/benchmarks.md`` for the
figure), against a broker frozen for as long as the policy computes without it.

The policies custodes ships (:mod:`custodes.policy.defaults`), byte for byte, are the one
exception: they are evaluated in the calling thread by the worker's own code
(:func:`custodes.policy.rego_worker.answer`), because their cost is bounded by their input and
they are ours, not a tenant's. A tenant's copy with any change goes to a worker.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import custodes
from custodes.errors import PolicyError
from custodes.policy.defaults import DEFAULT_POLICY_NAMES, default_policy
from custodes.policy.engine import UNDEFINED
from custodes.policy.rego_worker import answer
from custodes.types.json import Json

DEFAULT_SECONDS: Final = 2.0
MAX_WORKERS: Final = 8
_START_SECONDS: Final = 30.0


class PolicyBudgetExceeded(PolicyError):
    code = "policy-budget-exceeded"


@functools.cache
def _shipped() -> frozenset[str]:
    return frozenset(default_policy(name) for name in DEFAULT_POLICY_NAMES)


def is_shipped(policy: str) -> bool:
    """Whether ``policy`` is, to the byte, one of the policies custodes ships."""
    return policy in _shipped()


class _Worker:
    """One worker process (``python -m custodes.policy.rego_worker``), spoken to over its
    stdin and stdout: a length-prefixed JSON request, a length-prefixed JSON answer. Not
    ``multiprocessing``: its ``spawn`` re-imports the parent's ``__main__``, which a broker
    started from an embedding script or ``python -c`` may not allow."""

    def __init__(self) -> None:
        package_root = str(Path(custodes.__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "custodes.policy.rego_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        if self._read(_START_SECONDS) is None:
            self.kill()
            raise PolicyError("the policy worker did not start")

    def ask(self, request: Json, seconds: float) -> Json | None:
        """The answer to ``request``, or ``None`` if none came within ``seconds``."""
        stdin = self.process.stdin
        if stdin is None:
            raise OSError("worker has no stdin")
        frame = json.dumps(request, separators=(",", ":")).encode()
        stdin.write(len(frame).to_bytes(4, "big") + frame)
        stdin.flush()
        return self._read(seconds)

    def _read(self, seconds: float) -> Json | None:
        stdout = self.process.stdout
        if stdout is None:
            raise OSError("worker has no stdout")
        deadline = time.monotonic() + seconds
        header = self._exactly(stdout.fileno(), 4, deadline)
        if header is None:
            return None
        body = self._exactly(stdout.fileno(), int.from_bytes(header, "big"), deadline)
        if body is None:
            return None
        answer: Json = json.loads(body)
        return answer

    @staticmethod
    def _exactly(fd: int, size: int, deadline: float) -> bytes | None:
        chunks: list[bytes] = []
        while size > 0:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, size)
            if not chunk:
                raise EOFError("the policy worker exited")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(5)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


class BudgetedEvaluator:
    """A small pool of worker processes; :meth:`run` blocks its (worker) thread."""

    def __init__(self, max_workers: int = MAX_WORKERS) -> None:
        self._idle: list[_Worker] = []
        self._started = 0
        self._max = max_workers
        self._cond = threading.Condition()
        self._pid = os.getpid()

    def _take(self) -> _Worker:
        with self._cond:
            while not self._idle and self._started >= self._max:
                self._cond.wait()
            if self._idle:
                return self._idle.pop()
            self._started += 1
        try:
            return _Worker()
        except BaseException:
            self._lost()
            raise

    def _lost(self) -> None:
        with self._cond:
            self._started -= 1
            self._cond.notify()

    def _give_back(self, worker: _Worker) -> None:
        with self._cond:
            self._idle.append(worker)
            self._cond.notify()

    def run(
        self,
        op: str,
        policy: str,
        query: str | list[str],
        *,
        input: Json,
        data: Json | None,
        reference_values: Mapping[str, Json] | None,
        seconds: float,
    ) -> object:
        request: Json = {
            "op": op,
            "policy": policy,
            "query": query,
            "input": input,
            "data": data,
            "reference_values": dict(reference_values) if reference_values is not None else None,
        }
        if is_shipped(policy):
            # A policy custodes ships, unchanged: written and reviewed here, bounded by its
            # input (itself bounded by the request size limits), so it needs no budget. The
            # worker's own code evaluates it, in this thread: the same answers, without the
            # process round trip (most brokers run the shipped attestation policy).
            reply: Json = answer(request)
        else:
            reply = self._ask_worker(request, seconds)
        if not isinstance(reply, dict) or not isinstance(reply.get("error", ""), str):
            raise PolicyError("the policy worker answered an unexpected shape")
        if "error" in reply:
            raise PolicyError(str(reply["error"]))
        if reply.get("undefined") is True:
            return UNDEFINED
        if op == "rules":
            return _rules(reply)
        return reply.get("value")

    def _ask_worker(self, request: Json, seconds: float) -> Json:
        worker = self._take()
        try:
            reply = worker.ask(request, seconds)
        except (OSError, EOFError, ValueError) as e:
            worker.kill()
            self._lost()
            raise PolicyError(
                "policy evaluation failed: its worker process stopped (over its memory limit, "
                "or crashed)"
            ) from e
        if reply is None:
            worker.kill()
            self._lost()
            raise PolicyBudgetExceeded(
                f"policy evaluation exceeded its budget of {seconds:g} s and was stopped; "
                "the policy must be changed"
            )
        self._give_back(worker)
        return reply

    def close(self) -> None:
        if os.getpid() != self._pid:
            return  # a forked child's copy: the workers are its parent's
        with self._cond:
            idle, self._idle = self._idle, []
            self._started -= len(idle)
        for worker in idle:
            worker.kill()


@functools.cache
def evaluator() -> BudgetedEvaluator:
    """The process's evaluator (made on first use; its workers stop when the process does)."""
    made = BudgetedEvaluator()
    atexit.register(made.close)
    return made


# A forked broker worker (``serve --workers``) must not share its parent's worker pipes: it
# starts its own evaluator on first need.
os.register_at_fork(after_in_child=evaluator.cache_clear)


def evaluate_within_budget(
    policy: str,
    query: str,
    *,
    input: Json,
    data: Json | None = None,
    reference_values: Mapping[str, Json] | None = None,
    seconds: float = DEFAULT_SECONDS,
) -> Json:
    """``RegoEngine.evaluate`` in a worker process, stopped after ``seconds``.

    Returns the engine's ``UNDEFINED`` for an undefined value. ``reference_values`` (id ->
    values), if given, answers the policy's ``query_reference_value``."""
    value = evaluator().run(
        "evaluate",
        policy,
        query,
        input=input,
        data=data,
        reference_values=reference_values,
        seconds=seconds,
    )
    if value is UNDEFINED:
        return UNDEFINED
    if isinstance(value, list | dict | str | int | float | bool) or value is None:
        return value
    raise PolicyError("the policy worker answered an unexpected shape")


def _rules(reply: dict[str, Json]) -> dict[str, Json]:
    values, undefined = reply.get("value"), reply.get("undefined_rules")
    if not isinstance(values, dict) or not isinstance(undefined, list):
        raise PolicyError("the policy worker answered an unexpected shape")
    out: dict[str, Json] = dict(values)
    out.update({str(name): UNDEFINED for name in undefined})
    return out


def evaluate_rules_within_budget(
    policy: str,
    queries: list[str],
    *,
    input: Json,
    data: Json | None = None,
    reference_values: Mapping[str, Json] | None = None,
    seconds: float = DEFAULT_SECONDS,
) -> dict[str, Json]:
    """``RegoEngine.evaluate_rules`` in a worker process, stopped after ``seconds``."""
    result = evaluator().run(
        "rules",
        policy,
        queries,
        input=input,
        data=data,
        reference_values=reference_values,
        seconds=seconds,
    )
    if not isinstance(result, dict):
        raise PolicyError("the policy worker answered an unexpected shape")
    return result


def explain_within_budget(
    policy: str,
    rule: str | list[str],
    *,
    input: Json,
    data: Json | None = None,
    reference_values: Mapping[str, Json] | None = None,
    seconds: float = DEFAULT_SECONDS,
) -> list[Json]:
    """The failed conditions of ``rule`` (``FailedCondition.to_json()`` each), within budget."""
    result = evaluator().run(
        "explain",
        policy,
        rule,
        input=input,
        data=data,
        reference_values=reference_values,
        seconds=seconds,
    )
    if not isinstance(result, list):
        raise PolicyError("the policy worker answered an unexpected shape")
    return result
