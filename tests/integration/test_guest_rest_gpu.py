"""The guest REST API attests the pod's GPUs, as ``custodes run`` does: the agent behind it is
built by ``AttestationAgent.from_config`` (the attester selection both commands use), so a
GPU's evidence goes with the CPU's on ``/cdh/resource`` and ``/aa/token``, and
``/aa/additional-evidence`` is the GPUs' evidence.

There is NO GPU here. What stands in for one, and only that: the driver's device node is a
file in a temp directory, and NVML is a stand-in ``pynvml`` module (the real ``PyNvml``
adapter and ``NvidiaAttester`` run over it) answering with upstream's RECORDED H100 report,
re-signed for each request's nonce by a test device key (tests/nvidia_support.py) whose root
the test broker's NVIDIA verifier trusts. The broker, its verifiers and policies, the HTTP
servers and the guest API are the real ones.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from custodes._internal.clock import FrozenClock
from custodes.attestation.verifiers.base import VerificationRequest, Verifier
from custodes.attestation.verifiers.nvidia import NvidiaVerifier, NvidiaVerifierConfig
from custodes.attestation.verifiers.nvidia.errors import NonceMismatch
from custodes.attestation.verifiers.sample import SampleVerifier
from custodes.guest.agent import AttestationAgent
from custodes.guest.attester.select import GpuMode, Platform
from custodes.guest.cdh import ConfidentialDataHub
from custodes.guest.config import GuestConfig, broker_from_url
from custodes.guest.kbs_client import Token
from custodes.guest.rest import create_rest_app
from custodes.kbs.app import create_app
from custodes.kbs.broker import build_broker
from custodes.kbs.config import AttestationConfig, KbsConfig, ServerConfig
from custodes.kbs.server import bind_socket, serve_in_thread
from custodes.protocol.resource import ResourcePath
from custodes.types.tee import Tee
from live_broker import SAMPLE_REFERENCE_VALUES, LiveBroker, run_cli
from nvidia_support import recorded_claims, recorded_report, resign, shared_pki

SECRET = ResourcePath.parse("default/key/model")
SECRET_VALUE = b"fraud model dataset key"
GPU_UUID = "GPU-standin-0"


@pytest.fixture
def gpu_broker(tmp_path: Path) -> Iterator[LiveBroker]:
    """A broker whose NVIDIA verifier trusts the test device root, with the recorded GPU's
    golden values registered (default_gpu) and the default resource policy (every submodule
    affirming)."""
    config = KbsConfig(
        server=ServerConfig(listen="127.0.0.1:0", data_dir=tmp_path / "data"),
        attestation=AttestationConfig(unsafe_allow_sample_tee=True),
    ).validate()
    clock = FrozenClock(time.time())
    nvidia = NvidiaVerifier(NvidiaVerifierConfig(clock=clock), root=shared_pki().root)
    verifiers: dict[Tee, Verifier] = {Tee.SAMPLE: SampleVerifier(), Tee.NVIDIA: nvidia}
    b = build_broker(config, clock=clock, verifiers=verifiers)
    measurements = recorded_claims()["measurements"]
    assert isinstance(measurements, dict)
    gpu_values = {
        "allowed_driver_versions": ["550.90.07"],
        "allowed_vbios_versions": ["96.00.9f.00.01"],
        "nvidia_gpu_measurements": [f"{i}:{v}" for i, v in measurements.items()],
    }
    with serve_in_thread(create_app(b), config) as url:
        live = LiveBroker(url, b, clock, tmp_path / "data")
        with live.admin() as admin:
            admin.register_reference_values({**SAMPLE_REFERENCE_VALUES, **gpu_values})
            admin.put_resource(SECRET, SECRET_VALUE)
        yield live
    b.close()


def standin_pynvml(*, debug_mode: bool = False) -> types.ModuleType:
    """NVML as ``nvidia-ml-py`` exposes it, for one H100 in CC mode. Each report is the recorded
    one with the requested nonce, re-signed by the test device key; ``debug_mode``: measurement
    2 is not the golden value, as a GPU in debug mode measures differently (a derived report)."""
    module = types.ModuleType("pynvml")
    pki = shared_pki()
    changed = {2: bytes(48)} if debug_mode else None

    class NVMLError(Exception):
        pass

    def attestation_report(handle: object, nonce: bytes) -> Any:
        report = resign(recorded_report(), pki.leaf_key, nonce=nonce, measurements=changed)
        # NVML's fixed-size buffer, cut by the adapter to the reported size.
        return types.SimpleNamespace(
            attestationReport=list(report) + [0] * 32, attestationReportSize=len(report)
        )

    def certificate(handle: object) -> Any:
        chain = pki.chain_pem
        return types.SimpleNamespace(
            attestationCertChain=list(chain) + [0] * 32, attestationCertChainSize=len(chain)
        )

    values: dict[str, Any] = {
        "NVMLError": NVMLError,
        "NVML_CC_SYSTEM_FEATURE_DISABLED": 0,
        "NVML_CC_SYSTEM_DEVTOOLS_MODE_ON": 1,
        "nvmlInit": lambda: None,
        "nvmlShutdown": lambda: None,
        "nvmlSystemGetConfComputeState": lambda: types.SimpleNamespace(ccFeature=1, devToolsMode=0),
        "nvmlDeviceGetCount": lambda: 1,
        "nvmlDeviceGetHandleByIndex": lambda index: object(),
        "nvmlDeviceGetConfComputeGpuAttestationReport": attestation_report,
        "nvmlDeviceGetConfComputeGpuCertificate": certificate,
        "nvmlDeviceGetArchitecture": lambda handle: 9,
        "nvmlDeviceGetUUID": lambda handle: GPU_UUID,
    }
    for name, value in values.items():
        setattr(module, name, value)
    return module


def serve(app: Starlette) -> Iterator[str]:
    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(5)
        sock.close()


def guest_api(
    broker: LiveBroker, tmp_path: Path, *, gpu: GpuMode = "auto", driver: bool = True
) -> Iterator[str]:
    """The guest API as ``custodes guest api --tee sample --gpu GPU --features all`` builds it,
    on a platform whose NVIDIA driver node is a temp file (present when ``driver``)."""
    device = tmp_path / "dev" / "nvidiactl"
    device.parent.mkdir(exist_ok=True)
    if driver:
        device.touch()
    config = GuestConfig(brokers=(broker_from_url(broker.url),), tee="sample", gpu=gpu)
    agent = AttestationAgent.from_config(config, platform=Platform(nvidia_device=device))
    try:
        yield from serve(create_rest_app(ConfidentialDataHub(agent), "all"))
    finally:
        agent.close()


@pytest.fixture
def api(gpu_broker: LiveBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setitem(sys.modules, "pynvml", standin_pynvml())
    yield from guest_api(gpu_broker, tmp_path)


def submods(token_body: bytes) -> dict[str, Any]:
    claims = Token.parse(json.loads(token_body)["token"]).claims()
    found: dict[str, Any] = claims["submods"]
    return found


def test_the_api_attests_the_gpu_with_the_cpu(api: str) -> None:
    info = httpx.get(f"{api}/info").json()
    assert (info["tee"], info["additional_tees"]) == ("sample", ["nvidia"])
    # The default resource policy releases only when every submodule is affirming.
    r = httpx.get(f"{api}/cdh/resource/default/key/model")
    assert r.status_code == 200, r.text
    assert r.content == SECRET_VALUE
    token = httpx.get(f"{api}/aa/token?token_type=kbs")
    found = submods(token.content)
    assert list(found) == ["cpu0", "gpu0"]
    assert found["gpu0"]["ear.status"] == "affirming"
    assert found["cpu0"]["ear.status"] == "affirming"


def test_additional_evidence_is_the_gpus_over_the_callers_data(api: str) -> None:
    data = bytes(range(48))
    encoded = base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    r = httpx.get(f"{api}/aa/additional-evidence?runtime_data={encoded}&encoding=base64")
    assert r.status_code == 200, r.text
    evidence = json.loads(r.content)
    assert list(evidence) == ["nvidia"]
    [device] = evidence["nvidia"]["device_evidence_list"]
    assert (device["arch"], device["uuid"]) == ("HOPPER", GPU_UUID)
    verifier = NvidiaVerifier(root=shared_pki().root)
    [result] = verifier.verify(VerificationRequest(Tee.NVIDIA, evidence["nvidia"], data))
    assert result.claims["uuid"] == GPU_UUID
    # Bound to the caller's data, not to anything else.
    with pytest.raises(NonceMismatch):
        verifier.verify(VerificationRequest(Tee.NVIDIA, evidence["nvidia"], bytes(48)))


def test_additional_evidence_refuses_data_a_gpu_cannot_take(api: str) -> None:
    r = httpx.get(f"{api}/aa/additional-evidence?runtime_data=short")
    assert r.status_code == 400
    assert r.text == "BAD REQUEST: a 5-byte binding digest cannot fill the 32-byte GPU nonce"


def test_a_gpu_in_debug_mode_gets_no_key_through_the_api(
    gpu_broker: LiveBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", standin_pynvml(debug_mode=True))
    for url in guest_api(gpu_broker, tmp_path):
        r = httpx.get(f"{url}/cdh/resource/default/key/model")
        assert r.status_code == 500
        assert "PolicyDeny" in r.text and SECRET_VALUE.decode() not in r.text
        found = submods(httpx.get(f"{url}/aa/token?token_type=kbs").content)
        assert found["cpu0"]["ear.status"] == "affirming"
        assert found["gpu0"]["ear.status"] == "warning"


def test_gpu_off_attests_the_cpu_alone(
    gpu_broker: LiveBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", standin_pynvml())
    for url in guest_api(gpu_broker, tmp_path, gpu="off"):
        assert "additional_tees" not in httpx.get(f"{url}/info").json()
        r = httpx.get(f"{url}/aa/additional-evidence?runtime_data=short")
        assert r.status_code == 200 and r.content == b""
        assert list(submods(httpx.get(f"{url}/aa/token?token_type=kbs").content)) == ["cpu0"]


def test_no_driver_no_gpu_in_auto_mode(gpu_broker: LiveBroker, tmp_path: Path) -> None:
    for url in guest_api(gpu_broker, tmp_path, driver=False):
        assert "additional_tees" not in httpx.get(f"{url}/info").json()


def test_a_present_gpu_without_the_extra_is_an_error_naming_it(
    gpu_broker: LiveBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    for url in guest_api(gpu_broker, tmp_path, gpu="on"):
        r = httpx.get(f"{url}/cdh/resource/default/key/model")
        # Never a CPU-only attestation in its place: the GPU is attested or nothing is.
        assert r.status_code == 500 and "custodes[gpu]" in r.text
    with gpu_broker.admin() as admin:
        entries = [json.loads(line) for line in admin.export_audit().decode().splitlines()]
    assert [e for e in entries if e.get("kind") == "attestation"] == []


@pytest.mark.parametrize("mode", ["on", "off"])
def test_custodes_run_chooses_its_gpus_the_same_way(
    gpu_broker: LiveBroker, tmp_path: Path, mode: str
) -> None:
    """`custodes run --gpu` goes through the same selection: ``on`` attests the GPUs, which
    the process cannot (its ``pynvml`` is a module that fails to import, as without the
    extra), so the start stops naming the extra; ``off`` attests the CPU alone, which the
    default resource policy accepts."""
    no_nvml = tmp_path / "no-nvml"
    no_nvml.mkdir()
    (no_nvml / "pynvml.py").write_text('raise ImportError("no NVML binding here")\n')
    creds = tmp_path / "creds"
    config = tmp_path / "guest.toml"
    config.write_text(
        f'[[brokers]]\nurl = "{gpu_broker.url}"\n\n[attester]\ntee = "sample"\n\n'
        f'[[credentials]]\nresource_uri = "kbs:///{SECRET}"\npath = "model.key"\n\n'
        f'[run]\ncredentials_root = "{creds}"\n'
    )
    argv = ["run", "--config", str(config), "--gpu", mode, "--", sys.executable, "-V"]
    done = run_cli(*argv, env={"PYTHONPATH": str(no_nvml)})
    err = done.stderr.decode()
    assert "Traceback" not in err
    if mode == "on":
        assert done.returncode == 1
        [line] = [x for x in err.splitlines() if x.startswith("custodes: error:")]
        assert "install the custodes[gpu] extra" in line
        assert not (creds / "model.key").exists()
    else:
        assert done.returncode == 0, err
        assert (creds / "model.key").read_bytes() == SECRET_VALUE


def test_custodes_guest_api_gpu_flag(gpu_broker: LiveBroker, tmp_path: Path) -> None:
    """The real command: `custodes guest api --gpu on` lists the GPU and will not hand out a
    resource without attesting it (here it cannot: its ``pynvml`` fails to import)."""
    no_nvml = tmp_path / "no-nvml"
    no_nvml.mkdir()
    (no_nvml / "pynvml.py").write_text('raise ImportError("no NVML binding here")\n')
    probe = bind_socket("127.0.0.1", 0)
    port = probe.getsockname()[1]
    probe.close()
    argv = ["guest", "api", "--url", gpu_broker.url, "--tee", "sample", "--gpu", "on"]
    argv += ["--features", "all", "--listen", f"127.0.0.1:{port}"]
    env = {**os.environ, "PYTHONPATH": str(no_nvml)}
    with subprocess.Popen(
        [sys.executable, "-m", "custodes", *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    ) as api:
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    info = httpx.get(f"{url}/info").json()
                    break
                except httpx.TransportError:
                    assert api.poll() is None, api.stderr.read().decode() if api.stderr else ""
                    assert time.monotonic() < deadline, "the guest API did not start"
                    time.sleep(0.1)
            assert info["additional_tees"] == ["nvidia"]
            r = httpx.get(f"{url}/cdh/resource/default/key/model")
            assert r.status_code == 500 and "custodes[gpu]" in r.text
        finally:
            api.terminate()
            api.wait(10)
