"""Shared helpers for the Azure verifier tests: vector paths, byte surgery on HCL reports,
and a synthetic vTPM quote (no Azure vTPM exists here; it is used only where the vectors
cannot exercise a success path, and the tests that use it say so)."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from custodes._internal.b64 import b64url_encode
from custodes.attestation.verifiers.azure.evidence import VtpmQuote, b64url_encode_padded
from custodes.attestation.verifiers.azure.hcl import REQUEST_DATA_OFFSET, VAR_DATA_OFFSET

# Inside every vector VCEK's validity window (the newest starts 2025-01-28, all end >= 2030).
FROZEN_NOW = datetime(2025, 6, 1, tzinfo=UTC).timestamp()
CHALLENGE = b"challenge"
# README "Azure vTPM" row: the documented report data of az-snp-vtpm/evidence-v2.json.
V2_REPORT_DATA = bytes.fromhex(
    "982f5c6e45df0ed3f10b6f60b02f0c8390e281300f3805e2279c16168cd6ae9a"
    "a398f647caa2338748cd0fd9f5f819ef"
)
SNP_IN_HCL = 0x20  # the hardware report's offset inside the HCL report


def vector_dir(vectors: Path) -> Path:
    return vectors / "trustee" / "deps" / "verifier" / "test_data"


def load_json(vectors: Path, tee: str, name: str) -> Any:
    return json.loads((vector_dir(vectors) / tee / name).read_text())


def standalone_evidence(vectors: Path) -> dict[str, Any]:
    """v1 evidence assembled from the standalone az-snp-vtpm pieces: hcl-report.bin,
    tpm-quote-v1.json and the first certificate of vcek.pem (its VCEK)."""
    folder = vector_dir(vectors) / "az-snp-vtpm"
    pem = (folder / "vcek.pem").read_text()
    first = pem.split("-----END CERTIFICATE-----")[0].split("-----BEGIN CERTIFICATE-----")[1]
    vcek = base64.b64decode("".join(first.split()))
    return {
        "version": 1,
        "tpm_quote": load_json(vectors, "az-snp-vtpm", "tpm-quote-v1.json"),
        "hcl_report": b64url_encode_padded((folder / "hcl-report.bin").read_bytes()),
        "vcek": b64url_encode_padded(vcek),
    }


def flip(raw: bytes, offset: int, mask: int = 0x01) -> bytes:
    out = bytearray(raw)
    out[offset] ^= mask
    return bytes(out)


def var_data(hcl: bytes) -> bytes:
    size = struct.unpack_from("<I", hcl, REQUEST_DATA_OFFSET + 16)[0]
    return hcl[VAR_DATA_OFFSET : VAR_DATA_OFFSET + size]


def with_var_data(hcl: bytes, new_var_data: bytes, total: int | None = None) -> bytes:
    """The HCL report with its runtime data replaced and every length field kept consistent,
    zero-padded to ``total`` bytes (default: the original buffer size)."""
    total = len(hcl) if total is None else total
    size = len(new_var_data)
    out = bytearray(hcl[:VAR_DATA_OFFSET])
    struct.pack_into("<I", out, 8, VAR_DATA_OFFSET + size)  # header report_size
    struct.pack_into("<I", out, REQUEST_DATA_OFFSET, 20 + size)  # data_size
    struct.pack_into("<I", out, REQUEST_DATA_OFFSET + 16, size)  # variable_data_size
    out += new_var_data
    out += bytes(max(0, total - len(out)))
    return bytes(out)


def with_runtime_json(hcl: bytes, runtime: Any) -> bytes:
    return with_var_data(hcl, json.dumps(runtime, separators=(",", ":")).encode())


def rsa_jwk(key: rsa.RSAPublicKey, kid: str = "HCLAkPub") -> dict[str, Any]:
    numbers = key.public_numbers()
    return {
        "kid": kid,
        "key_ops": ["sign"],
        "kty": "RSA",
        "e": b64url_encode(numbers.e.to_bytes(3, "big")),
        "n": b64url_encode(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
    }


def synthetic_attest(extra_data: bytes, pcrs: tuple[bytes, ...]) -> bytes:
    """A marshalled TPMS_ATTEST quote over SHA-256 PCRs 0-23 (TPM 2.0 Part 2 layout)."""
    out = struct.pack(">IH", 0xFF544347, 0x8018)
    out += struct.pack(">H", 34) + struct.pack(">H", 0x000B) + bytes(32)  # qualifiedSigner
    out += struct.pack(">H", len(extra_data)) + extra_data
    out += struct.pack(">QIIB", 1000, 1, 0, 1)  # clockInfo
    out += struct.pack(">Q", 0x2020031200120003)  # firmwareVersion
    out += struct.pack(">IHB", 1, 0x000B, 3) + b"\xff\xff\xff"  # TPML_PCR_SELECTION
    digest = hashlib.sha256(b"".join(pcrs)).digest()
    return out + struct.pack(">H", len(digest)) + digest


def synthetic_quote(
    key: rsa.RSAPrivateKey, extra_data: bytes, pcrs: tuple[bytes, ...]
) -> VtpmQuote:
    message = synthetic_attest(extra_data, pcrs)
    signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return VtpmQuote(signature=signature, message=message, pcrs=pcrs)
