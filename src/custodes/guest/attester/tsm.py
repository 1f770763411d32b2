"""The Linux configfs-tsm report interface (``/sys/kernel/config/tsm/report``), shared by the
configfs-based attesters (``snp``, ``tdx``).

One report is one configfs item, used once (kernel ABI ``Documentation/ABI/testing/
configfs-tsm-report``):

1. ``mkdir <root>/report/<unique name>``: the kernel populates the item's attributes;
2. read ``provider`` and refuse a provider other than the one asked for;
3. read ``generation``, which the kernel increments on every attribute write;
4. write ``privlevel`` (only when asked), then ``inblob``: the report data zero-padded to
   64 bytes (more than 64 is refused, as is an empty digest);
5. read ``outblob`` (and ``auxblob`` when asked and present);
6. read ``generation`` again: anything other than the start value plus our own writes means
   another writer raced on the item, so the blobs may answer someone else's data;
7. ``rmdir`` the item, also on failure.

The file operations go through :class:`ConfigFs`; :class:`OsConfigFs` (the default) is plain
``os`` calls. The seam exists so that tests can drive the real sequence over an ordinary
directory with the kernel's side effects simulated; production never replaces it.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final, Protocol

from custodes.errors import CustodesError

logger = logging.getLogger(__name__)

DEFAULT_TSM_ROOT: Final = Path("/sys/kernel/config/tsm")
INBLOB_SIZE: Final = 64  # TSM_INBLOB_MAX; SNP and TDX report data are 64 bytes
_MAX_GENERATION_TEXT: Final = 32


class TsmProvider(StrEnum):
    """The ``provider`` names of the kernel's TSM drivers."""

    TDX = "tdx_guest"
    SEV = "sev_guest"
    CCA = "arm_cca_guest"


class TsmError(CustodesError):
    """configfs-tsm could not produce a report."""

    code = "tsm-report"


class TsmUnavailable(TsmError):
    """There is no configfs-tsm report directory on this machine."""

    code = "tsm-unavailable"


class TsmProviderMismatch(TsmError):
    """The TSM provider is not the one the attester needs."""

    code = "tsm-provider-mismatch"


class TsmWriteRace(TsmError):
    """``generation`` moved by more than our own writes: another writer used the item."""

    code = "tsm-write-race"


class TsmOutputInvalid(TsmError):
    """An ``outblob`` or ``auxblob`` is not what its provider produces."""

    code = "tsm-output-invalid"


class ConfigFs(Protocol):
    """The four file operations a TSM report needs."""

    def mkdir(self, path: Path) -> None: ...

    def rmdir(self, path: Path) -> None: ...

    def read(self, path: Path) -> bytes: ...

    def write(self, path: Path, data: bytes) -> None: ...


class OsConfigFs:
    """The real operations. A write is one open/write/close: configfs binary attributes take
    their value when the file is closed."""

    def mkdir(self, path: Path) -> None:
        os.mkdir(path, 0o700)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def read(self, path: Path) -> bytes:
        return path.read_bytes()

    def write(self, path: Path, data: bytes) -> None:
        path.write_bytes(data)


@dataclass(frozen=True, slots=True)
class TsmReport:
    """What one report item gave: the provider's blobs and the final ``generation``."""

    provider: str
    inblob: bytes
    outblob: bytes
    auxblob: bytes | None
    generation: int


def pad_report_data(report_data: bytes) -> bytes:
    """``report_data`` followed by zeros up to 64 bytes; ``ValueError`` unless 1..64 bytes."""
    if not 0 < len(report_data) <= INBLOB_SIZE:
        raise ValueError(f"report data must be 1..{INBLOB_SIZE} bytes, not {len(report_data)}")
    return bytes(report_data) + bytes(INBLOB_SIZE - len(report_data))


class Tsm:
    """configfs-tsm under ``root`` (default ``/sys/kernel/config/tsm``)."""

    def __init__(self, root: Path = DEFAULT_TSM_ROOT, *, fs: ConfigFs | None = None) -> None:
        self.root = Path(root)
        self._fs: ConfigFs = fs if fs is not None else OsConfigFs()

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    def available(self) -> bool:
        return self.report_dir.is_dir()

    def provider(self) -> str:
        """The provider's name, read from a throw-away item (the only way to learn it)."""
        item = self._create()
        try:
            return self._provider(item)
        finally:
            self._remove(item)

    def report(
        self,
        report_data: bytes,
        *,
        provider: TsmProvider,
        privlevel: int | None = None,
        auxblob: bool = False,
    ) -> TsmReport:
        """One report for ``report_data`` (padded to 64 bytes) from ``provider``.

        ``privlevel`` is written first when given (SEV-SNP's VMPL; the kernel's default is 0).
        ``auxblob`` also reads the provider's auxiliary blob (SEV-SNP's certificate table),
        ``None`` when the item has none or it is empty.
        """
        inblob = pad_report_data(report_data)
        if privlevel is not None and not 0 <= privlevel <= 3:  # TSM_PRIVLEVEL_MAX
            raise ValueError(f"privlevel must be 0..3, not {privlevel}")
        item = self._create()
        try:
            found = self._provider(item)
            if found != provider:
                raise TsmProviderMismatch(
                    f"configfs-tsm provider is {found!r}, the attester needs {provider.value!r}"
                )
            start = self._generation(item)
            writes = 0
            if privlevel is not None:
                self._write(item / "privlevel", str(privlevel).encode("ascii"))
                writes += 1
            self._write(item / "inblob", inblob)
            writes += 1
            outblob = self._read(item / "outblob")
            aux = self._auxblob(item) if auxblob else None
            generation = self._generation(item)
            if generation != start + writes:
                raise TsmWriteRace(
                    f"configfs-tsm generation is {generation}, expected {start + writes}: "
                    "another writer used the report item"
                )
        finally:
            self._remove(item)
        if not outblob:
            raise TsmOutputInvalid("configfs-tsm returned an empty outblob")
        return TsmReport(str(found), inblob, outblob, aux, generation)

    # --- steps ------------------------------------------------------------------------------

    def _create(self) -> Path:
        if not self.available():
            raise TsmUnavailable(f"no configfs-tsm report directory at {self.report_dir}")
        item = self.report_dir / f"custodes-{secrets.token_hex(8)}"
        try:
            self._fs.mkdir(item)
        except OSError as e:
            raise TsmError(f"cannot create the configfs-tsm item {item}: {e}") from e
        return item

    def _remove(self, item: Path) -> None:
        try:
            self._fs.rmdir(item)
        except OSError as e:
            # A leaked item holds no secret; the report (or the error in flight) matters more.
            logger.warning("cannot remove the configfs-tsm item %s: %s", item, e)

    def _read(self, path: Path) -> bytes:
        try:
            return self._fs.read(path)
        except OSError as e:
            raise TsmError(f"cannot read configfs-tsm {path.name}: {e}") from e

    def _write(self, path: Path, data: bytes) -> None:
        try:
            self._fs.write(path, data)
        except OSError as e:
            raise TsmError(f"cannot write configfs-tsm {path.name}: {e}") from e

    def _provider(self, item: Path) -> str:
        raw = self._read(item / "provider")
        try:
            return raw.decode("ascii").removesuffix("\n")
        except UnicodeDecodeError:
            raise TsmError("configfs-tsm provider is not ASCII") from None

    def _generation(self, item: Path) -> int:
        raw = self._read(item / "generation")
        text = raw.decode("ascii", errors="replace").removesuffix("\n")
        if len(text) > _MAX_GENERATION_TEXT or not text.isdigit() or not text.isascii():
            raise TsmError(
                f"configfs-tsm generation {text[:_MAX_GENERATION_TEXT]!r} is not a number"
            )
        return int(text)

    def _auxblob(self, item: Path) -> bytes | None:
        path = item / "auxblob"
        try:
            data = self._fs.read(path)
        except FileNotFoundError:
            return None  # this provider has no auxiliary blob
        except OSError as e:
            raise TsmError(f"cannot read configfs-tsm auxblob: {e}") from e
        return data or None
