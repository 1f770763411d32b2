"""The ``tpm`` verifier's fast paths and caches: bounded, equivalent to the slow path, and
never a way around a check.

Cached: ``parse_ak_public`` per DER (successes only) and the PCR index tuple per selection
bitmap. One-pass: the 24 PCR hex strings (``decode_pcr_bank``), which must accept exactly what
the per-entry regex accepts. All on upstream's real vector; the AKs for the bound test are
freshly generated P-256 keys (only their count matters).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from custodes._internal.b64 import b64std_decode, b64std_encode
from custodes.attestation.verifiers.base import VerificationRequest
from custodes.attestation.verifiers.tpm import TpmVerifier
from custodes.attestation.verifiers.tpm.errors import AkPublicKeyInvalid
from custodes.attestation.verifiers.tpm.evidence import TpmEvidence, decode_pcr_bank
from custodes.attestation.verifiers.tpm.structures import (
    _MAX_CACHED_SELECTIONS,
    TpmsPcrSelection,
    _selected_indices,
)
from custodes.attestation.verifiers.tpm.verifier import MAX_CACHED_AKS, parse_ak_public
from custodes.errors import MalformedEvidence, SignatureInvalid
from custodes.types.tee import Tee

Evidence = dict[str, Any]
_EXTRA_DATA_OFFSET = 4 + 2 + 2 + 34 + 2  # magic, type, qualifiedSigner, extraData size
_PCR_HEX = re.compile(r"[0-9a-fA-F]{64}")


@pytest.fixture(scope="module")
def vector(vectors: Path) -> Evidence:
    data: Evidence = json.loads(
        (vectors / "trustee/deps/verifier/test_data/tpm_evidence.json").read_text()
    )
    return data


def _request(evidence: Evidence) -> VerificationRequest:
    message = b64std_decode(evidence["tpm_quote"]["message"])
    nonce = message[_EXTRA_DATA_OFFSET : _EXTRA_DATA_OFFSET + 64]
    return VerificationRequest(Tee.TPM, evidence, nonce)


def _p256_der() -> bytes:
    return (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


# --- the AK cache -------------------------------------------------------------------------


def test_tpm_cached_ak_does_not_skip_the_quote_signature(vector: Evidence) -> None:
    verifier = TpmVerifier()
    verifier.verify(_request(vector))
    ak = b64std_decode(vector["ak_public"])
    hits = parse_ak_public.cache_info().hits
    tampered = copy.deepcopy(vector)
    signature = bytearray(b64std_decode(tampered["tpm_quote"]["signature"]))
    signature[-1] ^= 0x01  # the last byte of the RSA signature
    tampered["tpm_quote"]["signature"] = b64std_encode(bytes(signature))
    with pytest.raises(SignatureInvalid):
        verifier.verify(_request(tampered))
    assert parse_ak_public.cache_info().hits > hits  # the AK came from the cache
    assert parse_ak_public(ak) is parse_ak_public(ak)


def test_tpm_refused_ak_is_never_cached(vector: Evidence) -> None:
    ak = b64std_decode(vector["ak_public"])
    # An empty SEQUENCE, and the real AK followed by a stray byte: refused on every call.
    for bad in (b"\x30\x00", ak + b"\x00"):
        before = parse_ak_public.cache_info()
        for _ in range(2):
            with pytest.raises(AkPublicKeyInvalid):
                parse_ak_public(bad)
        after = parse_ak_public.cache_info()
        assert (after.misses - before.misses, after.hits - before.hits) == (2, 0)


def test_tpm_ak_cache_is_bounded() -> None:
    assert parse_ak_public.cache_info().maxsize == MAX_CACHED_AKS
    for _ in range(MAX_CACHED_AKS + 3):
        parse_ak_public(_p256_der())
    assert parse_ak_public.cache_info().currsize == MAX_CACHED_AKS


def test_tpm_pcr_selection_cache_is_bounded() -> None:
    assert _selected_indices.cache_info().maxsize == _MAX_CACHED_SELECTIONS
    for i in range(_MAX_CACHED_SELECTIONS + 3):
        select = i.to_bytes(2, "little")
        expected = tuple(b for b in range(16) if i >> b & 1)
        assert TpmsPcrSelection(0x000B, select).indices == expected
    assert _selected_indices.cache_info().currsize == _MAX_CACHED_SELECTIONS


# --- the one-pass PCR decoder ------------------------------------------------------------


def _per_entry(values: list[object]) -> tuple[bytes, ...] | None:
    """The reference rule: each entry a str of exactly 64 hex digits."""
    if len(values) != 24:
        return None
    if not all(isinstance(v, str) and _PCR_HEX.fullmatch(v) for v in values):
        return None
    return tuple(bytes.fromhex(v) for v in values if isinstance(v, str))


@pytest.mark.parametrize(
    "bad",
    [
        "0" * 63 + " ",  # whitespace that bytes.fromhex alone would skip
        " " + "0" * 63,
        "00 " + "0" * 61,
        "0" * 62 + "\n0",
        "0" * 63 + "g",
        "0" * 63 + "\u0660",  # ARABIC-INDIC DIGIT ZERO: a digit, not a hex digit
        "0" * 63 + "\uff10",  # FULLWIDTH DIGIT ZERO
        "0" * 63,
        "0" * 65,
        "",
        None,
        32,
        ["0" * 64],
    ],
)
def test_tpm_pcr_bank_refuses_what_the_regex_refuses(vector: Evidence, bad: object) -> None:
    pcrs: list[object] = list(vector["tpm_quote"]["pcrs"])
    for index in (0, 23):
        values = pcrs.copy()
        values[index] = bad
        assert _per_entry(values) is None
        assert decode_pcr_bank(values) is None
        mutated = copy.deepcopy(vector)
        mutated["tpm_quote"]["pcrs"] = values
        with pytest.raises(MalformedEvidence, match=f"PCR {index} "):
            TpmEvidence.from_json(mutated)


def test_tpm_pcr_bank_accepts_what_the_regex_accepts(vector: Evidence) -> None:
    pcrs: list[object] = list(vector["tpm_quote"]["pcrs"])
    upper: list[object] = [str(v).upper() for v in pcrs]
    mixed: list[object] = ["aBcDeF" + "0" * 58] * 24
    for values in (pcrs, upper, mixed):
        assert decode_pcr_bank(values) == _per_entry(values)
        assert decode_pcr_bank(values) is not None
    assert decode_pcr_bank(pcrs[:23]) is None
    assert decode_pcr_bank([*pcrs, pcrs[0]]) is None
