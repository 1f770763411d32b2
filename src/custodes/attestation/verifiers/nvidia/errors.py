"""The NVIDIA GPU verifier's errors: one class per checklist step (see ``verifier.py``).

Parsing failures raise :class:`custodes.errors.MalformedEvidence` itself.
"""

from __future__ import annotations

from custodes.errors import BindingMismatch, ChainInvalid, SignatureInvalid, VerificationError


class ArchitectureUnsupported(VerificationError, step="architecture"):
    """Step 2: the device is not a Hopper GPU (the only architecture verified locally)."""

    code = "nvidia-architecture"


class SpdmMessageInvalid(VerificationError, step="spdm-message"):
    """Step 3: the SPDM exchange is well formed but is not a signed SPDM 1.1
    GET_MEASUREMENTS / MEASUREMENTS pair for all measurements."""

    code = "nvidia-spdm-message"


class DeviceChainInvalid(ChainInvalid):
    """Step 4: the device certificate chain does not end at the pinned NVIDIA root or a link
    does not verify (signature, CA constraints, validity window)."""

    code = "nvidia-device-chain"


class FwidMismatch(ChainInvalid, step="fwid"):
    """Step 5: the leaf certificate's DICE FWID is missing or is not the report's FWID."""

    code = "nvidia-fwid"


class ReportSignatureInvalid(SignatureInvalid):
    """Step 6: the MEASUREMENTS signature does not verify with the leaf certificate's key."""

    code = "nvidia-report-signature"


class NonceMismatch(BindingMismatch):
    """Step 7: the SPDM request nonce is not this session's device binding digest."""

    code = "nvidia-nonce"
