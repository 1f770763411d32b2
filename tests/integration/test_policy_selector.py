"""Upstream's 2026 RCAR additions over real HTTP: the policy selector (trustee #1521), TEE
metadata members in ``Request`` (trustee #1616), and the protocol version each client used.

The broker is the real one (uvicorn on loopback, sample TEE allowed), configured with an
``attestation.policy_id_map``; the guest side is the sample attester.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from custodes._internal.clock import FrozenClock
from custodes.admin_client import AdminClient, load_admin_key
from custodes.guest.attester.sample import SampleAttester
from custodes.kbs.app import create_app
from custodes.kbs.broker import Broker, build_broker
from custodes.kbs.config import AttestationConfig, KbsConfig, ServerConfig
from custodes.kbs.server import serve_in_thread
from custodes.policy.defaults import default_policy
from custodes.protocol.binding import HashAlgorithm, runtime_data_digest
from custodes.protocol.resource import ResourcePath
from custodes.protocol.tee_key import TeeKeyPair
from live_broker import SAMPLE_REFERENCE_VALUES, run_cli

PREFIX = "https://github.com/confidential-containers/kbs/errors/"

# Refuses everything: hardware "unrecognised". Stored as strict_cpu (selector "hardened").
STRICT_CPU = """package policy
import rego.v1
trust_claims := {"hardware": 97, "executables": 33, "configuration": 36}
"""


class Selecting:
    def __init__(self, url: str, broker: Broker, data_dir: Path) -> None:
        self.url = url
        self.broker = broker
        self.data_dir = data_dir

    def admin(self) -> AdminClient:
        return AdminClient(self.url, load_admin_key(self.data_dir / "admin-key.pem"))


@pytest.fixture
def selecting(tmp_path: Path) -> Iterator[Selecting]:
    config = KbsConfig(
        server=ServerConfig(listen="127.0.0.1:0", data_dir=tmp_path / "data"),
        attestation=AttestationConfig(
            unsafe_allow_sample_tee=True,
            policy_id_map=(("ci", "default"), ("hardened", "strict")),
        ),
    ).validate()
    b = build_broker(config, clock=FrozenClock(time.time()))
    with serve_in_thread(create_app(b), config) as url:
        live = Selecting(url, b, tmp_path / "data")
        with live.admin() as admin:
            admin.register_reference_values(SAMPLE_REFERENCE_VALUES)
            admin.set_policy("attestation", STRICT_CPU, policy_id="strict_cpu")
        yield live
    b.close()


def request(extra: Any = "", **members: Any) -> dict[str, Any]:
    return {"version": "0.4.0", "tee": "sample", "extra-params": extra, **members}


def attest(http: httpx.Client, url: str, body: dict[str, Any]) -> httpx.Response:
    """/auth with ``body``, then /attest with sample evidence; the /attest response."""
    r = http.post(f"{url}/kbs/v0/auth", json=body)
    assert r.status_code == 200, r.text
    nonce = r.json()["nonce"]
    jwk = TeeKeyPair.generate().public_jwk()
    digest = runtime_data_digest(nonce, jwk, "", HashAlgorithm.SHA384)
    evidence = {
        "runtime-data": {"nonce": nonce, "tee-pubkey": jwk},
        "tee-evidence": {
            "primary_evidence": SampleAttester().evidence(digest),
            "additional_evidence": "",
        },
    }
    return http.post(f"{url}/kbs/v0/attest", json=evidence)


def appraisal(s: Selecting, response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    claims = s.broker.ear_verifier.verify(response.json()["token"])
    cpu0: dict[str, Any] = claims["submods"]["cpu0"]
    return cpu0


def attestation_entries(s: Selecting) -> list[dict[str, Any]]:
    with s.admin() as admin:
        lines = admin.export_audit().decode().splitlines()
    entries = [json.loads(line) for line in lines]
    return [e["event"] for e in entries if e.get("kind") == "attestation"]


def assert_error(response: httpx.Response, status: int, variant: str, text: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == PREFIX + variant
    assert text in body["detail"]
    assert "\n" not in body["detail"]


# --- the policy selector ---------------------------------------------------------------------


def test_no_selector_applies_the_default_policy(selecting: Selecting) -> None:
    with httpx.Client(timeout=10) as http:
        cpu0 = appraisal(selecting, attest(http, selecting.url, request()))
    assert cpu0["ear.status"] == "affirming"
    assert cpu0["ear.appraisal-policy-id"] == "default"
    event = attestation_entries(selecting)[-1]
    assert event["policy_id"] == "default_cpu"
    assert event["policy_selector"] is None


def test_a_selector_picks_the_mapped_policy_and_the_token_names_it(selecting: Selecting) -> None:
    with httpx.Client(timeout=10) as http:
        strict = appraisal(
            selecting, attest(http, selecting.url, request({"policy-selector": "hardened"}))
        )
        ci = appraisal(selecting, attest(http, selecting.url, request({"policy-selector": "ci"})))
    # The same evidence: refused by strict_cpu, affirmed by default_cpu.
    assert strict["ear.status"] == "contraindicated"
    assert strict["ear.appraisal-policy-id"] == "strict"
    assert ci["ear.status"] == "affirming"
    assert ci["ear.appraisal-policy-id"] == "default"
    strict_event, ci_event = attestation_entries(selecting)[-2:]
    assert (strict_event["policy_id"], strict_event["policy_selector"]) == (
        "strict_cpu",
        "hardened",
    )
    assert strict_event["policy_version"] == 1
    assert (ci_event["policy_id"], ci_event["policy_selector"]) == ("default_cpu", "ci")


def test_an_unknown_selector_is_refused_at_auth(selecting: Selecting) -> None:
    with httpx.Client(timeout=10) as http:
        r = http.post(
            f"{selecting.url}/kbs/v0/auth", json=request({"policy-selector": "strict_cpu"})
        )
    # A policy id is not a selector: only the configured names are.
    assert_error(r, 400, "AttestationError", "policy selector 'strict_cpu' is not configured")
    assert "set-cookie" not in r.headers


@pytest.mark.parametrize("selector", ["", "a b", "x" * 65, 7, ["ci"], None])
def test_a_malformed_selector_is_refused(selecting: Selecting, selector: object) -> None:
    with httpx.Client(timeout=10) as http:
        r = http.post(f"{selecting.url}/kbs/v0/auth", json=request({"policy-selector": selector}))
    if selector is None:  # JSON null: no selector, as upstream's Option
        assert r.status_code == 200
        return
    assert_error(r, 400, "SerdeError", "extra-params.policy-selector must be")


def test_a_selector_naming_a_policy_the_tenant_lacks_fails_closed(tmp_path: Path) -> None:
    config = KbsConfig(
        server=ServerConfig(listen="127.0.0.1:0", data_dir=tmp_path / "data"),
        attestation=AttestationConfig(
            unsafe_allow_sample_tee=True, policy_id_map=(("gpu-box", "nowhere"),)
        ),
    ).validate()
    b = build_broker(config, clock=FrozenClock(time.time()))
    with serve_in_thread(create_app(b), config) as url, httpx.Client(timeout=10) as http:
        r = attest(http, url, request({"policy-selector": "gpu-box"}))
        with AdminClient(url, load_admin_key(tmp_path / "data" / "admin-key.pem")) as admin:
            entries = [json.loads(line) for line in admin.export_audit().decode().splitlines()]
    b.close()
    assert_error(r, 400, "ParsePolicyError", "no attestation policy 'nowhere_cpu'")
    [event] = [e["event"] for e in entries if e.get("kind") == "attestation"]
    assert (event["status"], event["policy_id"], event["policy_selector"]) == (
        "error",
        "nowhere_cpu",
        "gpu-box",
    )


# --- TEE metadata members and protocol versions ----------------------------------------------


def test_new_request_members_are_accepted_and_logged(
    selecting: Selecting, caplog: pytest.LogCaptureFixture
) -> None:
    # trustee #1616 / kbs-types#92: TEE metadata and topology in the first message.
    body = request(
        {"supported-hash-algorithms": ["sha384"], "policy-selector": "ci"},
        **{"tee-metadata": {"devices": [{"class": "gpu", "count": 8}]}, "topology": {"x": 1}},
    )
    with caplog.at_level(logging.INFO, logger="custodes.kbs.handshake"):
        with httpx.Client(timeout=10) as http:
            cpu0 = appraisal(selecting, attest(http, selecting.url, body))
    assert cpu0["ear.status"] == "affirming"
    assert "ignored members tee-metadata, topology" in caplog.text


def _version_count(s: Selecting, version: str, result: str) -> float:
    value = s.broker.metrics.registry.get_sample_value(
        "custodes_protocol_requests_total", {"version": version, "result": result}
    )
    return value or 0.0


def test_each_clients_protocol_version_is_counted(selecting: Selecting) -> None:
    with httpx.Client(timeout=10) as http:
        ok = http.post(f"{selecting.url}/kbs/v0/auth", json=request())
        old = http.post(f"{selecting.url}/kbs/v0/auth", json={**request(), "version": "0.2.0"})
        odd = http.post(f"{selecting.url}/kbs/v0/auth", json={**request(), "version": "9.x"})
        exposition = http.get(f"{selecting.url}/metrics").text
    assert ok.status_code == 200
    assert_error(old, 400, "AttestationError", "'0.2.0' is not supported; expected 0.4.0")
    assert_error(odd, 400, "AttestationError", "'9.x' is not supported")
    assert _version_count(selecting, "0.4.0", "accepted") == 1
    assert _version_count(selecting, "0.2.0", "refused") == 1
    # Unknown strings share one label, so a client cannot grow the metric without bound.
    assert _version_count(selecting, "other", "refused") == 1
    assert 'custodes_protocol_requests_total{result="refused",version="other"} 1.0' in exposition


def test_the_audit_entry_records_the_protocol_version(selecting: Selecting) -> None:
    with httpx.Client(timeout=10) as http:
        appraisal(selecting, attest(http, selecting.url, request()))
    assert attestation_entries(selecting)[-1]["protocol_version"] == "0.4.0"


# --- the guest side: custodes guest --policy-selector -----------------------------------------


def test_guest_cli_sends_the_selector(
    selecting: Selecting, capsys: pytest.CaptureFixture[str]
) -> None:
    from custodes.cli import main

    base = ["guest", "attest", "--url", selecting.url, "--tee", "sample"]
    assert main([*base, "--policy-selector", "hardened"]) == 0
    token = capsys.readouterr().out.strip()
    cpu0 = selecting.broker.ear_verifier.verify(token)["submods"]["cpu0"]
    assert (cpu0["ear.appraisal-policy-id"], cpu0["ear.status"]) == ("strict", "contraindicated")
    assert main(base) == 0
    token = capsys.readouterr().out.strip()
    cpu0 = selecting.broker.ear_verifier.verify(token)["submods"]["cpu0"]
    assert cpu0["ear.appraisal-policy-id"] == "default"


def test_guest_cli_unknown_selector_is_one_line(
    selecting: Selecting, capsys: pytest.CaptureFixture[str]
) -> None:
    from custodes.cli import main

    code = main(
        ["guest", "attest", "--url", selecting.url, "--tee", "sample", "--policy-selector", "x"]
    )
    err = capsys.readouterr().err
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("custodes: error:")]
    assert len(lines) == 1
    assert "policy selector 'x' is not configured on this broker" in lines[0]
    assert "Traceback" not in err


# --- the pod's entrypoint: custodes run --policy-selector / [[brokers]] policy_selector --------

# Releases the model key only to a token appraised by the policy "pinned" (the selector
# "confidential-ai" maps to it): the released key is the proof of the token's
# ear.appraisal-policy-id.
PINNED_RESOURCE_POLICY = """package policy
import rego.v1
default allow := false
allow if {
    input.submods.cpu0["ear.status"] == "affirming"
    input.submods.cpu0["ear.appraisal-policy-id"] == "pinned"
}
"""
MODEL_KEY = "default/key/model"
WORKLOAD = "print('the workload ran')"


@pytest.fixture
def pinning(tmp_path: Path) -> Iterator[Selecting]:
    config = KbsConfig(
        server=ServerConfig(listen="127.0.0.1:0", data_dir=tmp_path / "data"),
        attestation=AttestationConfig(
            unsafe_allow_sample_tee=True, policy_id_map=(("confidential-ai", "pinned"),)
        ),
    ).validate()
    b = build_broker(config, clock=FrozenClock(time.time()))
    with serve_in_thread(create_app(b), config) as url:
        live = Selecting(url, b, tmp_path / "data")
        with live.admin() as admin:
            admin.register_reference_values(SAMPLE_REFERENCE_VALUES)
            # The same rules as the default policy, stored under the mapped id.
            admin.set_policy("attestation", default_policy("default_cpu"), policy_id="pinned_cpu")
            admin.set_policy("resource", PINNED_RESOURCE_POLICY)
            admin.put_resource(ResourcePath.parse(MODEL_KEY), b"the model key")
        yield live
    b.close()


def run_guest(
    s: Selecting, tmp_path: Path, *args: str, broker_table: str = ""
) -> tuple[subprocess.CompletedProcess[bytes], Path]:
    """``custodes run`` (a real process: it execs its workload) fetching the model key as a
    credential; the path the key would be written to."""
    creds = tmp_path / "creds"
    config = tmp_path / "guest.toml"
    config.write_text(
        f'[[brokers]]\nurl = "{s.url}"\n{broker_table}\n'
        f'[[credentials]]\nresource_uri = "kbs:///{MODEL_KEY}"\npath = "model.key"\n\n'
        f'[run]\ncredentials_root = "{creds}"\n'
    )
    workload = [sys.executable, "-c", WORKLOAD]
    done = run_cli("run", "--config", str(config), "--tee", "sample", *args, "--", *workload)
    return done, creds / "model.key"


def one_error_line(done: subprocess.CompletedProcess[bytes]) -> str:
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.startswith("custodes: error:")]
    assert b"the workload ran" not in done.stdout  # the start stopped before the exec
    return line


def test_run_with_a_selector_gets_a_token_of_the_mapped_policy(
    pinning: Selecting, tmp_path: Path
) -> None:
    done, key = run_guest(pinning, tmp_path, "--policy-selector", "confidential-ai")
    assert done.returncode == 0, done.stderr.decode()
    assert b"the workload ran" in done.stdout
    # Released under a policy that requires ear.appraisal-policy-id == "pinned".
    assert key.read_bytes() == b"the model key"
    event = attestation_entries(pinning)[-1]
    assert (event["status"], event["policy_id"], event["policy_selector"]) == (
        "affirming",
        "pinned_cpu",
        "confidential-ai",
    )


def test_run_takes_the_selector_from_the_guest_configuration(
    pinning: Selecting, tmp_path: Path
) -> None:
    done, key = run_guest(pinning, tmp_path, broker_table='policy_selector = "confidential-ai"')
    assert done.returncode == 0, done.stderr.decode()
    assert key.read_bytes() == b"the model key"
    assert attestation_entries(pinning)[-1]["policy_selector"] == "confidential-ai"


def test_run_without_a_selector_is_appraised_by_the_default_policy(
    pinning: Selecting, tmp_path: Path
) -> None:
    done, key = run_guest(pinning, tmp_path)
    line = one_error_line(done)
    # Appraised by "default": the resource policy, which wants "pinned", refuses the key.
    assert "PolicyDeny: access to default/key/model denied by policy" in line
    assert not key.exists()
    event = attestation_entries(pinning)[-1]
    assert (event["policy_id"], event["policy_selector"]) == ("default_cpu", None)


def test_run_with_an_unknown_selector_is_refused_clearly(
    pinning: Selecting, tmp_path: Path
) -> None:
    done, key = run_guest(pinning, tmp_path, "--policy-selector", "hardened")
    line = one_error_line(done)
    assert "policy selector 'hardened' is not configured on this broker" in line
    assert not key.exists()
    assert attestation_entries(pinning) == []  # refused at /auth: nothing was appraised


@pytest.mark.parametrize(
    ("args", "table", "where"),
    [
        (("--policy-selector", "a b"), "", "--policy-selector: 'a b'"),
        (("--policy-selector", "x" * 65), "", "--policy-selector: 'xxx"),
        ((), 'policy_selector = "../strict"', "brokers[0].policy_selector: '../strict'"),
        ((), "policy_selector = 7", "brokers[0].policy_selector: a policy selector is a string"),
    ],
)
def test_run_refuses_a_malformed_selector_before_any_handshake(
    pinning: Selecting, tmp_path: Path, args: tuple[str, ...], table: str, where: str
) -> None:
    done, _ = run_guest(pinning, tmp_path, *args, broker_table=table)
    line = one_error_line(done)
    assert where in line
    assert "1 to 64 characters of A-Z a-z 0-9 . _ -" in line
    assert _version_count(pinning, "0.4.0", "accepted") == 0  # no /auth was sent
