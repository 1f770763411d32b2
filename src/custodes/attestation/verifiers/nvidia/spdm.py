"""The SPDM 1.1 GET_MEASUREMENTS request and MEASUREMENTS response a Hopper GPU signs (DMTF
DSP0274 1.1), parsed exactly.

A Hopper attestation report is the request the driver sent followed by the GPU's response::

    request (37 bytes):  SPDMVersion 0x11 | code 0xE0 | Param1 | Param2 | Nonce[32] | SlotID
    response:            SPDMVersion 0x11 | code 0x60 | Param1 | Param2 | NumberOfBlocks
                         | MeasurementRecordLength (u24 LE) | MeasurementRecord
                         | Nonce[32] | OpaqueLength (u16 LE) | OpaqueData | Signature[96]

Each measurement block is ``Index | MeasurementSpecification (1 = DMTF) | MeasurementSize
(u16 LE) | DMTF measurement``, the DMTF measurement ``ValueType | ValueSize (u16 LE) | Value``.
The signature (ECDSA P-384, raw r || s) covers SHA-384 of every byte before it, request
included (SPDM 1.1 signs the L1/L2 transcript without a signing-context prefix), so the
requester's nonce is signed.

Sizes are exact: blocks fill the record, the record holds ``NumberOfBlocks`` blocks, and the
report ends with the signature. The one tolerance: zero bytes after the signature, which
NVML's fixed-size report buffer leaves (upstream's recorded CoCo report ends with one); they
are not signed and not used. Any non-zero byte there is refused.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from custodes.attestation.verifiers.nvidia.errors import SpdmMessageInvalid
from custodes.attestation.verifiers.nvidia.opaque import OpaqueData
from custodes.errors import MalformedEvidence

SPDM_VERSION_1_1: Final = 0x11
GET_MEASUREMENTS: Final = 0xE0
MEASUREMENTS: Final = 0x60
NONCE_SIZE: Final = 32
REQUEST_SIZE: Final = 4 + NONCE_SIZE + 1
SIGNATURE_SIZE: Final = 96  # ECDSA P-384, r || s
DMTF_SPECIFICATION: Final = 0x01
ALL_MEASUREMENTS: Final = 0xFF
SIGNATURE_REQUESTED: Final = 0x01
MAX_OPAQUE_SIZE: Final = 1024  # SPDM 1.1: OpaqueLength shall not exceed 1024
_RESPONSE_HEADER: Final = 8
_BLOCK: Final = struct.Struct("<BBH")  # Index, MeasurementSpecification, MeasurementSize
_DMTF: Final = struct.Struct("<BH")  # DMTFSpecMeasurementValueType, ValueSize
_BLOCK_HEADER: Final = _BLOCK.size
_DMTF_HEADER: Final = _DMTF.size


@dataclass(frozen=True, slots=True)
class GetMeasurementsRequest:
    version: int
    code: int
    param1: int
    param2: int
    nonce: bytes
    slot_id: int


@dataclass(frozen=True, slots=True)
class MeasurementBlock:
    index: int
    value_type: int
    value: bytes


@dataclass(frozen=True, slots=True)
class MeasurementsResponse:
    version: int
    code: int
    param1: int
    param2: int
    blocks: tuple[MeasurementBlock, ...]
    responder_nonce: bytes
    opaque: OpaqueData
    signature: bytes


@dataclass(frozen=True, slots=True)
class HopperReport:
    """A parsed report; ``signed_bytes`` is exactly what the signature covers."""

    request: GetMeasurementsRequest
    response: MeasurementsResponse
    signed_bytes: bytes

    @classmethod
    def parse(cls, data: bytes) -> HopperReport:
        if len(data) < REQUEST_SIZE + _RESPONSE_HEADER:
            raise MalformedEvidence(f"nvidia report: {len(data)} bytes is too short")
        request = _parse_request(data[:REQUEST_SIZE])
        response, end = _parse_response(data, REQUEST_SIZE)
        trailer = data[end:]
        if trailer.strip(b"\0"):
            raise MalformedEvidence(
                f"nvidia report: {len(trailer)} byte(s) after the signature are not padding"
            )
        return cls(request=request, response=response, signed_bytes=data[: end - SIGNATURE_SIZE])

    @property
    def measurements(self) -> dict[int, bytes]:
        return {block.index: block.value for block in self.response.blocks}


def _version(value: int, what: str) -> int:
    # The layout below is SPDM 1.1's; other versions differ (1.2 adds a signing context).
    if value != SPDM_VERSION_1_1:
        raise SpdmMessageInvalid(f"nvidia report: {what} is SPDM version {value:#04x}, not 1.1")
    return value


def _parse_request(data: bytes) -> GetMeasurementsRequest:
    return GetMeasurementsRequest(
        version=_version(data[0], "the request"),
        code=data[1],
        param1=data[2],
        param2=data[3],
        nonce=data[4 : 4 + NONCE_SIZE],
        slot_id=data[4 + NONCE_SIZE],
    )


def _parse_response(data: bytes, start: int) -> tuple[MeasurementsResponse, int]:
    header = data[start : start + _RESPONSE_HEADER]
    version = _version(header[0], "the response")
    count = header[4]
    record_length = int.from_bytes(header[5:8], "little")
    offset = start + _RESPONSE_HEADER
    record = data[offset : offset + record_length]
    if len(record) != record_length:
        raise MalformedEvidence("nvidia report: the measurement record runs past the report")
    blocks = _parse_blocks(record, count)
    offset += record_length
    fixed = NONCE_SIZE + 2
    if len(data) - offset < fixed:
        raise MalformedEvidence("nvidia report: the response ends before its nonce")
    nonce = data[offset : offset + NONCE_SIZE]
    opaque_length = int.from_bytes(data[offset + NONCE_SIZE : offset + fixed], "little")
    offset += fixed
    if opaque_length > MAX_OPAQUE_SIZE:
        raise MalformedEvidence(f"nvidia report: OpaqueLength {opaque_length} exceeds 1024")
    if len(data) - offset < opaque_length + SIGNATURE_SIZE:
        raise MalformedEvidence("nvidia report: the response ends before its signature")
    opaque = OpaqueData.parse(data[offset : offset + opaque_length])
    offset += opaque_length
    signature = data[offset : offset + SIGNATURE_SIZE]
    offset += SIGNATURE_SIZE
    response = MeasurementsResponse(
        version=version,
        code=header[1],
        param1=header[2],
        param2=header[3],
        blocks=blocks,
        responder_nonce=nonce,
        opaque=opaque,
        signature=signature,
    )
    return response, offset


def _parse_blocks(record: bytes, count: int) -> tuple[MeasurementBlock, ...]:
    blocks: list[MeasurementBlock] = []
    seen: set[int] = set()
    offset = 0
    for _ in range(count):
        if len(record) - offset < _BLOCK_HEADER:
            raise MalformedEvidence("nvidia report: the record holds fewer blocks than it says")
        index, spec, size = _BLOCK.unpack_from(record, offset)
        offset += _BLOCK_HEADER
        if spec != DMTF_SPECIFICATION:
            raise MalformedEvidence(
                f"nvidia report: block {index} uses measurement specification {spec:#x}, not DMTF"
            )
        if index in seen:
            raise MalformedEvidence(f"nvidia report: measurement index {index} appears twice")
        seen.add(index)
        if size < _DMTF_HEADER or len(record) - offset < size:
            raise MalformedEvidence(f"nvidia report: block {index} runs past the record")
        value_type, value_size = _DMTF.unpack_from(record, offset)
        if value_size != size - _DMTF_HEADER:
            raise MalformedEvidence(
                f"nvidia report: block {index} value size {value_size} does not fill its block"
            )
        start = offset + _DMTF_HEADER
        offset += size
        blocks.append(MeasurementBlock(index, value_type, record[start:offset]))
    if offset != len(record):
        raise MalformedEvidence(
            f"nvidia report: {len(record) - offset} byte(s) in the record after the last block"
        )
    return tuple(blocks)


def check_exchange(report: HopperReport) -> None:
    """Step 3: a signed request for all measurements, answered by MEASUREMENTS from the slot
    that was asked."""
    request, response = report.request, report.response
    if request.code != GET_MEASUREMENTS:
        raise SpdmMessageInvalid(f"nvidia report: request code {request.code:#04x} is not 0xe0")
    if response.code != MEASUREMENTS:
        raise SpdmMessageInvalid(f"nvidia report: response code {response.code:#04x} is not 0x60")
    if not request.param1 & SIGNATURE_REQUESTED:
        raise SpdmMessageInvalid("nvidia report: the request did not ask for a signature")
    if request.param2 != ALL_MEASUREMENTS:
        raise SpdmMessageInvalid(
            f"nvidia report: the request asked for measurement {request.param2}, not all"
        )
    if response.param2 & 0x0F != request.slot_id & 0x0F:
        raise SpdmMessageInvalid("nvidia report: the response comes from another slot")
    if not response.blocks:
        raise SpdmMessageInvalid("nvidia report: the response carries no measurements")
