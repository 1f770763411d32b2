"""Encrypting and decrypting a file or a directory tree, safe on interruption.

A directory is encrypted file by file: each regular file ``src/<rel>`` becomes
``dst/<rel>.cdx``, and decrypting maps it back. Symbolic links and special files in the
source are refused before anything is written (a link could point the work anywhere).

Every output is written with :func:`custodes._internal.atomic.atomic_output`: to
``<name>.partial`` (mode 0600, created exclusively), flushed, fsynced and only then renamed
to ``<name>``. The directory that receives the output must exist (a tree's own directories
below it are created) unless the caller passes ``create_parents``. On any failure — a chunk
that does not authenticate halfway, ``KeyboardInterrupt``, a full disk — the partial file is
deleted, the outputs this call already completed are deleted too, and so are the directories
it created: nothing is left under a final name. A reader must therefore never consume a
``.partial`` file, nor plaintext from a decryption that raised: that plaintext was not all
authenticated and is deleted, never renamed. A process killed outright (SIGKILL, power
loss) cannot clean up; it leaves at most a ``.partial`` file, which the next run for the same
output deletes.
Resuming an interrupted run is not supported: run it again.

What a directory does NOT authenticate: file names, and which files are present. Each file
is authenticated on its own, so renaming, deleting or adding ``.cdx`` files (made under the
same key) is not detected. Encrypt one archive (e.g. a tar file) when the set matters.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from custodes._internal.atomic import PARTIAL_SUFFIX as PARTIAL_SUFFIX
from custodes._internal.atomic import OutputError, atomic_output
from custodes.datasets.errors import DatasetPathError
from custodes.datasets.format import DEFAULT_CHUNK_SIZE, Progress, decrypt_stream, encrypt_stream
from custodes.types.secret import Secret

logger = logging.getLogger(__name__)

SUFFIX: Final = ".cdx"
_DIR_MODE: Final = 0o700

_Work = Callable[[BinaryIO, BinaryIO], None]


@dataclass(frozen=True, slots=True)
class Job:
    """One file to process: where it is read from and where its output goes."""

    source: Path
    target: Path


def _lstat(path: Path) -> os.stat_result:
    try:
        return path.lstat()
    except FileNotFoundError as e:
        raise DatasetPathError(f"{path} does not exist") from e
    except OSError as e:
        raise DatasetPathError(f"{path}: {e.strerror}") from e


def _refuse_special(path: Path, mode: int) -> None:
    if stat.S_ISLNK(mode):
        raise DatasetPathError(f"{path} is a symbolic link; links are refused")
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise DatasetPathError(f"{path} is not a regular file or directory")


def _tree(root: Path) -> list[Path]:
    """Every regular file under ``root`` (sorted), refusing links and special files."""
    found: list[Path] = []

    def fail(e: OSError) -> None:
        raise DatasetPathError(f"cannot list {e.filename}: {e.strerror}") from e

    for top, dirs, names in os.walk(root, onerror=fail, followlinks=False):
        base = Path(top)
        for name in (*dirs, *names):
            mode = _lstat(base / name).st_mode
            _refuse_special(base / name, mode)
            if stat.S_ISREG(mode):
                found.append(base / name)
    return sorted(found)


def _check_disjoint(src: Path, dst: Path, *, tree: bool) -> None:
    s, d = src.resolve(), dst.resolve()
    if s == d or (tree and (s in d.parents or d in s.parents)):
        raise DatasetPathError(f"{dst} and {src} overlap; write the output elsewhere")


def encrypt_plan(src: Path, dst: Path) -> list[Job]:
    """What :func:`encrypt_path` would write: ``src`` -> ``dst`` for a file, each
    ``src/<rel>`` -> ``dst/<rel>.cdx`` for a directory."""
    mode = _lstat(src).st_mode
    _refuse_special(src, mode)
    _check_disjoint(src, dst, tree=stat.S_ISDIR(mode))
    if stat.S_ISREG(mode):
        return [Job(src, dst)]
    return [Job(f, dst / f.relative_to(src).with_name(f.name + SUFFIX)) for f in _tree(src)]


def dataset_files(root: Path) -> list[Path]:
    """The ``.cdx`` files of a tree (sorted); other files are skipped with a warning."""
    found = []
    for f in _tree(root):
        if not f.name.endswith(SUFFIX):
            logger.warning("skipping %s: not a %s file", f, SUFFIX)
            continue
        if f.name == SUFFIX:
            raise DatasetPathError(f"{f}: a dataset file needs a name before {SUFFIX}")
        found.append(f)
    return found


def decrypt_plan(src: Path, dst: Path) -> list[Job]:
    """What :func:`decrypt_path` would write: ``src`` -> ``dst`` for a file, each
    ``src/<rel>.cdx`` -> ``dst/<rel>`` for a directory (other files are skipped)."""
    mode = _lstat(src).st_mode
    _refuse_special(src, mode)
    _check_disjoint(src, dst, tree=stat.S_ISDIR(mode))
    if stat.S_ISREG(mode):
        return [Job(src, dst)]
    return [
        Job(f, dst / f.relative_to(src).with_name(f.name[: -len(SUFFIX)]))
        for f in dataset_files(src)
    ]


class _Outputs:
    """Outputs and directories made by one call, so that a failure can remove them all."""

    def __init__(self) -> None:
        self.files: list[Path] = []
        self.dirs: list[Path] = []

    def make_parents(self, target: Path) -> None:
        missing = []
        parent = target.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for d in reversed(missing):
            d.mkdir(mode=_DIR_MODE)
            self.dirs.append(d)

    def roll_back(self) -> None:
        for f in reversed(self.files):
            with contextlib.suppress(OSError):
                f.unlink()
        for d in reversed(self.dirs):
            with contextlib.suppress(OSError):
                d.rmdir()


def _open_source(path: Path) -> BinaryIO:
    # O_NOFOLLOW: the plan refused links; a link swapped in since then is refused too.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    return os.fdopen(os.open(path, flags), "rb")


def _check_targets(jobs: list[Job], overwrite: bool) -> None:
    for job in jobs:
        if os.path.lexists(job.target):
            if not overwrite:
                raise DatasetPathError(f"{job.target} exists; refusing to overwrite it")
            if not job.target.is_file() or job.target.is_symlink():
                raise DatasetPathError(f"{job.target} exists and is not a regular file")


def _check_output_root(dst: Path, create_parents: bool) -> None:
    """The directory that receives ``dst`` must exist unless ``create_parents``: a typo in an
    output path must not silently grow a new tree of plaintext."""
    if create_parents:
        return
    parent = dst.parent
    if not parent.exists():
        raise DatasetPathError(
            f"cannot write {dst}: directory {parent} does not exist (create it first)"
        )
    if not parent.is_dir():
        raise DatasetPathError(f"cannot write {dst}: {parent} is not a directory")


def _run(
    dst: Path, jobs: list[Job], overwrite: bool, work: _Work, *, create_parents: bool
) -> list[Path]:
    _check_output_root(dst, create_parents)
    _check_targets(jobs, overwrite)
    outputs = _Outputs()
    try:
        for job in jobs:
            try:
                outputs.make_parents(job.target)
                with (
                    _open_source(job.source) as src,
                    atomic_output(job.target, private=True, overwrite=overwrite) as out,
                ):
                    work(src, out)
            except OutputError as e:
                raise DatasetPathError(str(e)) from e
            except OSError as e:
                where = e.filename or job.target
                raise DatasetPathError(f"{where}: {e.strerror or e}") from e
            outputs.files.append(job.target)
    except BaseException:
        outputs.roll_back()
        raise
    return [job.target for job in jobs]


def encrypt_path(
    src: Path,
    dst: Path,
    key: Secret[bytes],
    key_id: str,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Progress | None = None,
    overwrite: bool = False,
    create_parents: bool = False,
) -> list[Path]:
    """Encrypt a file (to ``dst``) or a directory tree (to ``dst/<rel>.cdx``); returns the
    files written. ``progress`` gets plaintext byte increments across all files. The
    directory holding ``dst`` must exist unless ``create_parents``."""
    jobs = encrypt_plan(src, dst)

    def work(source: BinaryIO, target: BinaryIO) -> None:
        encrypt_stream(source, target, key, key_id, chunk_size=chunk_size, progress=progress)

    return _run(dst, jobs, overwrite, work, create_parents=create_parents)


def decrypt_path(
    src: Path,
    dst: Path,
    key: Secret[bytes],
    *,
    expected_key_id: str | None = None,
    progress: Progress | None = None,
    overwrite: bool = False,
    create_parents: bool = False,
) -> list[Path]:
    """Decrypt a dataset file (to ``dst``) or a tree of ``.cdx`` files (to ``dst/<rel>``);
    returns the files written. On any failure nothing is left under a final name. The
    directory holding ``dst`` must exist unless ``create_parents``."""
    jobs = decrypt_plan(src, dst)

    def work(source: BinaryIO, target: BinaryIO) -> None:
        decrypt_stream(source, target, key, expected_key_id=expected_key_id, progress=progress)

    return _run(dst, jobs, overwrite, work, create_parents=create_parents)
