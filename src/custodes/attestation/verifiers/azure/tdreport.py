"""The TDX TDREPORT (1024 bytes) that the HCL report embeds on Azure TDX CVMs.

A TDREPORT is the TD's local report, MACed for the platform only: it cannot be verified off
the machine. The TD quote (``td_quote`` in the evidence) is the signed form of the same report;
the az-tdx-vtpm verifier checks that the two agree (step 3). Layout (Intel TDX Module ABI,
"TDREPORT_STRUCT"):

* REPORTMACSTRUCT (256): REPORTTYPE (type, subtype, version, reserved: 4), reserved 12,
  CPUSVN 16, TEE_TCB_INFO_HASH 48, TEE_INFO_HASH 48, REPORTDATA 64, reserved 32, MAC 32;
* TEE_TCB_INFO (239): VALID 8, TEE_TCB_SVN 16, MRSEAM 48, MRSIGNERSEAM 48, ATTRIBUTES 8,
  reserved (TDX 1.5 puts TEE_TCB_SVN2 there);
* reserved 17;
* TDINFO (512): ATTRIBUTES 8, XFAM 8, MRTD 48, MRCONFIGID 48, MROWNER 48, MROWNERCONFIG 48,
  RTMR0..3 4x48, reserved 112 (TDX 1.5 puts SERVTD_HASH there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from custodes.errors import MalformedEvidence

TD_REPORT_SIZE: Final = 1024
REPORT_TYPE_TDX: Final = 0x81
_TEE_TCB_INFO: Final = 256
_TDINFO: Final = 512


@dataclass(frozen=True, slots=True)
class TdReport:
    raw: bytes
    report_type: int
    report_subtype: int
    report_version: int
    cpu_svn: bytes
    tee_tcb_info_hash: bytes
    tee_info_hash: bytes
    report_data: bytes
    mac: bytes
    tee_tcb_svn: bytes
    mr_seam: bytes
    mrsigner_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]

    @classmethod
    def from_bytes(cls, data: bytes) -> TdReport:
        """Parse exactly 1024 bytes of a TDX report; anything else is ``MalformedEvidence``."""
        raw = bytes(data)
        if len(raw) != TD_REPORT_SIZE:
            raise MalformedEvidence(f"TDREPORT is {len(raw)} bytes, expected {TD_REPORT_SIZE}")
        if raw[0] != REPORT_TYPE_TDX:
            raise MalformedEvidence(f"REPORTTYPE {raw[0]:#x} is not a TDX report (0x81)")

        def at(offset: int, size: int) -> bytes:
            return raw[offset : offset + size]

        tcb, info = _TEE_TCB_INFO, _TDINFO
        return cls(
            raw=raw,
            report_type=raw[0],
            report_subtype=raw[1],
            report_version=raw[2],
            cpu_svn=at(16, 16),
            tee_tcb_info_hash=at(32, 48),
            tee_info_hash=at(80, 48),
            report_data=at(128, 64),
            mac=at(224, 32),
            tee_tcb_svn=at(tcb + 8, 16),
            mr_seam=at(tcb + 24, 48),
            mrsigner_seam=at(tcb + 72, 48),
            seam_attributes=at(tcb + 120, 8),
            td_attributes=at(info, 8),
            xfam=at(info + 8, 8),
            mr_td=at(info + 16, 48),
            mr_config_id=at(info + 64, 48),
            mr_owner=at(info + 112, 48),
            mr_owner_config=at(info + 160, 48),
            rtmrs=(at(info + 208, 48), at(info + 256, 48), at(info + 304, 48), at(info + 352, 48)),
        )
