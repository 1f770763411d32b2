"""A fake configfs-tsm: an ordinary directory tree plus the kernel's side effects.

There is no SEV-SNP or TDX hardware here, so no real ``/sys/kernel/config/tsm``. The attesters
do their file operations through ``custodes.guest.attester.tsm.ConfigFs``; this fake is the
real :class:`OsConfigFs` (every mkdir, read, write and rmdir really happens in a temp
directory) with, after each operation, what the kernel's configfs-tsm does (drivers/virt/coco/
tsm.c):

* ``mkdir report/<name>`` populates ``provider`` (``"<name>\\n"``) and ``generation``
  (``"0\\n"``);
* every write to ``inblob`` or ``privlevel`` increments ``generation``; an ``inblob`` over
  64 bytes is refused (``EFBIG``), a ``privlevel`` is parsed as a decimal number;
* after ``inblob`` is written, ``outblob`` (and ``auxblob`` for providers that have one)
  hold the provider's answer; here that answer is a **recorded real report or quote** from the
  vectors, which was not made for the written report data;
* ``rmdir`` removes the item with its attributes, as configfs does.

Knobs for negative tests: ``racer`` (another writer writes ``inblob`` right after ours),
``provider`` (any name; ``None``: no TSM driver registered, so ``mkdir`` fails with ``ENXIO``
as in the kernel). ``inblobs`` and ``privlevels`` record what the attester wrote.

Use it from any test under ``tests/`` as ``from fake_tsm import FakeTsm`` (see swtpm.py for why
the plain import works).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from custodes.guest.attester.tsm import OsConfigFs, Tsm

_WRITABLE = ("inblob", "privlevel")
_INBLOB_MAX = 64


class FakeTsm(OsConfigFs):
    """configfs-tsm at ``root`` answering every report with ``outblob`` (and ``auxblob``)."""

    def __init__(
        self,
        root: Path,
        *,
        provider: str | None,
        outblob: bytes = b"",
        auxblob: bytes | None = None,
        racer: bool = False,
    ) -> None:
        self.root = root
        self.provider = provider
        self.outblob = outblob
        self.auxblob = auxblob
        self.racer = racer
        self.inblobs: list[bytes] = []
        self.privlevels: list[int] = []
        self.created: list[Path] = []
        (root / "report").mkdir(parents=True, exist_ok=True)

    def tsm(self) -> Tsm:
        """A :class:`Tsm` that talks to this fake."""
        return Tsm(self.root, fs=self)

    def items(self) -> list[Path]:
        """The report items that exist now (the attester must leave none behind)."""
        return sorted((self.root / "report").iterdir())

    # --- the kernel's side of each operation --------------------------------------------------

    def mkdir(self, path: Path) -> None:
        if self.provider is None:
            raise OSError(errno.ENXIO, "no TSM provider registered", str(path))
        super().mkdir(path)
        self.created.append(path)
        (path / "provider").write_text(f"{self.provider}\n")
        (path / "generation").write_text("0\n")

    def write(self, path: Path, data: bytes) -> None:
        if path.name not in _WRITABLE:
            raise PermissionError(errno.EACCES, "read-only attribute", str(path))
        if path.name == "inblob" and len(data) > _INBLOB_MAX:
            raise OSError(errno.EFBIG, "inblob larger than TSM_INBLOB_MAX", str(path))
        if path.name == "privlevel":
            self.privlevels.append(int(data.decode("ascii")))  # kstrtouint
        super().write(path, data)
        self._advance(path.parent)
        if path.name == "inblob":
            self.inblobs.append(data)
            (path.parent / "outblob").write_bytes(self.outblob)
            if self.auxblob is not None:
                (path.parent / "auxblob").write_bytes(self.auxblob)
            if self.racer:
                # Another process writes its own inblob into the same item before we read.
                self._advance(path.parent)

    def rmdir(self, path: Path) -> None:
        for attribute in path.iterdir():
            attribute.unlink()
        super().rmdir(path)

    @staticmethod
    def _advance(item: Path) -> None:
        generation = int((item / "generation").read_text())
        (item / "generation").write_text(f"{generation + 1}\n")


def make_dir(path: Path) -> Path:
    """Create ``path`` (a fake device node or sysfs directory) and return it."""
    os.makedirs(path, exist_ok=True)
    return path
