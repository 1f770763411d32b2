"""Choosing the attester: an explicit choice, else detection of the platform's TEE.

Detection follows upstream's order for the TEEs custodes has, first match wins:

1. ``tdx``: the configfs-tsm provider is ``tdx_guest``, or ``/dev/tdx_guest`` exists;
2. (``az-tdx-vtpm``, ``az-snp-vtpm``: not detected yet);
3. ``snp``: ``/sys/devices/platform/sev-guest`` exists, or the provider is ``sev_guest``;
4. ``tpm``: ``/dev/tpmrm0`` or ``/dev/tpm0`` exists, or ``$CUSTODES_TPM_TCTI`` is set.

The provider is learnt the only way configfs-tsm offers: creating a report item, reading its
``provider`` and removing it. Unlike upstream, nothing found is an error: the sample attester
is never detected, only used when asked for by name, and says so in the log.

Every path is a field of :class:`Platform`, so tests can point detection at a directory tree.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from custodes.errors import ConfigError
from custodes.guest.attester.base import Attester
from custodes.guest.attester.nvidia import NVIDIA_DEVICE, NvidiaAttester, gpu_present
from custodes.guest.attester.sample import SampleAttester
from custodes.guest.attester.tsm import DEFAULT_TSM_ROOT, ConfigFs, Tsm, TsmError, TsmProvider
from custodes.types.tee import Tee

logger = logging.getLogger(__name__)

SELECTABLE = ("tdx", "snp", "tpm", "sample")
TCTI_ENV = "CUSTODES_TPM_TCTI"
EVENTLOG_ENV = "CUSTODES_TPM_EVENTLOG"
TPM_DEVICE = Path("/dev/tpmrm0")
DEFAULT_TCTI = f"device:{TPM_DEVICE}"


@dataclass(frozen=True, slots=True)
class Platform:
    """Where detection and the attesters look; the defaults are the real locations."""

    tsm_root: Path = DEFAULT_TSM_ROOT
    tdx_guest_device: Path = Path("/dev/tdx_guest")
    sev_guest_platform: Path = Path("/sys/devices/platform/sev-guest")
    tpm_devices: tuple[Path, ...] = (TPM_DEVICE, Path("/dev/tpm0"))
    ccel: Path = Path("/sys/firmware/acpi/tables/data/CCEL")
    # The firmware's TCG2 event log of the TPM (needs securityfs mounted).
    tpm_eventlog: Path = Path("/sys/kernel/security/tpm0/binary_bios_measurements")
    # The NVIDIA driver's control device: present when the guest has GPUs to attest.
    nvidia_device: Path = NVIDIA_DEVICE


def tsm_provider(platform: Platform, *, configfs: ConfigFs | None = None) -> str | None:
    """The configfs-tsm provider's name, or ``None`` when there is no usable configfs-tsm."""
    tsm = Tsm(platform.tsm_root, fs=configfs)
    if not tsm.available():
        return None
    try:
        return tsm.provider()
    except TsmError as e:
        logger.info("configfs-tsm at %s is not usable: %s", platform.tsm_root, e)
        return None


def detect(
    platform: Platform | None = None,
    *,
    configfs: ConfigFs | None = None,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """The name of the detected TEE's attester, or ``None``; never ``sample``."""
    platform = platform or Platform()
    environ = os.environ if environ is None else environ
    provider = tsm_provider(platform, configfs=configfs)
    if provider == TsmProvider.TDX or platform.tdx_guest_device.exists():
        return Tee.TDX.value
    if platform.sev_guest_platform.exists() or provider == TsmProvider.SEV:
        return Tee.SNP.value
    if any(device.exists() for device in platform.tpm_devices) or environ.get(TCTI_ENV):
        return Tee.TPM.value
    return None


def default_tcti(platform: Platform | None = None, environ: Mapping[str, str] | None = None) -> str:
    """``$CUSTODES_TPM_TCTI``, else the first TPM device that exists, else the first listed."""
    platform = platform or Platform()
    environ = os.environ if environ is None else environ
    configured = environ.get(TCTI_ENV)
    if configured:
        return configured
    for device in platform.tpm_devices:
        if device.exists():
            return f"device:{device}"
    return f"device:{platform.tpm_devices[0]}" if platform.tpm_devices else DEFAULT_TCTI


def tpm_eventlog(tcti: str, platform: Platform) -> Path | None:
    """The firmware event log to send with a TPM quote: ``$CUSTODES_TPM_EVENTLOG`` when set,
    else the securityfs log when the TPM is this machine's device. Not for a TPM reached over
    a socket (a test's swtpm): the machine's firmware log does not replay to its PCRs."""
    configured = os.environ.get(EVENTLOG_ENV)
    if configured:
        return Path(configured)
    on_device = tcti.startswith("device:")
    return platform.tpm_eventlog if on_device and platform.tpm_eventlog.exists() else None


def select_attester(
    name: str | None,
    *,
    tcti: str | None = None,
    platform: Platform | None = None,
    configfs: ConfigFs | None = None,
) -> Attester:
    """The attester called ``name``, or the detected one.

    ``tcti`` picks the TPM for ``tpm`` (default :func:`default_tcti`). ``platform`` and
    ``configfs`` replace the real paths and configfs operations (tests).
    """
    platform = platform or Platform()
    chosen = name or detect(platform, configfs=configfs)
    if chosen is None:
        raise ConfigError(
            "no TEE detected on this machine (no TDX or SEV-SNP guest support, no TPM); pass "
            "--tee tpm with --tcti, or --tee sample for the sample attester, which proves "
            "nothing (tests and demos only)"
        )
    if chosen == Tee.SAMPLE:
        logger.warning("INSECURE: using the sample attester; its evidence proves nothing")
        return SampleAttester()
    if chosen == Tee.TDX:
        from custodes.guest.attester.tdx import TdxAttester

        return TdxAttester(Tsm(platform.tsm_root, fs=configfs), ccel_path=platform.ccel)
    if chosen == Tee.SNP:
        from custodes.guest.attester.snp import SnpAttester

        return SnpAttester(Tsm(platform.tsm_root, fs=configfs))
    if chosen == Tee.TPM:
        from custodes.guest.attester.tpm import TpmAttester

        chosen_tcti = tcti or default_tcti(platform)
        return TpmAttester(chosen_tcti, eventlog=tpm_eventlog(chosen_tcti, platform))
    raise ConfigError(f"unknown attester {chosen!r} (choose from: {', '.join(SELECTABLE)})")


GpuMode = Literal["auto", "on", "off"]
GPU_MODES: Final[tuple[GpuMode, ...]] = ("auto", "on", "off")


def select_device_attesters(
    mode: str = "auto", *, nvidia_device: Path | None = None
) -> list[Attester]:
    """The device attesters whose evidence goes with the CPU's (``additional_evidence``).

    ``auto``: the GPUs when the NVIDIA driver is present (``/dev/nvidiactl``); ``on``: always
    (an error without GPUs in CC mode); ``off``: none. A GPU that is present is attested, not
    skipped: without the ``custodes[gpu]`` extra that is an error naming the extra.
    """
    if mode not in GPU_MODES:
        raise ConfigError(f"unknown GPU mode {mode!r} (choose from: {', '.join(GPU_MODES)})")
    if mode == "off":
        return []
    if mode == "auto" and not gpu_present(nvidia_device or NVIDIA_DEVICE):
        return []
    return [NvidiaAttester()]
