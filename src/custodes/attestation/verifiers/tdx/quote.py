"""The Intel TDX DCAP quote (versions 4 and 5), parsed into frozen values with exact lengths.

Layout (Intel TDX DCAP Quote Generation Library and Quote Verification Library API, §A.3-A.4):

* header, 48 bytes: u16 version, u16 attestation key type (2 = ECDSA-P256), u32 TEE type
  (0x81 = TDX), 4 reserved bytes (QE SVN and PCE SVN), 16-byte QE vendor id, 20-byte user data;
* v4: the TD report body (584 bytes) at offset 48;
  v5: u16 body type (2 = TDX 1.0 body, 584 bytes; 3 = TDX 1.5 body, 648 bytes, which adds
  ``tee_tcb_svn2`` and ``mr_servicetd``), u32 body size, the body at offset 54;
* u32 signature data length, then the signature data: ECDSA signature (64), attestation public
  key (64), certification data (u16 type, u32 size). TDX quotes carry type 6, the QE report
  certification data: QE report (384), QE report signature (64), u16 QE authentication data
  size and data, then nested certification data of type 5, the PEM PCK certificate chain.

Every length is checked exactly. **Trailing bytes**: the signature data length says where the
quote ends. Real guests send quotes inside a fixed-size buffer: trustee's ``tdx_quote_6.dat``
(captured on a CoCo guest) and dcap-qvl's sample quote (captured elsewhere) are both v4 quotes
followed by exactly 70 zero bytes, i.e. a v4 quote (4936 bytes) in a buffer sized for a v5
quote (5006 bytes). Trailing **zero** bytes, up to :data:`MAX_TRAILING_ZERO_PADDING`, are
therefore accepted, recorded in ``TdxQuote.trailing_padding`` and never passed on (``raw`` is
the exact quote); any non-zero trailing byte is refused. The padding is not covered by the
signature and carries no information.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from custodes.attestation.verifiers.flags import Flag
from custodes.attestation.verifiers.tdx.errors import UnsupportedQuote
from custodes.errors import MalformedEvidence
from custodes.protocol.evidence.reader import Reader
from custodes.types.json import JsonObject

HEADER_SIZE: Final = 48
TDX10_BODY_SIZE: Final = 584
TDX15_BODY_SIZE: Final = 648
V5_BODY_DESCRIPTOR_SIZE: Final = 6  # u16 body type, u32 body size

ATT_KEY_TYPE_ECDSA_P256: Final = 2
TEE_TYPE_TDX: Final = 0x81
BODY_TYPE_TDX10: Final = 2
BODY_TYPE_TDX15: Final = 3
CERT_DATA_QE_REPORT: Final = 6
CERT_DATA_PCK_CHAIN: Final = 5
QE_REPORT_SIZE: Final = 384

MAX_TRAILING_ZERO_PADDING: Final = 16 * 1024
MAX_QUOTE_SIZE: Final = 64 * 1024  # a quote with its PCK chain is about 5 KB

_BODY_SIZES: Final = {BODY_TYPE_TDX10: TDX10_BODY_SIZE, BODY_TYPE_TDX15: TDX15_BODY_SIZE}
# TEE_TCB_SVN, MRSEAM, MRSIGNERSEAM, SEAMATTRIBUTES, TDATTRIBUTES, XFAM, MRTD, MRCONFIGID,
# MROWNER, MROWNERCONFIG, RTMR0..3, REPORTDATA; TDX 1.5 adds TEE_TCB_SVN2 and MRSERVICETD.
_TDX10_BODY: Final = struct.Struct("<16s48s48s8s8s8s48s48s48s48s48s48s48s48s64s")
_TDX15_BODY: Final = struct.Struct(_TDX10_BODY.format + "16s48s")


@dataclass(frozen=True, slots=True)
class QuoteHeader:
    version: int
    att_key_type: int
    tee_type: int
    reserved: bytes  # QE SVN and PCE SVN (4 bytes)
    vendor_id: bytes  # QE vendor id (16 bytes)
    user_data: bytes  # 20 bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> QuoteHeader:
        if len(data) != HEADER_SIZE:
            raise MalformedEvidence("TDX quote header must be 48 bytes")
        version, att_key_type, tee_type = struct.unpack_from("<HHI", data, 0)
        return cls(version, att_key_type, tee_type, data[8:12], data[12:28], data[28:48])

    def to_json(self) -> JsonObject:
        """Upstream's ``quote.header`` claim: the little-endian field bytes in hex."""
        return {
            "version": struct.pack("<H", self.version).hex(),
            "att_key_type": struct.pack("<H", self.att_key_type).hex(),
            "tee_type": struct.pack("<I", self.tee_type).hex(),
            "reserved": self.reserved.hex(),
            "vendor_id": self.vendor_id.hex(),
            "user_data": self.user_data.hex(),
        }


@dataclass(frozen=True, slots=True)
class TdAttributes:
    """The TD attributes bits upstream exposes as ``td_attributes`` claims."""

    raw: int

    debug = Flag(0)
    septve_disable = Flag(28)
    protection_keys = Flag(30)
    key_locker = Flag(31)
    perfmon = Flag(63)

    @classmethod
    def from_bytes(cls, data: bytes) -> TdAttributes:
        if len(data) != 8:
            raise MalformedEvidence("TD attributes must be 8 bytes")
        return cls(int.from_bytes(data, "little"))

    def to_json(self) -> JsonObject:
        return {
            "debug": self.debug,
            "key_locker": self.key_locker,
            "perfmon": self.perfmon,
            "protection_keys": self.protection_keys,
            "septve_disable": self.septve_disable,
        }


@dataclass(frozen=True, slots=True)
class TdReportBody:
    """The TD report body (TDX 1.0: 584 bytes; TDX 1.5 adds the last two fields: 648)."""

    tcb_svn: bytes  # TEE_TCB_SVN, 16
    mr_seam: bytes  # 48
    mrsigner_seam: bytes  # 48
    seam_attributes: bytes  # 8
    td_attributes: bytes  # 8
    xfam: bytes  # 8
    mr_td: bytes  # 48
    mr_config_id: bytes  # 48
    mr_owner: bytes  # 48
    mr_owner_config: bytes  # 48
    rtmrs: tuple[bytes, bytes, bytes, bytes]  # 4 x 48
    report_data: bytes  # 64
    tee_tcb_svn2: bytes | None = None  # 16, TDX 1.5 only
    mr_servicetd: bytes | None = None  # 48, TDX 1.5 only

    @classmethod
    def from_bytes(cls, data: bytes) -> TdReportBody:
        if len(data) not in (TDX10_BODY_SIZE, TDX15_BODY_SIZE):
            raise MalformedEvidence("TD report body must be 584 or 648 bytes")
        # The length is exact, so one fixed layout unpack cannot run short.
        layout = _TDX10_BODY if len(data) == TDX10_BODY_SIZE else _TDX15_BODY
        fields = layout.unpack(data)
        return cls(
            tcb_svn=fields[0],
            mr_seam=fields[1],
            mrsigner_seam=fields[2],
            seam_attributes=fields[3],
            td_attributes=fields[4],
            xfam=fields[5],
            mr_td=fields[6],
            mr_config_id=fields[7],
            mr_owner=fields[8],
            mr_owner_config=fields[9],
            rtmrs=(fields[10], fields[11], fields[12], fields[13]),
            report_data=fields[14],
            tee_tcb_svn2=fields[15] if len(fields) > 15 else None,
            mr_servicetd=fields[16] if len(fields) > 15 else None,
        )

    @property
    def attributes(self) -> TdAttributes:
        return TdAttributes.from_bytes(self.td_attributes)

    def to_json(self) -> JsonObject:
        """Upstream's ``quote.body`` claim: every field in hex."""
        out: JsonObject = {
            "tcb_svn": self.tcb_svn.hex(),
            "mr_seam": self.mr_seam.hex(),
            "mrsigner_seam": self.mrsigner_seam.hex(),
            "seam_attributes": self.seam_attributes.hex(),
            "td_attributes": self.td_attributes.hex(),
            "xfam": self.xfam.hex(),
            "mr_td": self.mr_td.hex(),
            "mr_config_id": self.mr_config_id.hex(),
            "mr_owner": self.mr_owner.hex(),
            "mr_owner_config": self.mr_owner_config.hex(),
            "rtmr_0": self.rtmrs[0].hex(),
            "rtmr_1": self.rtmrs[1].hex(),
            "rtmr_2": self.rtmrs[2].hex(),
            "rtmr_3": self.rtmrs[3].hex(),
            "report_data": self.report_data.hex(),
        }
        if self.tee_tcb_svn2 is not None and self.mr_servicetd is not None:
            out["tee_tcb_svn2"] = self.tee_tcb_svn2.hex()
            out["mr_servicetd"] = self.mr_servicetd.hex()
        return out


@dataclass(frozen=True, slots=True)
class QuoteSignatureData:
    signature: bytes  # ECDSA-P256 r||s over header||body, 64
    attestation_key: bytes  # raw P-256 point x||y, 64
    qe_report: bytes  # SGX report of the quoting enclave, 384
    qe_report_signature: bytes  # by the PCK, 64
    qe_auth_data: bytes
    pck_chain_pem: bytes  # as sent: PEM leaf, intermediate, root (often NUL-terminated)

    @classmethod
    def from_bytes(cls, data: bytes) -> QuoteSignatureData:
        c = Reader(data, truncated="TDX quote truncated in the {}")
        signature = c.take(64, "ECDSA signature")
        attestation_key = c.take(64, "attestation key")
        cert_type, cert_size = c.u16("certification data type"), c.u32("certification data size")
        if cert_type != CERT_DATA_QE_REPORT:
            raise UnsupportedQuote(f"certification data type {cert_type} (expected 6)")
        if cert_size != c.remaining:
            raise MalformedEvidence("certification data size disagrees with the signature data")
        qe_report = c.take(QE_REPORT_SIZE, "QE report")
        qe_report_signature = c.take(64, "QE report signature")
        qe_auth_data = c.take(c.u16("QE authentication data size"), "QE authentication data")
        inner_type, inner_size = c.u16("PCK data type"), c.u32("PCK data size")
        if inner_type != CERT_DATA_PCK_CHAIN:
            raise UnsupportedQuote(f"QE certification data type {inner_type} (expected 5)")
        if inner_size != c.remaining:
            raise MalformedEvidence("PCK chain size disagrees with the certification data")
        return cls(
            signature=signature,
            attestation_key=attestation_key,
            qe_report=qe_report,
            qe_report_signature=qe_report_signature,
            qe_auth_data=qe_auth_data,
            pck_chain_pem=c.take(inner_size, "PCK chain"),
        )


@dataclass(frozen=True, slots=True)
class TdxQuote:
    header: QuoteHeader
    body_type: int | None  # v5 only: 2 (TDX 1.0) or 3 (TDX 1.5)
    body: TdReportBody
    signature_data: QuoteSignatureData
    raw: bytes  # the exact quote, without trailing padding
    trailing_padding: int  # number of zero bytes that followed the quote

    @classmethod
    def from_bytes(cls, data: bytes) -> TdxQuote:
        if len(data) > MAX_QUOTE_SIZE:
            raise MalformedEvidence("TDX quote too large")
        c = Reader(data, truncated="TDX quote truncated in the {}")
        header = QuoteHeader.from_bytes(c.take(HEADER_SIZE, "header"))
        if header.tee_type != TEE_TYPE_TDX:
            raise UnsupportedQuote(f"TEE type {header.tee_type:#x} is not TDX (0x81)")
        if header.att_key_type != ATT_KEY_TYPE_ECDSA_P256:
            raise UnsupportedQuote(f"attestation key type {header.att_key_type} (expected 2)")
        body_type: int | None
        if header.version == 4:
            body_type, body_size = None, TDX10_BODY_SIZE
        elif header.version == 5:
            body_type, body_size = c.u16("body type"), c.u32("body size")
            if body_type not in _BODY_SIZES:
                raise UnsupportedQuote(f"v5 body type {body_type} (expected 2 or 3)")
            if body_size != _BODY_SIZES[body_type]:
                raise MalformedEvidence(f"v5 body of type {body_type} has the wrong size")
        else:
            raise UnsupportedQuote(f"quote version {header.version} (expected 4 or 5)")
        body = TdReportBody.from_bytes(c.take(body_size, "TD report body"))
        signature_data = QuoteSignatureData.from_bytes(
            c.take(c.u32("signature data length"), "signature data")
        )
        end = c.position
        trailing = data[end:]
        if trailing.strip(b"\x00"):
            raise MalformedEvidence("non-zero bytes after the TDX quote")
        if len(trailing) > MAX_TRAILING_ZERO_PADDING:
            raise MalformedEvidence("too much zero padding after the TDX quote")
        return cls(header, body_type, body, signature_data, data[:end], len(trailing))

    @property
    def version(self) -> int:
        return self.header.version

    @property
    def report_data(self) -> bytes:
        return self.body.report_data

    @property
    def mr_config_id(self) -> bytes:
        return self.body.mr_config_id

    @property
    def rtmrs(self) -> tuple[bytes, bytes, bytes, bytes]:
        return self.body.rtmrs

    def to_json(self) -> JsonObject:
        """Upstream's ``quote`` claim; v5 adds ``type`` and ``size`` (little-endian hex)."""
        out: JsonObject = {"header": self.header.to_json(), "body": self.body.to_json()}
        if self.body_type is not None:
            out["type"] = struct.pack("<H", self.body_type).hex()
            out["size"] = struct.pack("<I", _BODY_SIZES[self.body_type]).hex()
        return out
