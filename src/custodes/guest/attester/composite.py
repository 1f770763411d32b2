"""Upstream's composite evidence on the guest side: the devices' evidence (GPUs) as the one
``additional_evidence`` text, built the same way for the KBS handshake and for the REST API's
``/aa/additional-evidence``."""

from __future__ import annotations

import json
from collections.abc import Sequence

from custodes.guest.attester.base import Attester


def additional_evidence(devices: Sequence[Attester], report_data: bytes) -> str:
    """``""`` without devices, else the compact JSON text of ``{tee: evidence}``, each
    device's evidence over ``report_data``. The CPU evidence of a handshake binds this exact
    text, so it is made once and sent as made."""
    if not devices:
        return ""
    evidence = {str(device.tee): device.evidence(report_data) for device in devices}
    return json.dumps(evidence, separators=(",", ":"))
