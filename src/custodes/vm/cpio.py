"""A writer for the ``newc`` cpio format, the one the Linux kernel unpacks as an initramfs.

Each member is a 110-byte ASCII header (magic ``070701`` and 13 eight-digit hex fields), the
NUL-terminated name padded to 4 bytes, and the data padded to 4 bytes; the archive ends with
the member ``TRAILER!!!``. Only what an initramfs needs: directories, regular files and
symbolic links, owned by root, with a fixed modification time so that the same inputs give
the same bytes (and so the same measured initrd digest).
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field

_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"


def _pad4(n: int) -> bytes:
    return b"\x00" * (-n % 4)


@dataclass
class CpioWriter:
    """Collects members in order; :meth:`finish` returns the archive."""

    _parts: list[bytes] = field(default_factory=list)
    _inode: int = 1

    def _member(self, name: str, mode: int, data: bytes) -> None:
        encoded = name.encode() + b"\x00"
        fields = (
            self._inode,  # ino
            mode,
            0,  # uid
            0,  # gid
            2 if stat.S_ISDIR(mode) else 1,  # nlink
            0,  # mtime: fixed, for reproducible archives
            len(data),
            0,  # devmajor
            0,  # devminor
            0,  # rdevmajor
            0,  # rdevminor
            len(encoded),
            0,  # check (unused by newc)
        )
        self._inode += 1
        header = _MAGIC + b"".join(f"{value:08X}".encode() for value in fields)
        self._parts += [header, encoded, _pad4(len(header) + len(encoded)), data, _pad4(len(data))]

    def directory(self, name: str, mode: int = 0o755) -> None:
        self._member(name, stat.S_IFDIR | mode, b"")

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._member(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._member(name, stat.S_IFLNK | 0o777, target.encode())

    def finish(self) -> bytes:
        self._inode = 0
        self._member(_TRAILER, 0, b"")
        return b"".join(self._parts)
