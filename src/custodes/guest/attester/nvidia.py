"""The ``nvidia`` device attester: each confidential-computing GPU's SPDM attestation report
and certificate chain, through NVML (``nvmlDeviceGetConfComputeGpuAttestationReport`` and
``nvmlDeviceGetConfComputeGpuCertificate``), as upstream's guest sends them::

    {"device_evidence_list": [{"arch": "HOPPER", "uuid": "GPU-…",
                               "evidence": "<hex of the report>",
                               "certificate": "<standard base64 of the PEM chain>"}, …]}

Binding: the GPU signs a 32-byte SPDM nonce; upstream's rule is the first 32 bytes of the
device binding digest (``H(JCS({"nonce", "tee-pubkey"}))``). A digest shorter than 32 bytes
is refused, never padded.

NVML is the optional extra ``custodes[gpu]`` (the ``nvidia-ml-py`` package, imported as
``pynvml``), loaded only when a GPU is attested. NVML's own view of the CC state (CC feature
on, developer tools mode) is checked first for a clear error, but it is the guest's word: the
verifier decides from the signed measurements.
"""

from __future__ import annotations

import base64
import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, Protocol

from custodes.errors import ConfigError, CustodesError
from custodes.types.json import JsonObject
from custodes.types.tee import Tee

logger = logging.getLogger(__name__)

NONCE_SIZE: Final = 32
GPU_EXTRA: Final = "custodes[gpu]"
NVIDIA_DEVICE: Final = Path("/dev/nvidiactl")
# NVML's architecture numbers (nvml.h NVML_DEVICE_ARCH_*), upstream's evidence names.
ARCHITECTURES: Final = {9: "HOPPER", 10: "BLACKWELL"}


class GpuAttestationError(CustodesError):
    """NVML cannot produce a GPU's attestation report (no CC mode, driver error, …)."""

    code = "gpu-attestation"


@dataclass(frozen=True, slots=True)
class GpuReport:
    """What NVML returns for one GPU."""

    arch: int
    uuid: str
    report: bytes
    cert_chain: bytes


class Nvml(Protocol):
    """The NVML calls the attester makes (``PyNvml`` is the real one)."""

    def cc_enabled(self) -> bool: ...

    def devtools_mode(self) -> bool: ...

    def gpu_reports(self, nonce: bytes) -> list[GpuReport]: ...


def _pynvml() -> Any:
    try:
        # By name: the optional extra may be absent, and it ships no type information.
        return importlib.import_module("pynvml")
    except ImportError as e:
        raise ConfigError(
            f"attesting a GPU needs NVML's Python binding: install the {GPU_EXTRA} extra "
            f"(pip install '{GPU_EXTRA}', which brings nvidia-ml-py)"
        ) from e


class PyNvml:
    """NVML through ``nvidia-ml-py``; each call initialises and shuts NVML down."""

    def __init__(self) -> None:
        self._nvml = _pynvml()

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self._nvml.NVMLError as e:
            raise GpuAttestationError(f"NVML {what} failed: {e}") from e

    def _state(self) -> Any:
        nvml = self._nvml
        self._call("init", nvml.nvmlInit)
        try:
            return self._call("CC state", nvml.nvmlSystemGetConfComputeState)
        finally:
            nvml.nvmlShutdown()

    def cc_enabled(self) -> bool:
        return bool(self._state().ccFeature != self._nvml.NVML_CC_SYSTEM_FEATURE_DISABLED)

    def devtools_mode(self) -> bool:
        return bool(self._state().devToolsMode == self._nvml.NVML_CC_SYSTEM_DEVTOOLS_MODE_ON)

    def gpu_reports(self, nonce: bytes) -> list[GpuReport]:
        nvml = self._nvml
        self._call("init", nvml.nvmlInit)
        try:
            reports = []
            for index in range(self._call("device count", nvml.nvmlDeviceGetCount)):
                handle = self._call("device handle", nvml.nvmlDeviceGetHandleByIndex, index)
                report = self._call(
                    "attestation report",
                    nvml.nvmlDeviceGetConfComputeGpuAttestationReport,
                    handle,
                    nonce,
                )
                cert = self._call(
                    "certificate", nvml.nvmlDeviceGetConfComputeGpuCertificate, handle
                )
                reports.append(
                    GpuReport(
                        arch=int(
                            self._call("architecture", nvml.nvmlDeviceGetArchitecture, handle)
                        ),
                        uuid=str(self._call("UUID", nvml.nvmlDeviceGetUUID, handle)),
                        report=bytes(report.attestationReport[: report.attestationReportSize]),
                        cert_chain=bytes(
                            cert.attestationCertChain[: cert.attestationCertChainSize]
                        ),
                    )
                )
            return reports
        finally:
            nvml.nvmlShutdown()


def gpu_present(device: Path = NVIDIA_DEVICE) -> bool:
    """Whether the guest has an NVIDIA driver with a GPU (``/dev/nvidiactl``)."""
    return device.exists()


class NvidiaAttester:
    """Evidence of every GPU NVML sees, bound to the device digest."""

    tee: ClassVar[Tee] = Tee.NVIDIA

    def __init__(self, nvml: Nvml | None = None) -> None:
        self._nvml = nvml

    def evidence(self, report_data: bytes) -> JsonObject:
        if len(report_data) < NONCE_SIZE:
            raise ValueError(
                f"a {len(report_data)}-byte binding digest cannot fill the 32-byte GPU nonce"
            )
        nvml = self._nvml or PyNvml()
        if not nvml.cc_enabled():
            raise GpuAttestationError("the GPUs are not in confidential computing mode")
        if nvml.devtools_mode():
            # The verifier would refuse it anyway (its measurements are not golden); say why.
            logger.warning("the GPUs are in CC developer-tools (debug) mode")
        reports = nvml.gpu_reports(report_data[:NONCE_SIZE])
        if not reports:
            raise GpuAttestationError("NVML reports no GPU")
        devices = []
        for gpu in reports:
            arch = ARCHITECTURES.get(gpu.arch)
            if arch is None:
                raise GpuAttestationError(
                    f"GPU {gpu.uuid} has architecture {gpu.arch}, which has no CC attestation"
                )
            devices.append(
                {
                    "arch": arch,
                    "uuid": gpu.uuid,
                    "evidence": gpu.report.hex(),
                    "certificate": base64.b64encode(gpu.cert_chain).decode("ascii"),
                }
            )
        return {"device_evidence_list": devices}
