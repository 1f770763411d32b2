"""The SNP verifier's caches under concurrent use, at their capacity.

The broker verifies evidence in worker threads that share one ``SnpVerifier``. Its VEK chain
cache, VekInfo cache and KDS answer cache are bounded; at the cap every miss evicts. Before
they were locked, two threads at the cap picked the same oldest key and the second ``pop``
raised ``KeyError`` (or the dict changed size under an iterator): a genuine guest was refused
with a 500. Here the
caps are 1 and four VCEKs take turns, so almost every call evicts, from eight threads with the
interpreter switching threads as often as it can.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from snp_synthetic_pki import E2E_EVIDENCE, evidence, load_json, patch, sign, synthetic_amd

from custodes._internal.bounded_cache import BoundedCache
from custodes._internal.clock import FrozenClock
from custodes.attestation.verifiers.base import VerificationRequest
from custodes.attestation.verifiers.snp import SnpVerifier, SnpVerifierConfig
from custodes.attestation.verifiers.snp import certs as snp_certs
from custodes.attestation.verifiers.snp import checks as snp_checks
from custodes.attestation.verifiers.snp import collateral as snp_collateral
from custodes.attestation.verifiers.snp.evidence import SnpEvidence
from custodes.attestation.verifiers.snp.report import SnpReport
from custodes.types.json import JsonObject
from custodes.types.tee import Tee

JAN_2026 = 1767225600.0
THREADS = 8
ROUNDS = 400


@pytest.fixture
def busy_switching() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _requests(vectors: Path, count: int) -> list[VerificationRequest]:
    """``count`` copies of the e2e report, each signed by its own synthetic VCEK."""
    amd = synthetic_amd()
    raw = SnpEvidence.from_json(load_json(vectors / E2E_EVIDENCE)).report.raw
    report = SnpReport.from_bytes(raw)
    requests = []
    for _ in range(count):
        der, key = amd.vek(report.reported_tcb, hwid=report.chip_id)
        signed = sign(raw, key)
        doc: JsonObject = evidence(signed, [("VCEK", der)])
        requests.append(VerificationRequest(Tee.SNP, doc, report.report_data, None))
    return requests


def test_caches_at_capacity_survive_concurrent_verification(
    vectors: Path, monkeypatch: pytest.MonkeyPatch, busy_switching: None
) -> None:
    monkeypatch.setattr(snp_certs, "_MAX_CACHED_VEKS", 1)
    monkeypatch.setattr(snp_checks, "MAX_CACHED_VEK_INFOS", 1)
    amd = synthetic_amd()
    verifier = SnpVerifier(
        SnpVerifierConfig(clock=FrozenClock(JAN_2026)), roots={amd.generation: amd.roots}
    )
    requests = _requests(vectors, 4)
    failures: list[BaseException] = []
    verified = [0]
    count_lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def work(offset: int) -> None:
        start.wait()
        for i in range(ROUNDS):
            try:
                claims = verifier.verify(requests[(i + offset) % len(requests)])
            except BaseException as e:  # any failure of a genuine report is the bug
                failures.append(e)
                return
            if claims:
                with count_lock:
                    verified[0] += 1

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert verified[0] == THREADS * ROUNDS


def test_kds_cache_at_capacity_survives_concurrent_verification(
    vectors: Path, monkeypatch: pytest.MonkeyPatch, busy_switching: None
) -> None:
    # Four chips (so four KDS URLs) whose evidence carries no VCEK: every call goes through
    # the KDS answer cache, capped at 1.
    monkeypatch.setattr(snp_collateral, "_MAX_CACHED_URLS", 1)
    amd = synthetic_amd()
    raw = SnpEvidence.from_json(load_json(vectors / E2E_EVIDENCE)).report.raw
    served: dict[str, bytes] = {}
    requests = []
    for n in range(4):
        chip = bytes([n + 1]) * 64
        chip_raw = patch(raw, "chip_id", chip)
        report = SnpReport.from_bytes(chip_raw)
        der, key = amd.vek(report.reported_tcb, hwid=chip)
        served[chip.hex()] = der
        doc: JsonObject = evidence(sign(chip_raw, key), None)
        requests.append(VerificationRequest(Tee.SNP, doc, report.report_data, None))

    def kds(url: str) -> bytes:
        [der] = [d for chip, d in served.items() if chip in url]
        return der

    verifier = SnpVerifier(
        SnpVerifierConfig(clock=FrozenClock(JAN_2026), kds_fetcher=kds),
        roots={amd.generation: amd.roots},
    )
    failures: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def work(offset: int) -> None:
        start.wait()
        for i in range(ROUNDS // 4):
            try:
                if not verifier.verify(requests[(i + offset) % len(requests)]):
                    failures.append(AssertionError("no claims"))
            except BaseException as e:
                failures.append(e)
                return

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_bounded_cache_keeps_its_bound_under_threads(busy_switching: None) -> None:
    cache: BoundedCache[int, int] = BoundedCache(2)
    failures: list[BaseException] = []

    def work(base: int) -> None:
        try:
            for i in range(2000):
                cache.put(base * 10_000 + i, i)
                cache.get(base * 10_000 + i - 1)
                assert len(cache) <= 2
        except BaseException as e:
            failures.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert len(cache) == 2


def test_bounded_cache_evicts_the_least_recently_used() -> None:
    cache: BoundedCache[str, int] = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "b" is now the oldest
    cache.put("c", 3)
    assert cache.get("b") is None
    assert (cache.get("a"), cache.get("c")) == (1, 3)
    with pytest.raises(ValueError):
        BoundedCache(0)


def test_verifiers_share_the_locked_cache() -> None:
    from custodes.attestation.verifiers.azure.snp_verifier import AzSnpVtpmVerifier

    snp = SnpVerifier()
    assert isinstance(snp._vek_extensions.cache, BoundedCache)
    assert isinstance(snp._chains._veks, BoundedCache)
    assert isinstance(snp._sources._cache, BoundedCache)
    # One class for both verifiers' VekInfo cache: the copies cannot drift apart again.
    assert type(AzSnpVtpmVerifier()._vek_extensions) is type(snp._vek_extensions)
