"""The worker process of :mod:`custodes.policy.budget`: reads length-prefixed JSON requests on
stdin, evaluates each with the Rego engine adapter, writes a length-prefixed JSON answer.

An answer is ``{"value": V}``, ``{"undefined": true}`` or ``{"error": MESSAGE}``; several rules
at once (op ``rules``) answer ``{"value": {rule: V}, "undefined_rules": [rule, ...]}``. The process
is killed by its parent when an evaluation exceeds its budget; it never exits on its own while
its stdin is open.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from collections.abc import Callable, Mapping
from typing import BinaryIO, Final

from custodes.errors import CustodesError
from custodes.policy.engine import UNDEFINED, RegoEngine
from custodes.policy.explain import explain
from custodes.types.json import Json, JsonObject

MAX_ADDRESS_SPACE: Final = 2 << 30
NICENESS: Final = 10


def _lookup(values: Mapping[str, Json]) -> Callable[[Json], Json]:
    def query_reference_value(name: Json) -> Json:
        return values.get(name) if isinstance(name, str) else None

    return query_reference_value


def answer(request: Json) -> JsonObject:
    """The answer to one request (never raises)."""
    if not isinstance(request, dict):
        return {"error": "malformed request"}
    try:
        policy, query = request["policy"], request["query"]
        queries = [query] if isinstance(query, str) else query
        if not isinstance(policy, str) or not isinstance(queries, list):
            return {"error": "malformed request"}
        if not all(isinstance(q, str) for q in queries):
            return {"error": "malformed request"}
        names = [str(q) for q in queries]
        values = request.get("reference_values")
        builtins = (
            {"query_reference_value": (1, _lookup(values))} if isinstance(values, dict) else {}
        )
        input_, data = request.get("input"), request.get("data")
        op = request.get("op")
        if op == "explain":
            failed = explain(policy, names, input=input_, data=data, builtins=builtins)
            return {"value": [f.to_json() for f in failed]}
        if op == "rules":
            values = RegoEngine.evaluate_rules(
                policy, names, input=input_, data=data, builtins=builtins
            )
            return {
                "value": {q: v for q, v in values.items() if v is not UNDEFINED},
                "undefined_rules": [q for q, v in values.items() if v is UNDEFINED],
            }
        value = RegoEngine.evaluate(policy, names[0], input=input_, data=data, builtins=builtins)
        return {"undefined": True} if value is UNDEFINED else {"value": value}
    except CustodesError as e:
        return {"error": str(e)}
    except Exception as e:  # a worker answers every request, whatever happened
        return {"error": f"policy evaluation failed: {type(e).__name__}"}


def _read(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    return data if len(data) == size else None


def _write(stream: BinaryIO, obj: Json) -> None:
    frame = json.dumps(obj, separators=(",", ":")).encode()
    stream.write(len(frame).to_bytes(4, "big") + frame)
    stream.flush()


def main() -> None:
    # Time is bounded by the parent; memory here: a policy that allocates without end makes
    # this process fail (its parent answers "the policy worker failed"), not the host swap.
    resource.setrlimit(resource.RLIMIT_AS, (MAX_ADDRESS_SPACE, MAX_ADDRESS_SPACE))
    # CPU after the broker: the policies evaluated here are tenants' (the shipped ones run in
    # the broker itself), and one tenant's slow policy must not take the cores that serve
    # every other tenant's handshakes. Its budget is wall-clock time, so on a busy machine a
    # slow policy reaches it sooner; that is the point.
    os.nice(NICENESS)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    # Nothing else may write to the answers' pipe.
    sys.stdout = sys.stderr
    _write(stdout, {"ready": True})
    while True:
        header = _read(stdin, 4)
        if header is None:
            return
        body = _read(stdin, int.from_bytes(header, "big"))
        if body is None:
            return
        try:
            request: Json = json.loads(body)
        except ValueError:
            request = None
        _write(stdout, answer(request))


if __name__ == "__main__":
    main()
