"""The TDX verifier's caches: bounded, and never a way around a check.

What is cached: per collateral value, the parse of its parts' validity windows and both CRL
signatures (``collateral._static_facts``); per quote PCK chain, the issuer chain
(``collateral._issuer_chain_of``) and the PCK leaf's SGX extension (``_dcap.PCK_INFO_CACHE``).
What must still run on every call: the collateral window against the injected clock, and
dcap-qvl's full verification of the quote. All with dcap-qvl's real sample quote and collateral.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from datetime import datetime
from pathlib import Path

import pytest

from custodes._internal.clock import FrozenClock
from custodes.attestation.verifiers.base import VerificationRequest
from custodes.attestation.verifiers.tdx import TdxVerifier, TdxVerifierConfig, _dcap
from custodes.attestation.verifiers.tdx.collateral import (
    MAX_CACHED_ISSUER_CHAINS,
    MAX_CHECKED_COLLATERALS,
    Collateral,
    _issuer_chain_of,
    _static_facts,
)
from custodes.attestation.verifiers.tdx.quote import TdxQuote
from custodes.errors import CollateralError, MalformedEvidence, SignatureInvalid
from custodes.types.json import JsonObject
from custodes.types.tee import Tee

ECDSA_SIGNATURE_OFFSET = 636  # the quote's own signature, in a v4 quote


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def sample(vectors: Path) -> Path:
    return vectors / "dcap-qvl"


@pytest.fixture(scope="module")
def qvl_json(sample: Path) -> JsonObject:
    doc: JsonObject = json.loads((sample / "tdx_quote_collateral.json").read_text())
    return doc


@pytest.fixture(scope="module")
def quote(sample: Path) -> bytes:
    return (sample / "tdx_quote").read_bytes()


@pytest.fixture(scope="module")
def window(qvl_json: JsonObject) -> tuple[float, float]:
    """Issue time of the sample's TCB info, and the expiry of its PCK CRL (the earliest)."""
    return _ts(json.loads(qvl_json["tcb_info"])["issueDate"]), _ts("2025-07-19T10:00:35Z")


def _request(quote: bytes) -> VerificationRequest:
    evidence = {"cc_eventlog": None, "quote": base64.b64encode(quote).decode()}
    return VerificationRequest(Tee.TDX, evidence, TdxQuote.from_bytes(quote).report_data)


def _flip(raw: bytes, offset: int) -> bytes:
    out = bytearray(raw)
    out[offset] ^= 0x01
    return bytes(out)


# --- the collateral window is checked on every call --------------------------------------


def test_tdx_collateral_expiry_after_a_successful_verify_is_refused(
    sample: Path, quote: bytes, window: tuple[float, float]
) -> None:
    clock = FrozenClock(window[0] + 3600)
    verifier = TdxVerifier(
        TdxVerifierConfig(collateral_path=sample / "tdx_quote_collateral.json", clock=clock)
    )
    verifier.verify(_request(quote))  # fills every cache
    hits = _static_facts.cache_info().hits
    clock.advance(window[1] - clock.now())  # exactly the PCK CRL's nextUpdate
    with pytest.raises(CollateralError, match="expired"):
        verifier.verify(_request(quote))
    assert _static_facts.cache_info().hits > hits  # the refusal came from a cached entry


def test_tdx_collateral_not_yet_valid_after_a_successful_check_is_refused(
    qvl_json: JsonObject, window: tuple[float, float]
) -> None:
    collateral = Collateral.from_dcap_qvl_json(qvl_json)
    not_before, not_after = collateral.window()
    collateral.check(not_before)
    with pytest.raises(CollateralError, match="not yet valid"):
        collateral.check(not_before - 1)
    with pytest.raises(CollateralError, match="expired"):
        collateral.check(not_after)
    collateral.check(not_after - 1)  # the same cached entry still accepts inside the window


def test_tdx_collateral_bad_crl_signature_is_refused_on_every_call(
    qvl_json: JsonObject, window: tuple[float, float]
) -> None:
    good = Collateral.from_dcap_qvl_json(qvl_json)
    # The last byte of the DER CRL is inside its ECDSA signature: still a CRL, badly signed.
    bad = dataclasses.replace(good, pck_crl=_flip(good.pck_crl, len(good.pck_crl) - 1))
    for _ in range(2):
        with pytest.raises(CollateralError, match="PCK CRL is not signed"):
            bad.check(window[0] + 3600)
    good.check(window[0] + 3600)


def test_tdx_collateral_unparsable_part_is_never_cached(
    qvl_json: JsonObject, window: tuple[float, float]
) -> None:
    good = Collateral.from_dcap_qvl_json(qvl_json)
    broken = dataclasses.replace(good, tcb_info="not json")
    before = _static_facts.cache_info()
    for _ in range(2):
        with pytest.raises(CollateralError):
            broken.check(window[0] + 3600)
    after = _static_facts.cache_info()
    # Both calls parsed again (two misses, no hit): a failure leaves no entry behind.
    assert (after.misses - before.misses, after.hits - before.hits) == (2, 0)


def test_tdx_collateral_cache_is_bounded(qvl_json: JsonObject, window: tuple[float, float]) -> None:
    base = Collateral.from_dcap_qvl_json(qvl_json)
    assert _static_facts.cache_info().maxsize == MAX_CHECKED_COLLATERALS
    # Distinct values that parse alike: the TCB info signature is not part of the window.
    for i in range(MAX_CHECKED_COLLATERALS + 5):
        dataclasses.replace(base, tcb_info_signature=i.to_bytes(64, "big")).check(window[0] + 3600)
    assert _static_facts.cache_info().currsize == MAX_CHECKED_COLLATERALS


def test_tdx_issuer_chain_cache_is_bounded(quote: bytes) -> None:
    chain = TdxQuote.from_bytes(quote).signature_data.pck_chain_pem
    assert _issuer_chain_of.cache_info().maxsize == MAX_CACHED_ISSUER_CHAINS
    assert _issuer_chain_of(chain) == _issuer_chain_of(chain)
    with pytest.raises(CollateralError):
        _issuer_chain_of(b"not a chain")
    assert _issuer_chain_of.cache_info().currsize <= MAX_CACHED_ISSUER_CHAINS


# --- the PCK extension cache --------------------------------------------------------------


def test_tdx_pck_info_cached_equals_uncached(quote: bytes) -> None:
    chain = TdxQuote.from_bytes(quote).signature_data.pck_chain_pem
    _dcap.PCK_INFO_CACHE.clear()
    uncached = _dcap.pck_info(quote)
    assert len(_dcap.PCK_INFO_CACHE) == 0
    first = _dcap.pck_info(quote, chain)
    assert _dcap.PCK_INFO_CACHE.get(chain) == first == uncached
    assert _dcap.pck_info(quote, chain) is first


def test_tdx_pck_info_failure_is_not_cached() -> None:
    _dcap.PCK_INFO_CACHE.clear()
    with pytest.raises(MalformedEvidence):
        _dcap.pck_info(b"not a quote", b"some chain")
    assert _dcap.PCK_INFO_CACHE.get(b"some chain") is None
    assert len(_dcap.PCK_INFO_CACHE) == 0


def test_tdx_pck_info_cache_is_bounded_lru(quote: bytes) -> None:
    assert _dcap.PCK_INFO_CACHE.maxsize == _dcap.MAX_CACHED_PCK_CHAINS
    info = _dcap.pck_info(quote)
    cache = _dcap.PckInfoCache(maxsize=2)
    cache.put(b"a", info)
    cache.put(b"b", info)
    assert cache.get(b"a") is info  # "a" is now the most recently used
    cache.put(b"c", info)
    assert len(cache) == 2
    assert cache.get(b"b") is None  # the least recently used went
    assert cache.get(b"a") is info and cache.get(b"c") is info
    with pytest.raises(ValueError):
        _dcap.PckInfoCache(maxsize=0)


def test_tdx_cached_pck_chain_does_not_skip_the_quote_signature(
    sample: Path, quote: bytes, window: tuple[float, float]
) -> None:
    verifier = TdxVerifier(
        TdxVerifierConfig(
            collateral_path=sample / "tdx_quote_collateral.json",
            clock=FrozenClock(window[0] + 3600),
        )
    )
    verifier.verify(_request(quote))
    chain = TdxQuote.from_bytes(quote).signature_data.pck_chain_pem
    assert _dcap.PCK_INFO_CACHE.get(chain) is not None
    # Same PCK chain (a cache hit), tampered quote signature: dcap-qvl still refuses it.
    with pytest.raises(SignatureInvalid):
        verifier.verify(_request(_flip(quote, ECDSA_SIGNATURE_OFFSET + 10)))
