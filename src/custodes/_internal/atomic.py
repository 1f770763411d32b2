"""The one way custodes writes an output file: complete or not at all.

``atomic_output(target)`` yields a binary file that is really ``<target>.partial`` in the
target's own directory (so the final rename never crosses a file system), created
exclusively, never through a symbolic link, mode 0600 for secrets (``private=True``, the
default) or 0666 minus the umask. On success it is flushed, fsynced, renamed over ``target``
and the directory is fsynced. On any exception (including ``KeyboardInterrupt``) the partial
file is deleted and nothing appears under ``target``: a reader never sees half an output, and
no plaintext copy is left beside it.

What is refused, each before anything is created, with a message naming the fix:

* a target whose directory does not exist: it is never created silently (a typo in a path
  would otherwise scatter secrets into a new tree);
* a target that is a directory (``--output DIR``);
* an existing target when ``overwrite=False`` (then the final step is ``link(2)``, which
  fails instead of replacing a file that appeared meanwhile).

A process killed outright (SIGKILL, power loss) cannot clean up: it may leave the
``.partial`` file, which the next write of the same target deletes first. Two processes
writing the same target at once are not supported.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Final

from custodes.errors import ConfigError

PARTIAL_SUFFIX: Final = ".partial"
PRIVATE_MODE: Final = 0o600
PUBLIC_MODE: Final = 0o666  # minus the umask, as any new file

_O_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY: Final = getattr(os, "O_DIRECTORY", 0)


class OutputError(ConfigError):
    """An output file could not be written; nothing was left under its name."""

    code = "output"


def _display(path: Path) -> str:
    return str(path) or "."


def check_target(target: Path, *, overwrite: bool = True) -> None:
    """Refuse a target that cannot be written (missing directory, a directory, an existing
    file without ``overwrite``) before any work is done."""
    parent = target.parent
    try:
        parent_mode = parent.stat().st_mode
    except FileNotFoundError:
        raise OutputError(
            f"cannot write {target}: directory {_display(parent)} does not exist (create it first)"
        ) from None
    except NotADirectoryError:
        raise OutputError(f"cannot write {target}: {_display(parent)} is not a directory") from None
    except OSError as e:
        raise OutputError(f"cannot write {target}: {_display(parent)}: {e.strerror}") from e
    if not stat.S_ISDIR(parent_mode):
        raise OutputError(f"cannot write {target}: {_display(parent)} is not a directory")
    try:
        mode = target.lstat().st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise OutputError(f"cannot write {target}: {e.strerror}") from e
    if stat.S_ISDIR(mode):
        raise OutputError(f"cannot write {target}: it is a directory; name a file inside it")
    if not overwrite:
        raise OutputError(f"{target} exists; refusing to overwrite it")
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise OutputError(f"cannot write {target}: it exists and is not a regular file")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _os_failure(target: Path, e: OSError) -> OutputError:
    if e.errno == errno.ENOSPC:
        why = "no space left on the device"
    elif e.errno in (errno.EACCES, errno.EPERM):
        why = f"permission denied in {_display(target.parent)}"
    elif e.errno == errno.EROFS:
        why = "the file system is read-only"
    else:
        why = e.strerror or str(e)
    return OutputError(f"cannot write {target}: {why}")


@contextlib.contextmanager
def atomic_output(
    target: Path, *, private: bool = True, overwrite: bool = True
) -> Iterator[BinaryIO]:
    """A file that appears under ``target`` only complete (see the module docstring).

    ``OSError`` from the file system becomes :class:`OutputError`; errors raised by the
    caller's block propagate unchanged, after the cleanup.
    """
    check_target(target, overwrite=overwrite)
    partial = target.with_name(target.name + PARTIAL_SUFFIX)
    mode = PRIVATE_MODE if private else PUBLIC_MODE
    try:
        # A leftover of a killed run: ours by name, and its content is not to be trusted.
        partial.unlink(missing_ok=True)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC, mode)
    except OSError as e:
        raise _os_failure(target, e) from e
    f = os.fdopen(fd, "wb")
    placed = False
    try:
        try:
            yield f
        except OSError as e:
            if e.filename is None or Path(e.filename) == partial:
                raise _os_failure(target, e) from e
            raise
        try:
            f.flush()
            os.fsync(f.fileno())
            f.close()
            if overwrite:
                os.replace(partial, target)
            else:
                os.link(partial, target, follow_symlinks=False)
                placed = True
                partial.unlink()
            placed = True
            _fsync_dir(target.parent)
        except FileExistsError as e:
            raise OutputError(f"{target} exists; refusing to overwrite it") from e
        except IsADirectoryError as e:
            raise OutputError(
                f"cannot write {target}: it is a directory; name a file inside it"
            ) from e
        except OSError as e:
            raise _os_failure(target, e) from e
    except BaseException:
        with contextlib.suppress(OSError):
            f.close()
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        if placed:  # the directory could not be synced: the rename may not be durable
            with contextlib.suppress(OSError):
                target.unlink(missing_ok=True)
        raise


def write_atomic(
    target: Path, data: bytes, *, private: bool = True, overwrite: bool = True
) -> None:
    """Write ``data`` to ``target`` with :func:`atomic_output`."""
    with atomic_output(target, private=private, overwrite=overwrite) as f:
        f.write(data)
