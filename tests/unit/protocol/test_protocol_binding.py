"""Runtime-data binding: JCS + hash, against trustee's unit vector and the derived example."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from custodes.errors import MalformedMessage
from custodes.protocol.binding import (
    DEFAULT_HASH_ALGORITHM,
    HashAlgorithm,
    device_runtime_data_digest,
    runtime_data_digest,
    runtime_data_object,
    select_hash_algorithm,
)


@pytest.fixture(scope="module")
def derived(vectors: Path) -> dict[str, Any]:
    path = vectors / "trustee" / "derived" / "kbs_protocol_derived_vectors.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_trustee_jcs_unit_vector(derived: dict[str, Any]) -> None:
    v = derived["jcs_unit_vector_from_trustee_tests"]
    canonical = rfc8785.dumps(v["input"])
    assert canonical == v["jcs"].encode()
    assert HashAlgorithm.SHA384.digest(canonical).hex() == v["sha384_hex"]


def test_primary_digest_matches_derived_example(derived: dict[str, Any]) -> None:
    b = derived["runtime_data_binding"]
    rd = b["primary_runtime_data_json"]
    obj = runtime_data_object(rd["nonce"], rd["tee-pubkey"], rd["additional-evidence"])
    assert rfc8785.dumps(obj) == b["primary_runtime_data_jcs"].encode()
    digest = runtime_data_digest(b["challenge_nonce"], rd["tee-pubkey"], "", HashAlgorithm.SHA384)
    assert digest.hex() == b["primary_sha384_hex"]
    # The TEE layouts of the derived example are this digest, zero-padded or cut.
    assert (digest + bytes(16)).hex() == b["tdx_snp_sgx_csv_cca_report_data_64_hex"]
    assert digest[:32].hex() == b["tpm_quote_extradata_32_hex"]


def test_device_digest_matches_derived_example(derived: dict[str, Any]) -> None:
    b = derived["runtime_data_binding"]
    jwk = b["primary_runtime_data_json"]["tee-pubkey"]
    digest = device_runtime_data_digest(b["challenge_nonce"], jwk, HashAlgorithm.SHA384)
    assert digest.hex() == b["device_sha384_hex"]
    assert rfc8785.dumps({"nonce": b["challenge_nonce"], "tee-pubkey": jwk}) == (
        b["device_runtime_data_jcs"].encode()
    )


def test_primary_object_always_carries_additional_evidence() -> None:
    obj = runtime_data_object("n", {"kty": "EC"}, "")
    assert obj == {"additional-evidence": "", "nonce": "n", "tee-pubkey": {"kty": "EC"}}


def test_additional_evidence_changes_the_digest() -> None:
    jwk = {"kty": "EC"}
    empty = runtime_data_digest("n", jwk, "", HashAlgorithm.SHA384)
    device = runtime_data_digest("n", jwk, '{"nvidia":{}}', HashAlgorithm.SHA384)
    assert empty != device
    assert empty != device_runtime_data_digest("n", jwk, HashAlgorithm.SHA384)


@pytest.mark.parametrize(
    ("alg", "size"),
    [(HashAlgorithm.SHA256, 32), (HashAlgorithm.SHA384, 48), (HashAlgorithm.SHA512, 64)],
)
def test_hash_algorithm_sizes(alg: HashAlgorithm, size: int) -> None:
    assert alg.digest_size == size
    assert len(alg.digest(b"x")) == size
    assert len(runtime_data_digest("n", {}, "", alg)) == size


@pytest.mark.parametrize(
    ("extra_params", "expected"),
    [
        ("", HashAlgorithm.SHA384),
        (None, HashAlgorithm.SHA384),
        ({}, HashAlgorithm.SHA384),
        ([], HashAlgorithm.SHA384),
        ({"other": 1}, HashAlgorithm.SHA384),
        ({"selected-hash-algorithm": "sha512"}, HashAlgorithm.SHA512),
        ({"selected-hash-algorithm": "SHA256"}, HashAlgorithm.SHA256),
        ({"selected-hash-algorithm": "Sha384"}, HashAlgorithm.SHA384),
    ],
)
def test_select_hash_algorithm(extra_params: object, expected: HashAlgorithm) -> None:
    assert select_hash_algorithm(extra_params) is expected


def test_default_is_sha384() -> None:
    assert DEFAULT_HASH_ALGORITHM is HashAlgorithm.SHA384


@pytest.mark.parametrize("name", ["sm3", "sha-384", "", 512, None])
def test_select_unknown_hash_algorithm_refused(name: object) -> None:
    with pytest.raises(MalformedMessage):
        select_hash_algorithm({"selected-hash-algorithm": name})


def test_uncanonicalisable_runtime_data_refused() -> None:
    # A lone surrogate cannot be written as UTF-8, so JCS cannot encode it.
    with pytest.raises(MalformedMessage):
        runtime_data_digest("\ud800", {}, "", HashAlgorithm.SHA384)
    with pytest.raises(MalformedMessage):
        device_runtime_data_digest("n", {"x": float("nan")}, HashAlgorithm.SHA384)
