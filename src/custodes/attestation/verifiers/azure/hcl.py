"""The Azure HCL report: the vTPM NV index that carries the CVM's hardware report.

Azure's paravisor (the HCL) asks the hardware for a report whose REPORT_DATA[0:32] is SHA-256 of
a JSON "runtime data" document (the vTPM's attestation key, VM configuration, ``user-data``) and
stores both in vTPM NV index 0x01400001. Layout (little-endian u32s; the IGVM attestation
request of Azure's ``az-cvm-vtpm`` crate):

====== ====== ==========================================================================
offset size   field
====== ====== ==========================================================================
0x000  32     header: signature ``"HCLA"``, version, report_size, request_type, status,
              12 reserved bytes
0x020  1184   hardware report area: an SEV-SNP ATTESTATION_REPORT (1184 bytes), or a TDX
              TDREPORT (1024 bytes) followed by 160 unused bytes, which must be zero
0x4C0  20     request data: data_size, version, report_type (2 = SNP, 4 = TDX),
              report_data_hash_type (1 = SHA-256), variable_data_size
0x4D4  n      variable data ("var_data"): the runtime data JSON, ``n`` = variable_data_size
====== ====== ==========================================================================

**Exact lengths.** ``report_size`` must be ``0x4D4 + n`` and ``data_size`` must be ``20 + n``;
the buffer must hold ``report_size`` bytes. The NV index is larger than the report (2600 bytes
on every known host), so the bytes after ``report_size`` are the index's slack: they must all be
zero and are dropped (``HclReport.raw`` is the exact report). A shifted, truncated or extended
report therefore fails on a length field or on a non-zero byte in the slack.

Nothing in the header or request data is signed: only ``var_data`` is bound (through
REPORT_DATA) and only the hardware report is signed. The verifiers check that binding (step 3).
Only SHA-256 var_data digests are accepted (upstream panics on the others).

The runtime data JSON must be UTF-8, an object without duplicate member names, with a ``keys``
array of JWKs holding exactly one RSA key with ``kid`` ``"HCLAkPub"``: the vTPM's attestation
key (AK), at least 2048 bits. ``user-data`` (a hex string; evidence version 2 puts the binding
digest there) is kept as sent.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from cryptography.hazmat.primitives.asymmetric import rsa

from custodes._internal import strictjson
from custodes._internal.b64 import b64url_decode
from custodes.attestation.verifiers.azure.errors import HclBindingMismatch, HclReportInvalid
from custodes.types.json import Json, JsonObject

HCL_SIGNATURE: Final = b"HCLA"
HEADER_SIZE: Final = 0x20
HW_REPORT_OFFSET: Final = 0x20
HW_REPORT_AREA: Final = 1184  # the larger of the SNP report (1184) and the TDREPORT (1024)
SNP_REPORT_SIZE: Final = 1184
TD_REPORT_SIZE: Final = 1024
REQUEST_DATA_OFFSET: Final = HW_REPORT_OFFSET + HW_REPORT_AREA  # 0x4C0
REQUEST_DATA_SIZE: Final = 20
VAR_DATA_OFFSET: Final = REQUEST_DATA_OFFSET + REQUEST_DATA_SIZE  # 0x4D4
HASH_TYPE_SHA256: Final = 1
MAX_HCL_BUFFER: Final = 16 * 1024  # the NV index is 2600 bytes; this only bounds the input
AK_KID: Final = "HCLAkPub"
MIN_AK_BITS: Final = 2048
MAX_CACHED_AKS: Final = 1024  # distinct AK JWKs (one per VM) whose RSA key object is kept


class HwReportType(IntEnum):
    """``report_type`` of the request data: which hardware report the HCL embeds."""

    SNP = 2
    TDX = 4


def _b64url_member(jwk: Mapping[str, Json], member: str) -> str:
    value = jwk.get(member)
    if not isinstance(value, str) or not value:
        raise HclReportInvalid(f"the HCLAkPub JWK lacks {member!r}")
    return value


def _b64url_int(value: str, member: str) -> int:
    try:
        return int.from_bytes(b64url_decode(value), "big")
    except ValueError as e:
        raise HclReportInvalid(f"the HCLAkPub JWK's {member!r} is not base64url") from e


def _ak_public_key(keys: tuple[JsonObject, ...]) -> rsa.RSAPublicKey:
    found = [k for k in keys if k.get("kid") == AK_KID]
    if len(found) != 1:
        raise HclReportInvalid(f"the runtime data holds {len(found)} HCLAkPub keys, not one")
    jwk = found[0]
    if jwk.get("kty") != "RSA":
        raise HclReportInvalid("the HCLAkPub key is not an RSA JWK")
    return _rsa_ak(_b64url_member(jwk, "n"), _b64url_member(jwk, "e"))


@functools.lru_cache(maxsize=MAX_CACHED_AKS)
def _rsa_ak(n_b64: str, e_b64: str) -> rsa.RSAPublicKey:
    """The AK from its JWK members, cached by them: a VM's AK is the same in every report,
    while the runtime data around it (``user-data``) changes. Refusals are not cached."""
    n, e = _b64url_int(n_b64, "n"), _b64url_int(e_b64, "e")
    try:
        key = rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as err:
        raise HclReportInvalid("the HCLAkPub JWK is not a valid RSA key") from err
    if key.key_size < MIN_AK_BITS:
        raise HclReportInvalid(f"the HCLAkPub key has {key.key_size} bits, fewer than 2048")
    return key


@dataclass(frozen=True, slots=True)
class RuntimeData:
    """The parsed ``var_data`` JSON. ``keys`` are the JWK objects as sent."""

    keys: tuple[JsonObject, ...]
    ak_public: rsa.RSAPublicKey
    user_data: str | None

    @classmethod
    def from_bytes(cls, var_data: bytes) -> RuntimeData:
        obj = strictjson.loads(
            var_data,
            error=lambda why: HclReportInvalid(f"the HCL runtime data is not strict JSON: {why}"),
        )
        if not isinstance(obj, dict):
            raise HclReportInvalid("the HCL runtime data is not a JSON object")
        keys = obj.get("keys")
        if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
            raise HclReportInvalid("the HCL runtime data has no 'keys' array of JWKs")
        user_data = obj.get("user-data")
        if user_data is not None and not isinstance(user_data, str):
            raise HclReportInvalid("the HCL runtime data's 'user-data' is not a string")
        key_objects = tuple(keys)
        return cls(keys=key_objects, ak_public=_ak_public_key(key_objects), user_data=user_data)


@dataclass(frozen=True, slots=True)
class HclReport:
    """A parsed HCL report. Not verified: see the verifiers' checklists.

    ``raw`` is the exact report (``report_size`` bytes, without the NV index's zero slack);
    ``hw_report`` is the SNP report (1184 bytes) or the TDREPORT (1024 bytes).
    """

    raw: bytes
    version: int
    request_type: int
    status: int
    report_type: HwReportType
    request_version: int
    hash_type: int
    hw_report: bytes
    var_data: bytes
    runtime_data: RuntimeData
    slack: int  # zero bytes that followed the report in the NV index

    @classmethod
    def from_bytes(cls, data: bytes) -> HclReport:
        """Parse the NV index content; anything malformed is ``HclReportInvalid``."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("an HCL report is bytes")
        buf = bytes(data)
        if len(buf) > MAX_HCL_BUFFER:
            raise HclReportInvalid(f"HCL report buffer of {len(buf)} bytes is too large")
        if len(buf) < VAR_DATA_OFFSET:
            raise HclReportInvalid(f"HCL report of {len(buf)} bytes is shorter than its header")
        signature = buf[:4]
        version, report_size, request_type, status = struct.unpack_from("<4I", buf, 4)
        if signature != HCL_SIGNATURE:
            raise HclReportInvalid("the HCL report does not start with 'HCLA'")
        data_size, request_version, report_type, hash_type, var_size = struct.unpack_from(
            "<5I", buf, REQUEST_DATA_OFFSET
        )
        if report_size != VAR_DATA_OFFSET + var_size:
            raise HclReportInvalid(
                f"report_size {report_size} is not {VAR_DATA_OFFSET} + variable_data_size "
                f"{var_size}"
            )
        if data_size != REQUEST_DATA_SIZE + var_size:
            raise HclReportInvalid(
                f"data_size {data_size} is not {REQUEST_DATA_SIZE} + variable_data_size {var_size}"
            )
        if var_size == 0:
            raise HclReportInvalid("the HCL report has no runtime data")
        if len(buf) < report_size:
            raise HclReportInvalid(f"HCL report of {len(buf)} bytes, expected {report_size}")
        if buf[report_size:].strip(b"\x00"):
            raise HclReportInvalid("non-zero bytes after the HCL report")
        try:
            kind = HwReportType(report_type)
        except ValueError:
            raise HclReportInvalid(f"unknown hardware report type {report_type}") from None
        if hash_type != HASH_TYPE_SHA256:
            raise HclReportInvalid(f"runtime data hash type {hash_type} is not SHA-256 (1)")
        area = buf[HW_REPORT_OFFSET:REQUEST_DATA_OFFSET]
        if kind is HwReportType.SNP:
            hw_report = area
        else:
            hw_report = area[:TD_REPORT_SIZE]
            if area[TD_REPORT_SIZE:].strip(b"\x00"):
                raise HclReportInvalid("non-zero bytes after the TDREPORT in the HCL report")
        var_data = buf[VAR_DATA_OFFSET:report_size]
        return cls(
            raw=buf[:report_size],
            version=version,
            request_type=request_type,
            status=status,
            report_type=kind,
            request_version=request_version,
            hash_type=hash_type,
            hw_report=hw_report,
            var_data=var_data,
            runtime_data=RuntimeData.from_bytes(var_data),
            slack=len(buf) - report_size,
        )

    @classmethod
    def embedding(cls, data: bytes, kind: HwReportType, tee: str) -> HclReport:
        """Parse the HCL report of ``tee`` evidence, which must embed a ``kind`` report."""
        hcl = cls.from_bytes(data)
        if hcl.report_type is not kind:
            raise HclReportInvalid(f"{tee} evidence with a {hcl.report_type.name} report")
        return hcl

    @property
    def var_data_sha256(self) -> bytes:
        """What the hardware report's REPORT_DATA[0:32] must hold."""
        return hashlib.sha256(self.var_data).digest()


def check_var_data_binding(hcl: HclReport, hw_report_data: bytes) -> None:
    """Step 3: the hardware report's REPORT_DATA[0:32] is SHA-256 of the runtime data.

    As upstream, only the first 32 bytes are compared (the HCL leaves the rest zero today)."""
    if len(hw_report_data) != 64:
        raise HclBindingMismatch("the hardware report's REPORT_DATA is not 64 bytes")
    if not hmac.compare_digest(hw_report_data[:32], hcl.var_data_sha256):
        raise HclBindingMismatch(
            "the hardware report does not bind the HCL runtime data "
            "(REPORT_DATA[0:32] != SHA-256(var_data))"
        )
