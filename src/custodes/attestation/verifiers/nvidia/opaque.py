"""NVIDIA's OpaqueData in an SPDM MEASUREMENTS response: typed fields, exactly.

The field is a sequence of items ``DataType (u16 LE) | DataSize (u16 LE) | Data``; NVIDIA
defines the types (nvtrust's local verifier names them; upstream Trustee decodes them the same
way). The items fill the field exactly: a truncated header, an item running past the end, an
unknown type or a repeated type is refused, so a report in another format (such as the
versioned ``NVDAOD`` format of newer drivers) fails closed instead of being half read.

Claim values follow upstream's local verifier: strings for the version-like text fields,
``vbios_version`` formatted ``96.00.9f.00.01``, ``measurement_count`` as index -> count,
and lower-case hex for everything else. ``nvdec0_status`` is ``enabled``/``disabled``
(upstream main after the pinned snapshot; the snapshot's claims vector shows the raw byte as a
one-character string, ``"U"``).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from types import MappingProxyType
from typing import Final

from custodes.errors import MalformedEvidence
from custodes.types.json import Json, JsonObject

_ITEM_HEADER: Final = struct.Struct("<HH")
FWID_SIZE: Final = 48  # SHA-384
VBIOS_VERSION_SIZE: Final = 8
_NVDEC_ENABLED: Final = 0xAA
_NVDEC_DISABLED: Final = 0x55
_MEASUREMENT_COUNT_SIZE: Final = 4
_SWITCH_PDI_SIZE: Final = 8
_MAX_INT_SIZE: Final = 8
_FEATURES: Final = {0: "SPT", 1: "MPT", 2: "PPCIE"}


class OpaqueType(IntEnum):
    """NVIDIA's opaque data types; the claim name is the lower-case member name."""

    CERT_ISSUER_NAME = 1
    CERT_AUTHORITY_KEY_IDENTIFIER = 2
    DRIVER_VERSION = 3
    GPU_INFO = 4
    ID_SKU = 5
    VBIOS_VERSION = 6
    MANUFACTURER_ID = 7
    TAMPER_DETECTION = 8
    SMC = 9
    VPR = 10
    NVDEC0_STATUS = 11
    MEASUREMENT_COUNT = 12
    CPR_INFO = 13
    BOARD_ID = 14
    CHIP_SKU = 15
    CHIP_SKU_MOD = 16
    PROJECT = 17
    PROJECT_SKU = 18
    PROJECT_SKU_MOD = 19
    FWID = 20
    PROTECTED_PCIE_STATUS = 21
    SWITCH_PDI = 22
    FLOORSWEPT_PORTS = 23
    POSITION_ID = 24
    LOCK_SWITCH_STATUS = 25
    GPU_LINK_CONN = 32
    SYS_ENABLE_STATUS = 33
    OPAQUE_DATA_VERSION = 34
    CHIP_INFO = 35
    FEATURE_FLAG = 36

    @property
    def claim(self) -> str:
        return self.name.lower()


_TEXT: Final = frozenset(
    {
        OpaqueType.DRIVER_VERSION,
        OpaqueType.CHIP_SKU,
        OpaqueType.CHIP_SKU_MOD,
        OpaqueType.PROJECT,
        OpaqueType.PROJECT_SKU,
        OpaqueType.CHIP_INFO,
    }
)
# Without these a report says nothing about the device's firmware and software.
_REQUIRED: Final = (OpaqueType.DRIVER_VERSION, OpaqueType.VBIOS_VERSION, OpaqueType.FWID)


def _text(kind: OpaqueType, data: bytes) -> str:
    """NUL-terminated (or NUL-padded) printable ASCII."""
    text = data.rstrip(b"\0")
    if not text or not all(0x20 <= b < 0x7F for b in text):
        raise MalformedEvidence(f"nvidia opaque data: {kind.claim} is not printable ASCII")
    return text.decode("ascii")


def _vbios_version(data: bytes) -> str:
    # Eight bytes: the first four reversed, then the fifth (e.g. 00 9f 00 96 01 00 00 00 ->
    # 96.00.9f.00.01), as NVIDIA's tools print it.
    if len(data) != VBIOS_VERSION_SIZE:
        raise MalformedEvidence(
            f"nvidia opaque data: vbios_version has {len(data)} bytes, not {VBIOS_VERSION_SIZE}"
        )
    half = VBIOS_VERSION_SIZE // 2
    return ".".join(f"{b:02x}" for b in (*reversed(data[:half]), data[half]))


def _le_int(kind: OpaqueType, data: bytes) -> int:
    if not 0 < len(data) <= _MAX_INT_SIZE:
        raise MalformedEvidence(f"nvidia opaque data: {kind.claim} is not a 1..8-byte integer")
    return int.from_bytes(data, "little")


def _chunks(kind: OpaqueType, data: bytes, size: int) -> list[bytes]:
    if len(data) % size:
        raise MalformedEvidence(
            f"nvidia opaque data: {kind.claim} is not a whole number of {size}-byte entries"
        )
    return [data[i : i + size] for i in range(0, len(data), size)]


def _claim(kind: OpaqueType, data: bytes) -> Json:
    if kind in _TEXT:
        return _text(kind, data)
    if kind is OpaqueType.VBIOS_VERSION:
        return _vbios_version(data)
    if kind is OpaqueType.NVDEC0_STATUS:
        if data == bytes([_NVDEC_ENABLED]):
            return "enabled"
        if data == bytes([_NVDEC_DISABLED]):
            return "disabled"
        raise MalformedEvidence(f"nvidia opaque data: nvdec0_status {data.hex()} is unknown")
    if kind is OpaqueType.MEASUREMENT_COUNT:
        counts = _chunks(kind, data, _MEASUREMENT_COUNT_SIZE)
        return {str(i): int.from_bytes(c, "little") for i, c in enumerate(counts, start=1)}
    if kind is OpaqueType.SWITCH_PDI:
        return [c.hex() for c in _chunks(kind, data, _SWITCH_PDI_SIZE)]
    if kind is OpaqueType.OPAQUE_DATA_VERSION:
        return _le_int(kind, data)
    if kind is OpaqueType.FEATURE_FLAG:
        return _FEATURES.get(_le_int(kind, data), "unknown")
    if kind is OpaqueType.FWID and len(data) != FWID_SIZE:
        raise MalformedEvidence(f"nvidia opaque data: fwid has {len(data)} bytes, not 48")
    return data.hex()


@dataclass(frozen=True, slots=True)
class OpaqueData:
    """The decoded items, in report order, and the raw bytes of each."""

    raw: Mapping[OpaqueType, bytes]
    config: JsonObject

    @property
    def fwid(self) -> bytes:
        return self.raw[OpaqueType.FWID]

    @property
    def driver_version(self) -> str:
        value = self.config[OpaqueType.DRIVER_VERSION.claim]
        return value if isinstance(value, str) else ""

    @property
    def vbios_version(self) -> str:
        value = self.config[OpaqueType.VBIOS_VERSION.claim]
        return value if isinstance(value, str) else ""

    @classmethod
    def parse(cls, data: bytes) -> OpaqueData:
        raw: dict[OpaqueType, bytes] = {}
        config: JsonObject = {}
        offset = 0
        while offset < len(data):
            if len(data) - offset < _ITEM_HEADER.size:
                raise MalformedEvidence(
                    f"nvidia opaque data: {len(data) - offset} trailing byte(s), not an item"
                )
            kind_value, size = _ITEM_HEADER.unpack_from(data, offset)
            offset += _ITEM_HEADER.size
            try:
                kind = OpaqueType(kind_value)
            except ValueError:
                raise MalformedEvidence(
                    f"nvidia opaque data: unknown item type {kind_value}"
                ) from None
            if kind in raw:
                raise MalformedEvidence(f"nvidia opaque data: {kind.claim} appears twice")
            if size > len(data) - offset:
                raise MalformedEvidence(f"nvidia opaque data: {kind.claim} runs past the field")
            value = data[offset : offset + size]
            offset += size
            raw[kind] = value
            config[kind.claim] = _claim(kind, value)
        for kind in _REQUIRED:
            if kind not in raw:
                raise MalformedEvidence(f"nvidia opaque data: the report has no {kind.claim}")
        return cls(raw=MappingProxyType(raw), config=config)
