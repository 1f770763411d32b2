"""The ``swid`` extractor: an NVIDIA RIM (SWID tag), verified offline, as reference values.

Upstream Trustee's message: ``{"type": "swid", "payload": "<standard base64 of the RIM XML>"}``.
Upstream reads the XML without checking its signature; custodes registers nothing before the
RIM passes every step of :func:`custodes.attestation.verifiers.nvidia.rim.verify_rim` (the
XML signature, the chain to NVIDIA's pinned RIM root, the validity windows on the broker's
clock).

What a RIM registers (:func:`rim_reference_values`):

* ``nvidia_rim/<vbios|driver>/<version, lower case>``: the active golden measurements as
  ``"<report index>:<hex>"`` strings (one per alternative), the form of
  ``nvidia_gpu_measurements``; ``default_gpu`` reads the entry for the GPU's own versions.
  The report index is the RIM index + 1 (SPDM measurement blocks count from 1).
* upstream's names, so that a policy written for Trustee reads the same values:
  ``<PlatformManufacturerStr, spaces as _>.<edition>.measurement_<RIM index>`` (``-`` as
  ``_``), the list of the index's alternatives as written, all-zero values left out and an
  index with no other value not registered (upstream's rules); custodes takes active
  measurements only.

The values expire no later than the RIM's chain does (its earliest ``notAfter``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from custodes.types.json import Json

if TYPE_CHECKING:
    from custodes.attestation.verifiers.nvidia.rim import Rim


def rim_id(component: str, version: str) -> str:
    """The reference-value id ``default_gpu`` reads for a component's version."""
    return f"nvidia_rim/{component}/{version.lower()}"


def rim_reference_values(rim: Rim) -> dict[str, Json]:
    """The reference values a verified RIM registers (see the module docstring)."""
    golden: list[Json] = [
        f"{m.report_index}:{value.hex()}"
        for _, m in sorted(rim.measurements.items())
        for value in m.values
    ]
    values: dict[str, Json] = {rim_id(rim.component, rim.version): golden}
    prefix = f"{rim.manufacturer.replace(' ', '_')}.{rim.edition}"
    for index, m in sorted(rim.measurements.items()):
        nonzero: list[Json] = [v.hex() for v in m.values if any(v)]
        if nonzero:
            values[f"{prefix}.measurement_{index}".replace("-", "_")] = nonzero
    return values
