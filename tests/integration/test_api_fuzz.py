"""API fuzzing: schemathesis against the OpenAPI document the live broker serves.

For every documented operation, a bounded, derandomized run of generated requests (inputs that
fit the document and inputs that break it) goes over real HTTP to a broker on a loopback port,
once without credentials and once with a valid admin bearer token (operations that declare the
``adminJwt`` scheme). Every response must be:

- never a 5xx;
- when it is an error (>= 400), an ``ErrorInformation``: a JSON object with exactly ``type`` and
  ``detail``, ``type`` under the upstream KBS error namespace;
- conformant to the document (status code declared, content type declared, body valid against
  the declared schema), checked by schemathesis's own checks.

The broker has no operator key configured, so the operator API answers every request with an
``ErrorInformation`` refusal; it is fuzzed like the rest. ``CUSTODES_API_FUZZ_EXAMPLES`` sets the
examples per operation and mode (default 25); see docs/fuzzing.md.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import APIOperation, Case, CheckContext, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from custodes.admin_client import admin_token, load_admin_key
from live_broker import LiveBroker

ERROR_PREFIX: Final = "https://github.com/confidential-containers/kbs/errors/"
EXAMPLES_ENV: Final = "CUSTODES_API_FUZZ_EXAMPLES"

Operation = APIOperation[Any, Any, Any, Any]
AnyCase = Case[Any]


def _examples() -> int:
    raw = os.environ.get(EXAMPLES_ENV, "")
    if not raw:
        return 25
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{EXAMPLES_ENV} must be a positive integer, not {raw!r}")
    return int(raw)


EXAMPLES: Final = _examples()


def error_information(ctx: CheckContext, response: Response, case: AnyCase) -> bool | None:
    """Every error answer is an ``ErrorInformation`` and nothing more."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), f"error content type {content_type!r}"
    body = json.loads(response.content)
    assert isinstance(body, dict), f"error body is not an object: {body!r}"
    assert set(body) == {"type", "detail"}, f"error body keys {sorted(body)}"
    assert isinstance(body["type"], str), body
    assert body["type"].startswith(ERROR_PREFIX), body
    assert isinstance(body["detail"], str), body
    assert "Traceback" not in body["detail"], body
    return True


# Not schemathesis's negative_data_rejection: the broker, like upstream, ignores query
# parameters it does not know (schemathesis counts an unknown one as invalid input), and
# schemathesis negates the security requirement by dropping Authorization, which this test
# puts back on every admin request.
CHECKS: Final[list[Callable[[CheckContext, Response, AnyCase], bool | None]]] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    error_information,
]


@dataclass
class Tally:
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    runs: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


def _has_inputs(operation: Operation) -> bool:
    # With no parameter and no body there is nothing a negative case could break
    # (Hypothesis would report the strategy as unsatisfiable).
    return any(
        len(part)
        for part in (
            operation.path_parameters,
            operation.query,
            operation.headers,
            operation.cookies,
            operation.body,
        )
    )


def _requires_admin(raw: dict[str, Any], operation: Operation) -> bool:
    definition = raw["paths"][operation.path][operation.method.lower()]
    return any("adminJwt" in alt for alt in definition.get("security", []))


def _fuzz(
    operation: Operation,
    mode: GenerationMode,
    url: str,
    headers: Callable[[], dict[str, str]],
    tally: Tally,
) -> None:
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: AnyCase) -> None:
        response = case.call(base_url=url, headers=headers(), timeout=30)
        tally.cases += 1
        tally.statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS)

    try:
        run()
    except BaseException as exc:  # schemathesis raises a BaseExceptionGroup of failures
        if not isinstance(exc, Exception | BaseExceptionGroup):
            raise
        tally.failures[f"{operation.label} [{mode.value}]"] = str(exc)


def _run_all(broker: LiveBroker, authenticated: bool) -> Tally:
    schema = schemathesis.openapi.from_url(f"{broker.url}/kbs/v0/openapi.json")
    key = load_admin_key(broker.data_dir / "admin-key.pem")
    tally = Tally()
    operations = []
    for result in schema.get_all_operations():
        # An operation schemathesis cannot read is a fault of the document.
        assert not isinstance(result, Err), result.err()
        operations.append(result.ok())
    assert len(operations) >= 30, "the served document lost operations"
    for operation in operations:
        admin = authenticated and _requires_admin(schema.raw_schema, operation)
        if authenticated and not admin:
            continue  # already covered by the unauthenticated run

        def headers(admin: bool = admin) -> dict[str, str]:
            # A fresh token per request: admin tokens carry a jti and may be single-use.
            token = admin_token(key, audience=broker.url)
            return {"Authorization": f"Bearer {token}"} if admin else {}

        modes = [GenerationMode.POSITIVE]
        if _has_inputs(operation):
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            _fuzz(operation, mode, broker.url, headers, tally)
            tally.runs.append(f"{operation.label} [{mode.value}]")
    return tally


def _report(capsys: pytest.CaptureFixture[str], name: str, tally: Tally) -> None:
    operations = len({run.rsplit(" [", 1)[0] for run in tally.runs})
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(tally.statuses.items()))
    # Past pytest's capture, so the counts show in the CI log of a passing run too.
    with capsys.disabled():
        print(
            f"\napi fuzz ({name}): {operations} operations, {len(tally.runs)} runs, "
            f"{tally.cases} requests ({EXAMPLES} examples per run); statuses {statuses}",
            flush=True,
        )


@pytest.mark.parametrize("authenticated", [False, True], ids=["anonymous", "admin"])
def test_every_operation_answers_without_5xx_and_with_error_information(
    broker: LiveBroker, authenticated: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    tally = _run_all(broker, authenticated)
    _report(capsys, "admin token" if authenticated else "no credentials", tally)
    assert not tally.failures, "\n\n".join(f"== {k}\n{v}" for k, v in tally.failures.items())
    assert tally.cases > 0
    assert not any(status >= 500 for status in tally.statuses)
    if authenticated:
        # The token is accepted: some answers get past authentication.
        assert any(status < 400 for status in tally.statuses)
    else:
        assert 401 in tally.statuses
