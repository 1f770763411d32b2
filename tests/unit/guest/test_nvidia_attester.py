"""The NVIDIA GPU attester, tested against RECORDED reports: there is no GPU here, so NVML is
replaced by a stand-in that returns upstream's recorded Hopper report and certificate chain
(captured from a real H100). The evidence it builds is then checked by the real NVIDIA
verifier under NVIDIA's pinned root, so the shape is exactly what the broker accepts.

``PyNvml`` (the real NVML adapter) runs against a stand-in ``pynvml`` module holding the same
recorded bytes in NVML's structures; without the ``custodes[gpu]`` extra it names the extra.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from custodes.attestation.verifiers.base import VerificationRequest
from custodes.attestation.verifiers.nvidia import NvidiaVerifier
from custodes.attestation.verifiers.nvidia.errors import NonceMismatch
from custodes.errors import ConfigError
from custodes.guest.attester.nvidia import (
    GpuAttestationError,
    GpuReport,
    NvidiaAttester,
    PyNvml,
    gpu_present,
)
from custodes.types.tee import Tee
from nvidia_support import RECORDED_NONCE, recorded_chain, recorded_report

# A SHA-384-sized device digest whose first 32 bytes are the recorded report's nonce.
DIGEST = RECORDED_NONCE + bytes(16)


class RecordedNvml:
    """NVML answering with upstream's recorded report, whatever the nonce (it records it)."""

    def __init__(self, *, cc: bool = True, devtools: bool = False, arch: int = 9) -> None:
        self.cc, self.devtools, self.arch = cc, devtools, arch
        self.nonces: list[bytes] = []

    def cc_enabled(self) -> bool:
        return self.cc

    def devtools_mode(self) -> bool:
        return self.devtools

    def gpu_reports(self, nonce: bytes) -> list[GpuReport]:
        self.nonces.append(nonce)
        return [GpuReport(self.arch, "GPU-recorded", recorded_report(), recorded_chain())]


def _verify(evidence: object, report_data: bytes = DIGEST) -> Any:
    request = VerificationRequest(tee=Tee.NVIDIA, evidence=evidence, report_data=report_data)
    return NvidiaVerifier().verify(request)


def test_recorded_report_becomes_evidence_the_verifier_accepts() -> None:
    nvml = RecordedNvml()
    evidence = NvidiaAttester(nvml).evidence(DIGEST)
    assert nvml.nonces == [RECORDED_NONCE]  # the first 32 bytes of the device digest
    (result,) = _verify(evidence)
    assert result.claims["uuid"] == "GPU-recorded"
    assert result.claims["arch"] == "Hopper"


def test_evidence_for_another_digest_is_refused_by_the_verifier() -> None:
    evidence = NvidiaAttester(RecordedNvml()).evidence(DIGEST)
    with pytest.raises(NonceMismatch):
        _verify(evidence, bytes(48))


def test_short_digest_refused_not_padded() -> None:
    with pytest.raises(ValueError, match="cannot fill the 32-byte GPU nonce"):
        NvidiaAttester(RecordedNvml()).evidence(bytes(31))


def test_gpu_without_cc_mode_refused() -> None:
    with pytest.raises(GpuAttestationError, match="not in confidential computing mode"):
        NvidiaAttester(RecordedNvml(cc=False)).evidence(DIGEST)


def test_devtools_mode_is_attested_but_logged(caplog: pytest.LogCaptureFixture) -> None:
    NvidiaAttester(RecordedNvml(devtools=True)).evidence(DIGEST)
    assert "developer-tools (debug) mode" in caplog.text


def test_gpu_without_cc_architecture_refused() -> None:
    with pytest.raises(GpuAttestationError, match="architecture 8"):
        NvidiaAttester(RecordedNvml(arch=8)).evidence(DIGEST)


def test_gpu_present_looks_for_the_driver(tmp_path: Any) -> None:
    assert not gpu_present(tmp_path / "nvidiactl")
    (tmp_path / "nvidiactl").touch()
    assert gpu_present(tmp_path / "nvidiactl")


# --- PyNvml over a stand-in pynvml holding the recorded bytes ---------------------------------


def _fake_pynvml(*, init_fails: bool = False) -> types.ModuleType:
    module = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    report, chain = recorded_report(), recorded_chain()

    def init() -> None:
        if init_fails:
            raise NVMLError("Driver Not Loaded")

    def attestation_report(handle: object, nonce: bytes) -> Any:
        assert nonce == RECORDED_NONCE
        return types.SimpleNamespace(
            attestationReport=list(report) + [0] * 16, attestationReportSize=len(report)
        )

    def certificate(handle: object) -> Any:
        return types.SimpleNamespace(
            attestationCertChain=list(chain) + [0] * 16, attestationCertChainSize=len(chain)
        )

    values: dict[str, Any] = {
        "NVMLError": NVMLError,
        "NVML_CC_SYSTEM_FEATURE_DISABLED": 0,
        "NVML_CC_SYSTEM_DEVTOOLS_MODE_ON": 1,
        "nvmlInit": init,
        "nvmlShutdown": lambda: None,
        "nvmlSystemGetConfComputeState": lambda: types.SimpleNamespace(ccFeature=1, devToolsMode=0),
        "nvmlDeviceGetCount": lambda: 1,
        "nvmlDeviceGetHandleByIndex": lambda index: object(),
        "nvmlDeviceGetConfComputeGpuAttestationReport": attestation_report,
        "nvmlDeviceGetConfComputeGpuCertificate": certificate,
        "nvmlDeviceGetArchitecture": lambda handle: 9,
        "nvmlDeviceGetUUID": lambda handle: "GPU-0f00",
    }
    for name, value in values.items():
        setattr(module, name, value)
    return module


def test_pynvml_adapter_reads_the_report_and_chain_exactly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml())
    evidence = NvidiaAttester(PyNvml()).evidence(DIGEST)
    (result,) = _verify(evidence)  # NVML's fixed-size buffers cut to their reported sizes
    assert result.claims["uuid"] == "GPU-0f00"


def test_nvml_failure_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(init_fails=True))
    with pytest.raises(GpuAttestationError, match="NVML init failed: Driver Not Loaded"):
        NvidiaAttester(PyNvml()).evidence(DIGEST)


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    with pytest.raises(ConfigError, match=r"custodes\[gpu\]"):
        PyNvml()


def test_device_attesters_follow_the_gpu_mode(tmp_path: Any) -> None:
    from custodes.guest.attester.select import select_device_attesters

    driver = tmp_path / "nvidiactl"
    assert select_device_attesters("auto", nvidia_device=driver) == []
    assert select_device_attesters("off", nvidia_device=driver) == []
    (on,) = select_device_attesters("on", nvidia_device=driver)
    assert isinstance(on, NvidiaAttester)
    driver.touch()
    (auto,) = select_device_attesters("auto", nvidia_device=driver)
    assert isinstance(auto, NvidiaAttester)
    with pytest.raises(ConfigError, match="unknown GPU mode"):
        select_device_attesters("maybe")
