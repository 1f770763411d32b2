"""Where a VCEK comes from when the evidence carries none: an offline store, then AMD's KDS.

Offline store (upstream's ``OfflineStore`` layout, so an existing store works unchanged)::

    <vcek_store_dir>/vcek/<hwid>/bl<BL>_tee<TEE>_snp<SNP>_ucode<UCODE>[_fmc<FMC>]_vcek.der
    <vcek_store_dir>/vcek/<hwid>/vcek.der          (fallback, any TCB)

``<hwid>`` is lower-case hex of CHIP_ID (Turin: its first 8 bytes, as KDS names Turin chips);
SPL values are decimal, zero-padded to two digits (``ucode209`` stays three). Files are DER.

AMD KDS: ``GET <base>/vcek/v1/<Milan|Genoa|Turin>/<hwid>?[fmcSPL=FF&]blSPL=BB&teeSPL=TT&
snpSPL=SS&ucodeSPL=UU`` through an injected ``fetcher(url) -> DER bytes``; answers that parse
as a certificate are cached in memory by URL. Whatever source answers, the VCEK still goes
through the full chain, hwID and TCB checks. VLEKs are not on KDS: they must be in the evidence.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Final

import httpx

from custodes._internal.bounded_cache import BoundedCache
from custodes.attestation.verifiers.snp.certs import load_der_certificate
from custodes.attestation.verifiers.snp.errors import VekChainInvalid, VekUnavailable
from custodes.attestation.verifiers.snp.tcb import Generation, TcbVersion

logger = logging.getLogger(__name__)

KDS_BASE_URL: Final = "https://kdsintf.amd.com"
MAX_VCEK_SIZE: Final = 16 * 1024
_MAX_CACHED_URLS: Final = 1024

Fetcher = Callable[[str], bytes]


def httpx_fetcher(client: httpx.Client, timeout: float = 10.0) -> Fetcher:
    """A :data:`Fetcher` over an ``httpx.Client`` (non-2xx answers raise)."""

    def fetch(url: str) -> bytes:
        response = client.get(url, timeout=timeout)
        response.raise_for_status()
        return bytes(response.content)

    return fetch


def hwid_hex(generation: Generation, chip_id: bytes) -> str:
    """The chip's hardware ID as KDS names it: hex CHIP_ID, only 8 bytes on Turin."""
    return (chip_id[:8] if generation is Generation.TURIN else chip_id).hex()


def kds_vcek_url(
    generation: Generation, chip_id: bytes, tcb: TcbVersion, base_url: str = KDS_BASE_URL
) -> str:
    query = "&".join(f"{name}={value:02d}" for name, value in tcb.spl_values.items())
    return f"{base_url}/vcek/v1/{generation}/{hwid_hex(generation, chip_id)}?{query}"


def store_paths(
    store_dir: Path, generation: Generation, chip_id: bytes, tcb: TcbVersion
) -> list[Path]:
    """The files the offline store is searched for, in order."""
    folder = store_dir / "vcek" / hwid_hex(generation, chip_id)
    return [folder / f"{tcb_file_prefix(tcb)}_vcek.der", folder / "vcek.der"]


def tcb_file_prefix(tcb: TcbVersion) -> str:
    """``bl<BL>_tee<TEE>_snp<SNP>_ucode<UCODE>[_fmc<FMC>]``: a VCEK's TCB in the store's names
    (several VCEKs of one chip, one per firmware level, live side by side)."""
    prefix = f"bl{tcb.bootloader:02d}_tee{tcb.tee:02d}_snp{tcb.snp:02d}_ucode{tcb.microcode:02d}"
    if tcb.fmc is not None:
        prefix += f"_fmc{tcb.fmc:02d}"
    return prefix


class VcekSources:
    """The offline store, then KDS; ``find`` returns (DER, where it came from)."""

    def __init__(
        self, store_dir: Path | None, fetcher: Fetcher | None, base_url: str = KDS_BASE_URL
    ) -> None:
        self._store_dir = store_dir
        self._fetcher = fetcher
        self._base_url = base_url
        # KDS answers by URL, shared by the worker threads that verify concurrently.
        self._cache: BoundedCache[str, bytes] = BoundedCache(_MAX_CACHED_URLS)

    def find(self, generation: Generation, chip_id: bytes, tcb: TcbVersion) -> tuple[bytes, str]:
        if not any(chip_id):
            # MASK_CHIP_ID: the chip cannot be named, so neither store nor KDS can serve it.
            raise VekUnavailable("CHIP_ID is masked; the evidence must carry the VCEK")
        store_miss = ""
        if self._store_dir is not None:
            paths = store_paths(self._store_dir, generation, chip_id, tcb)
            for path in paths:
                data = _read_bounded(path)
                if data is not None:
                    logger.debug("SNP VCEK from the offline store: %s", path)
                    return data, f"store:{path}"
            # The store may hold this chip's VCEKs for other TCBs (one per firmware level):
            # name the one the report needs, so the operator can add it.
            store_miss = f"; the offline store has neither {paths[0]} nor {paths[1].name}"
        if self._fetcher is not None:
            url = kds_vcek_url(generation, chip_id, tcb, self._base_url)
            cached = self._cache.get(url)
            if cached is not None:
                return cached, url
            try:
                answer: object = self._fetcher(url)
            except Exception as e:  # any transport failure means: no VCEK from KDS
                raise VekUnavailable(f"fetching the VCEK from AMD KDS failed: {e}") from e
            if not isinstance(answer, bytes) or len(answer) > MAX_VCEK_SIZE:
                raise VekUnavailable("AMD KDS answered something that is not a VCEK")
            data = answer
            try:
                load_der_certificate(data, "VCEK")
            except VekChainInvalid as e:
                raise VekUnavailable("AMD KDS answered something that is not a VCEK") from e
            self._cache.put(url, data)
            logger.debug("SNP VCEK fetched from %s", url)
            return data, url
        raise VekUnavailable(
            "no VCEK in the evidence, the offline store, or from AMD KDS for chip "
            f"{hwid_hex(generation, chip_id)[:16]}… at TCB {tcb_file_prefix(tcb)}{store_miss}"
        )


def _read_bounded(path: Path) -> bytes | None:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_VCEK_SIZE + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise VekUnavailable(f"cannot read the offline VCEK store: {path}") from e
    if len(data) > MAX_VCEK_SIZE:
        raise VekUnavailable(f"offline VCEK file is too large: {path}")
    return data
