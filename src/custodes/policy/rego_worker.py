"""The worker process of :mod:`custodes.policy.budget`: reads length-prefixed JSON requests on
stdin, evaluates each with the Rego engine adapter, writes a length-prefixed JSON answer.

An answer is ``{"value": V}``, ``{"undefined": true}`` or ``{"error": MESSAGE}``. The process
is killed by its parent when an evaluation exceeds its budget; it never exits on its own while
its stdin is open.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from typing import BinaryIO

from custodes.errors import CustodesError
from custodes.policy.engine import UNDEFINED, RegoEngine
from custodes.policy.explain import explain
from custodes.types.json import Json, JsonObject


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
        if not isinstance(policy, str) or not isinstance(query, str):
            return {"error": "malformed request"}
        values = request.get("reference_values")
        builtins = (
            {"query_reference_value": (1, _lookup(values))} if isinstance(values, dict) else {}
        )
        input_, data = request.get("input"), request.get("data")
        if request.get("op") == "explain":
            failed = explain(policy, [query], input=input_, data=data, builtins=builtins)
            return {"value": [f.to_json() for f in failed]}
        value = RegoEngine.evaluate(policy, query, input=input_, data=data, builtins=builtins)
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
