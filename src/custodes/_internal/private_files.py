"""Modes of the broker's state: the data directory, the SQLite store and the private keys.

Under the usual umask 022 a directory made with ``mkdir`` is 0755 and a file SQLite creates is
0644: every local user could copy the store (wrapped data keys, sessions, the audit log) and
read any key that was written carelessly. So custodes

* creates the data directory 0700 (:func:`ensure_private_dir`);
* creates the store file 0600 before SQLite opens it (:func:`create_private_file`); SQLite
  gives its ``-wal`` and ``-shm`` files the database file's mode, so they are 0600 too;
* refuses to start, as ssh refuses a readable private key, when the store or a private key is
  accessible to group or others, naming the ``chmod`` that fixes it
  (:func:`check_store_file`, :func:`read_private_key_file`).

Private keys follow PostgreSQL's rule for its server key: a key owned by the user custodes
runs as must be 0600 or stricter; a key owned by root may also be group-readable (0640), which
is how Kubernetes mounts Secret files for a non-root pod (``fsGroup``, ``defaultMode: 0440``).
A broker running as root owns root's files, so for it every key must be 0600 (0400).
The mode is checked on the open file (``fstat``), so the file read is the file checked.
Directory modes of existing directories are left alone: a volume (an ``emptyDir`` is 0777)
is the operator's, and the files in it are what is checked.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

from custodes.errors import ConfigError

PRIVATE_DIR_MODE: Final = 0o700
PRIVATE_FILE_MODE: Final = 0o600
MAX_KEY_FILE_BYTES: Final = 64 * 1024

_O_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)


class FileModeError(ConfigError):
    """A state file or key is accessible to group or others, or owned by a stranger."""

    code = "file-mode"


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (with any missing parents) if absent, the directory itself 0700."""
    try:
        path.mkdir(mode=PRIVATE_DIR_MODE, parents=True)
    except FileExistsError:
        if not path.is_dir():
            raise ConfigError(f"{path} exists and is not a directory") from None
        return
    except OSError as e:
        raise ConfigError(f"cannot create directory {path}: {e.strerror}") from e
    # mkdir's mode is filtered by the umask; set it exactly.
    os.chmod(path, PRIVATE_DIR_MODE)


def create_private_file(path: Path) -> bool:
    """Create ``path`` empty with mode 0600 unless it exists; True when it was created.
    Never follows a symbolic link when creating (``O_EXCL``)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, PRIVATE_FILE_MODE)
    except FileExistsError:
        return False
    except OSError as e:
        raise ConfigError(f"cannot create {path}: {e.strerror}") from e
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)
    return True


def store_mode_problem(mode: int) -> str | None:
    """Why a store file with permission bits ``mode`` is refused, or None."""
    if mode & 0o077:
        return f"has mode {mode:04o}: group and others must have no access"
    return None


def key_mode_problem(mode: int, owner: int, euid: int) -> str | None:
    """Why a private key file with permission bits ``mode`` owned by ``owner`` is refused
    when custodes runs as ``euid``, or None (the rule is in the module docstring)."""
    if owner == euid:
        if mode & 0o077:
            return f"has mode {mode:04o}: group and others must have no access"
        return None
    if owner == 0:
        if mode & 0o037:
            return (
                f"is owned by root with mode {mode:04o}: "
                "at most the group may read it, others nothing"
            )
        return None
    return f"is owned by uid {owner}: it must be owned by uid {euid} (custodes) or by root"


def _fix(path: Path, owner: int, euid: int) -> str:
    if owner not in (euid, 0):
        return f"chown {euid} {path}; chmod 600 {path}"
    return f"chmod {'600' if owner == euid else '640'} {path}"


def check_store_file(path: Path) -> None:
    """Refuse a store file (the database, its ``-wal``/``-shm``) that group or others may
    access; a missing file passes."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return
    except OSError as e:
        raise ConfigError(f"cannot inspect {path}: {e.strerror}") from e
    problem = store_mode_problem(stat.S_IMODE(st.st_mode))
    if problem is not None:
        raise FileModeError(
            f"store file {path} {problem}; refusing to start (fix: chmod 600 {path})"
        )


def read_private_key_file(path: Path, what: str) -> bytes:
    """The bytes of the private key file ``path``, after checking its owner and mode on the
    open file. ``ConfigError`` (naming the fix) if it cannot be read or is too exposed."""
    try:
        fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{what} {path} is not a regular file")
        euid = os.geteuid()
        problem = key_mode_problem(stat.S_IMODE(st.st_mode), st.st_uid, euid)
        if problem is not None:
            raise FileModeError(
                f"{what} {path} {problem}; refusing to use it (fix: {_fix(path, st.st_uid, euid)})"
            )
        if st.st_size > MAX_KEY_FILE_BYTES:
            raise ConfigError(f"{what} {path} is larger than {MAX_KEY_FILE_BYTES} bytes")
        chunks = []
        while chunk := os.read(fd, MAX_KEY_FILE_BYTES + 1):
            chunks.append(chunk)
            if sum(map(len, chunks)) > MAX_KEY_FILE_BYTES:
                raise ConfigError(f"{what} {path} is larger than {MAX_KEY_FILE_BYTES} bytes")
        return b"".join(chunks)
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from e
    finally:
        os.close(fd)
