"""Choosing the attester: an explicit choice, else detection of the platform's TEE.

Detection looks for a TPM resource manager device. The sample attester is never detected: it
is used only when asked for by name, and says so in the log.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from custodes.errors import ConfigError
from custodes.guest.attester.base import Attester
from custodes.guest.attester.sample import SampleAttester
from custodes.types.tee import Tee

logger = logging.getLogger(__name__)

SELECTABLE = ("tpm", "sample")
TPM_DEVICE = Path("/dev/tpmrm0")
DEFAULT_TCTI = f"device:{TPM_DEVICE}"


def detect() -> str | None:
    if TPM_DEVICE.exists():
        return "tpm"
    return None


def select_attester(name: str | None, *, tcti: str | None = None) -> Attester:
    """The attester called ``name``, or the detected one.

    ``tcti`` picks the TPM for ``tpm`` (default ``$CUSTODES_TPM_TCTI``, else the device).
    """
    chosen = name or detect()
    if chosen is None:
        raise ConfigError(
            "no TEE detected on this machine (no TPM at /dev/tpmrm0); pass --tee tpm with "
            "--tcti, or --tee sample for the sample attester, which proves nothing (tests "
            "and demos only)"
        )
    if chosen == Tee.SAMPLE:
        logger.warning("INSECURE: using the sample attester; its evidence proves nothing")
        return SampleAttester()
    if chosen == Tee.TPM:
        from custodes.guest.attester.tpm import TpmAttester

        return TpmAttester(tcti or os.environ.get("CUSTODES_TPM_TCTI") or DEFAULT_TCTI)
    raise ConfigError(f"unknown attester {chosen!r} (choose from: {', '.join(SELECTABLE)})")
