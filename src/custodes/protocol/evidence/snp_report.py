"""The SEV-SNP ATTESTATION_REPORT wire layout: the 1184 bytes, the TCB_VERSION inside them, and
the ``sev`` crate's serde JSON form in which upstream's guest sends a report.

Offsets from the SEV-SNP Firmware ABI specification (AMD #56860, "ATTESTATION_REPORT
Structure"); little-endian integers. The signature covers bytes ``[0x000, 0x2A0)``.

The JSON form (guest-components' ``SnpEvidence``)::

    {"version": 3, "guest_svn": 0, "policy": <u64>, "family_id": [16 ints], ...,
     "current_tcb": {"fmc": null, "bootloader": 10, "tee": 0, "snp": 23, "microcode": 25},
     ..., "signature": {"r": [72 ints], "s": [72 ints]}}

Reserved bytes are not part of that encoding (the ``sev`` crate drops them too; they are zero
in every report the firmware signs). The CPUID fields are ``null`` before report version 3 and
the mitigation vectors before version 5; a TCB carries ``fmc`` only on Turin (family 0x1A),
whose TCB_VERSION byte layout differs:

* Milan, Genoa: byte 0 bootloader, 1 tee, 2-5 reserved, 6 snp, 7 microcode;
* Turin: byte 0 fmc, 1 bootloader, 2 tee, 3 snp, 4-6 reserved, 7 microcode.

:func:`report_to_json` (the guest's attester) and :func:`encode_report` (the verifier, which
then parses and checks the bytes) are inverses; a malformed JSON report is ``MalformedEvidence``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, NamedTuple

from custodes.errors import MalformedEvidence
from custodes.types.json import JsonObject

REPORT_SIZE: Final = 0x4A0  # 1184
SIGNED_SIZE: Final = 0x2A0
SIGNATURE_COMPONENT_SIZE: Final = 72  # r and s, little-endian, zero-extended from 48 bytes
TCB_SIZE: Final = 8
TURIN_FAMILY: Final = 0x1A
FIRST_CPUID_VERSION: Final = 3
FIRST_MIT_VECTOR_VERSION: Final = 5


class Span(NamedTuple):
    offset: int
    size: int


# fmt: off
LAYOUT: Final = MappingProxyType({
    "version":            Span(0x000, 4),
    "guest_svn":          Span(0x004, 4),
    "policy":             Span(0x008, 8),
    "family_id":          Span(0x010, 16),
    "image_id":           Span(0x020, 16),
    "vmpl":               Span(0x030, 4),
    "signature_algo":     Span(0x034, 4),
    "current_tcb":        Span(0x038, 8),
    "platform_info":      Span(0x040, 8),
    "key_info":           Span(0x048, 4),   # 0x04C..0x050 reserved
    "report_data":        Span(0x050, 64),
    "measurement":        Span(0x090, 48),
    "host_data":          Span(0x0C0, 32),
    "id_key_digest":      Span(0x0E0, 48),
    "author_key_digest":  Span(0x110, 48),
    "report_id":          Span(0x140, 32),
    "report_id_ma":       Span(0x160, 32),
    "reported_tcb":       Span(0x180, 8),
    "cpuid_fam_id":       Span(0x188, 1),   # version 3+
    "cpuid_mod_id":       Span(0x189, 1),   # version 3+
    "cpuid_step":         Span(0x18A, 1),   # version 3+; 0x18B..0x1A0 reserved
    "chip_id":            Span(0x1A0, 64),
    "committed_tcb":      Span(0x1E0, 8),
    "current_build":      Span(0x1E8, 1),
    "current_minor":      Span(0x1E9, 1),
    "current_major":      Span(0x1EA, 1),   # 0x1EB reserved
    "committed_build":    Span(0x1EC, 1),
    "committed_minor":    Span(0x1ED, 1),
    "committed_major":    Span(0x1EE, 1),   # 0x1EF reserved
    "launch_tcb":         Span(0x1F0, 8),
    "launch_mit_vector":  Span(0x1F8, 8),   # version 5+
    "current_mit_vector": Span(0x200, 8),   # version 5+; 0x208..0x2A0 reserved
    "signature_r":        Span(0x2A0, 72),
    "signature_s":        Span(0x2E8, 72),  # 0x330..0x4A0 reserved
})
# fmt: on


@dataclass(frozen=True, slots=True)
class TcbVersion:
    """One decoded TCB_VERSION. ``fmc`` is set for Turin only; ``raw`` keeps the 8 bytes."""

    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None
    raw: bytes

    @classmethod
    def from_bytes(cls, data: bytes, *, turin: bool) -> TcbVersion:
        if len(data) != TCB_SIZE:
            raise MalformedEvidence(f"TCB_VERSION is {len(data)} bytes, expected {TCB_SIZE}")
        raw = bytes(data)
        if turin:
            return cls(
                bootloader=raw[1], tee=raw[2], snp=raw[3], microcode=raw[7], fmc=raw[0], raw=raw
            )
        return cls(bootloader=raw[0], tee=raw[1], snp=raw[6], microcode=raw[7], fmc=None, raw=raw)

    @classmethod
    def from_parts(
        cls, *, bootloader: int, tee: int, snp: int, microcode: int, fmc: int | None = None
    ) -> TcbVersion:
        """Encode SPL values; a non-``None`` ``fmc`` selects the Turin layout."""
        for name, value in (
            ("bootloader", bootloader),
            ("tee", tee),
            ("snp", snp),
            ("microcode", microcode),
            ("fmc", 0 if fmc is None else fmc),
        ):
            if not 0 <= value <= 0xFF:
                raise ValueError(f"TCB {name} SPL {value} does not fit a byte")
        raw = bytearray(TCB_SIZE)
        if fmc is None:
            raw[0], raw[1], raw[6], raw[7] = bootloader, tee, snp, microcode
        else:
            raw[0], raw[1], raw[2], raw[3], raw[7] = fmc, bootloader, tee, snp, microcode
        return cls(
            bootloader=bootloader, tee=tee, snp=snp, microcode=microcode, fmc=fmc, raw=bytes(raw)
        )

    @property
    def spl_values(self) -> dict[str, int]:
        """The SPLs named as AMD's KDS names them, in KDS query order (fmc first on Turin)."""
        spl = {} if self.fmc is None else {"fmcSPL": self.fmc}
        spl.update(blSPL=self.bootloader, teeSPL=self.tee, snpSPL=self.snp, ucodeSPL=self.microcode)
        return spl

    def to_json(self) -> JsonObject:
        """The ``sev`` crate serde form: ``{fmc, bootloader, tee, snp, microcode}``."""
        return {
            "fmc": self.fmc,
            "bootloader": self.bootloader,
            "tee": self.tee,
            "snp": self.snp,
            "microcode": self.microcode,
        }


def is_turin(version: int, cpuid_family: int | None) -> bool:
    """Turin moved the SPL bytes; only a v3+ report (with CPUID) can say it is Turin."""
    return version >= FIRST_CPUID_VERSION and cpuid_family == TURIN_FAMILY


@dataclass(frozen=True, slots=True)
class ReportBytes:
    """The fields of exactly :data:`REPORT_SIZE` bytes, read by their :data:`LAYOUT` name."""

    raw: bytes

    @classmethod
    def of(cls, raw: bytes) -> ReportBytes:
        if len(raw) != REPORT_SIZE:
            raise MalformedEvidence(f"SNP report is {len(raw)} bytes, expected {REPORT_SIZE}")
        return cls(bytes(raw))

    def field(self, name: str) -> bytes:
        offset, size = LAYOUT[name]
        return self.raw[offset : offset + size]

    def uint(self, name: str) -> int:
        """A little-endian unsigned integer field."""
        return int.from_bytes(self.field(name), "little")

    @property
    def version(self) -> int:
        return self.uint("version")

    @property
    def turin(self) -> bool:
        return is_turin(self.version, self.uint("cpuid_fam_id"))

    def tcb(self, name: str) -> TcbVersion:
        return TcbVersion.from_bytes(self.field(name), turin=self.turin)


# --- the serde JSON form ------------------------------------------------------------------

# serde key -> (layout name, bits) for plain integer fields.
_INTS: Final = (
    ("version", "version", 32),
    ("guest_svn", "guest_svn", 32),
    ("policy", "policy", 64),
    ("vmpl", "vmpl", 32),
    ("sig_algo", "signature_algo", 32),
    ("plat_info", "platform_info", 64),
    ("key_info", "key_info", 32),
)
# serde key -> (layout name, bits, first report version that has the field).
_OPTIONAL_INTS: Final = (
    ("cpuid_fam_id", "cpuid_fam_id", 8, FIRST_CPUID_VERSION),
    ("cpuid_mod_id", "cpuid_mod_id", 8, FIRST_CPUID_VERSION),
    ("cpuid_step", "cpuid_step", 8, FIRST_CPUID_VERSION),
    ("launch_mit_vector", "launch_mit_vector", 64, FIRST_MIT_VECTOR_VERSION),
    ("current_mit_vector", "current_mit_vector", 64, FIRST_MIT_VECTOR_VERSION),
)
_ARRAYS: Final = (
    "family_id",
    "image_id",
    "report_data",
    "measurement",
    "host_data",
    "id_key_digest",
    "author_key_digest",
    "report_id",
    "report_id_ma",
    "chip_id",
)
_TCBS: Final = ("current_tcb", "reported_tcb", "committed_tcb", "launch_tcb")
_VERSIONS: Final = ("current", "committed")
_VERSION_PARTS: Final = ("major", "minor", "build")

# The ``sev`` crate's field order (JSON objects are unordered, but logs and diffs read better).
_SERDE_ORDER: Final = (
    "version",
    "guest_svn",
    "policy",
    "family_id",
    "image_id",
    "vmpl",
    "sig_algo",
    "current_tcb",
    "plat_info",
    "key_info",
    "report_data",
    "measurement",
    "host_data",
    "id_key_digest",
    "author_key_digest",
    "report_id",
    "report_id_ma",
    "reported_tcb",
    "cpuid_fam_id",
    "cpuid_mod_id",
    "cpuid_step",
    "chip_id",
    "committed_tcb",
    "current",
    "committed",
    "launch_tcb",
    "launch_mit_vector",
    "current_mit_vector",
    "signature",
)


def report_to_json(raw: bytes) -> JsonObject:
    """The ``sev`` crate serde form of a 1184-byte ATTESTATION_REPORT."""
    report = ReportBytes.of(raw)
    field, uint, version = report.field, report.uint, report.version
    fields: JsonObject = {key: uint(name) for key, name, _ in _INTS}
    fields |= {
        key: uint(name) if version >= since else None for key, name, _, since in _OPTIONAL_INTS
    }
    fields |= {key: list(field(key)) for key in _ARRAYS}
    fields |= {key: report.tcb(key).to_json() for key in _TCBS}
    fields |= {key: {part: uint(f"{key}_{part}") for part in _VERSION_PARTS} for key in _VERSIONS}
    fields["signature"] = {"r": list(field("signature_r")), "s": list(field("signature_s"))}
    return {key: fields[key] for key in _SERDE_ORDER}


def encode_report(value: object) -> bytes:
    """The 1184-byte binary report for a ``sev`` crate serde ``AttestationReport``; reserved
    bytes zero, as the ``sev`` crate encodes them."""
    obj = json_object(value, "attestation_report")
    raw = bytearray(REPORT_SIZE)

    def put(name: str, data: bytes) -> None:
        offset, size = LAYOUT[name]
        raw[offset : offset + size] = data

    for key, name, bits in _INTS:
        put(name, _uint(obj, key, bits).to_bytes(bits // 8, "little"))
    for key, name, bits, _ in _OPTIONAL_INTS:
        if obj.get(key) is not None:
            put(name, _uint(obj, key, bits).to_bytes(bits // 8, "little"))
    for key in _ARRAYS:
        put(key, byte_array(obj.get(key), LAYOUT[key].size, f"SNP report field {key!r}"))

    # The serde TCB says Turin with a non-null fmc (checked in _tcb).
    cpuid_family = obj.get("cpuid_fam_id")
    turin = is_turin(
        _uint(obj, "version", 32), cpuid_family if isinstance(cpuid_family, int) else None
    )
    for key in _TCBS:
        put(key, _tcb(obj.get(key), key, turin))
    for key in _VERSIONS:
        version = json_object(obj.get(key), f"SNP report field {key!r}")
        for part in _VERSION_PARTS:
            put(f"{key}_{part}", _uint(version, part, 8).to_bytes(1, "little"))

    signature = json_object(obj.get("signature"), "SNP report signature")
    for part in ("r", "s"):
        name = f"signature_{part}"
        put(name, byte_array(signature.get(part), LAYOUT[name].size, f"signature {part}"))
    return bytes(raw)


def json_object(value: object, what: str) -> Mapping[str, object]:
    """``value`` when it is a JSON object, else ``MalformedEvidence`` naming ``what``."""
    if not isinstance(value, Mapping):
        raise MalformedEvidence(f"{what} is not a JSON object")
    return value


def byte_array(value: object, size: int, what: str) -> bytes:
    """A JSON array of exactly ``size`` integers 0..255 as bytes."""
    if not isinstance(value, list) or len(value) != size:
        raise MalformedEvidence(f"{what} is not an array of {size} bytes")
    try:
        return bytes(value)  # rejects non-integers and values outside 0..255
    except (TypeError, ValueError) as e:
        raise MalformedEvidence(f"{what} is not an array of {size} bytes") from e


def _uint(obj: Mapping[str, object], key: str, bits: int) -> int:
    value = obj.get(key)
    # bool is an int subclass; JSON true/false is not a number here.
    if type(value) is not int or not 0 <= value < 1 << bits:
        raise MalformedEvidence(f"SNP report field {key!r} is not a u{bits}")
    return value


def _tcb(value: object, key: str, turin: bool) -> bytes:
    obj = json_object(value, f"SNP report field {key!r}")
    fmc = obj.get("fmc")
    if turin and fmc is None:
        raise MalformedEvidence(f"{key}: a Turin report's TCB has an fmc SPL")
    if not turin and fmc is not None:
        raise MalformedEvidence(f"{key}: only Turin TCBs have an fmc SPL")
    return TcbVersion.from_parts(
        bootloader=_uint(obj, "bootloader", 8),
        tee=_uint(obj, "tee", 8),
        snp=_uint(obj, "snp", 8),
        microcode=_uint(obj, "microcode", 8),
        fmc=None if fmc is None else _uint(obj, "fmc", 8),
    ).raw
