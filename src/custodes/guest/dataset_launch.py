"""``custodes run --dataset``: decrypt encrypted datasets into memory before the workload starts.

A dataset is given as ``KEY=ENCRYPTED_PATH:PLAIN_PATH`` where ``KEY`` names the data key:

* ``kbs://[host]/repo/type/tag`` — the broker resource holding the key;
* ``sealed.…`` — a signed ``vault`` sealed secret pointing at that resource, as a Kubernetes
  Secret would carry it (its signature is verified like any sealed secret's).

``ENCRYPTED_PATH`` is a dataset file (or a directory of ``.cdx`` files, see
:mod:`custodes.datasets.files`) and ``PLAIN_PATH`` where its plaintext goes. The split is at
the first ``=`` (a ``kbs://`` URI with a ``?query`` is refused, it would be ambiguous) and at
the last ``:`` (so ``PLAIN_PATH`` cannot contain ``:``).

Checks, in order, each with its own error, all before the broker is asked for anything:

1. the spec parses and ``KEY`` is a resource URI or a ``vault`` sealed secret;
2. every encrypted file's header names that key: a key id mismatch is refused before any
   key is fetched (it would only fail later, after the key left the broker);
3. ``PLAIN_PATH`` is on a memory-backed filesystem (``tmpfs``/``ramfs``), found from the
   device of its nearest existing directory in ``/proc/self/mountinfo``. Plaintext is never
   written to persistent storage unless the caller explicitly allows it (loudly logged).

Then the key is fetched through the data hub (the start's one attestation) and the files are
decrypted with :func:`custodes.datasets.files.decrypt_path`: written as ``.partial`` next to
the target and renamed when complete, so a failure leaves no plaintext under the final name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from custodes.datasets.errors import KeyIdMismatch
from custodes.datasets.files import decrypt_path, decrypt_plan
from custodes.datasets.format import read_header
from custodes.datasets.keys import check_key
from custodes.errors import ConfigError, CustodesError, InvalidResourcePath
from custodes.protocol.resource import ResourceUri
from custodes.sealed.format import PREFIX as SEALED_PREFIX
from custodes.sealed.format import SealedSecret
from custodes.sealed.payload import VaultPayload, parse_payload
from custodes.types.secret import Secret

logger = logging.getLogger(__name__)

MEMORY_FILESYSTEMS: Final = frozenset({"tmpfs", "ramfs"})
MOUNTINFO: Final = Path("/proc/self/mountinfo")
_OCTAL_ESCAPE: Final = re.compile(r"\\([0-7]{3})")


class DatasetSpecError(ConfigError):
    """A ``--dataset`` value (or ``[[datasets]]`` table) that does not parse."""

    code = "dataset-spec"


class NotMemoryBacked(ConfigError):
    """The plaintext would land on persistent storage."""

    code = "dataset-not-memory-backed"


class DatasetLaunchError(CustodesError):
    """A dataset could not be prepared for the workload; the start stops."""

    code = "dataset-launch"


class KeySource(Protocol):
    """What the launcher needs of the data hub (:class:`custodes.guest.cdh.ConfidentialDataHub`)."""

    def get_resource(self, uri: str | ResourceUri) -> Secret[bytes]: ...

    def unseal(self, sealed: str) -> Secret[bytes]: ...


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """One dataset: the key (``kbs://`` URI or ``sealed.…``), the encrypted source, the
    plaintext target."""

    key: str
    encrypted: Path
    plaintext: Path

    @classmethod
    def parse(cls, text: str) -> DatasetSpec:
        """``KEY=ENCRYPTED_PATH:PLAIN_PATH``."""
        key, eq, paths = text.partition("=")
        encrypted, colon, plaintext = paths.rpartition(":")
        if not eq or not colon or not key or not encrypted or not plaintext:
            raise DatasetSpecError(
                f"a dataset is KEY=ENCRYPTED_PATH:PLAIN_PATH, got {text!r} "
                "(KEY: kbs:///repo/type/tag or sealed.…)"
            )
        return cls.of(key, Path(encrypted), Path(plaintext))

    @classmethod
    def of(cls, key: str, encrypted: Path, plaintext: Path) -> DatasetSpec:
        spec = cls(key, encrypted, plaintext)
        spec.key_id()  # validate now: a bad spec is a usage error, not a failed start
        return spec

    @property
    def sealed(self) -> bool:
        return self.key.startswith(SEALED_PREFIX)

    def key_id(self) -> str:
        """The resource URI of the data key, which every encrypted file's header must name.

        For a sealed key this reads the payload before the signature is verified; the
        signature is checked when the key is unsealed, from this same text, before use.
        """
        if self.sealed:
            try:
                payload = parse_payload(SealedSecret.parse(self.key).payload)
            except CustodesError as e:
                raise DatasetSpecError(f"the dataset key is not a valid sealed secret: {e}") from e
            if not isinstance(payload, VaultPayload):
                raise DatasetSpecError(
                    "a sealed dataset key must be a vault secret naming the key resource"
                )
            uri = payload.name
        else:
            uri = self.key
        if "?" in uri:
            raise DatasetSpecError(f"a dataset key URI takes no query: {uri!r}")
        try:
            ResourceUri.parse(uri)
        except InvalidResourcePath as e:
            raise DatasetSpecError(f"the dataset key is not a kbs:// resource URI: {e}") from e
        return uri


# --- where the plaintext goes -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mount:
    """One line of ``/proc/self/mountinfo`` (the fields this module uses)."""

    device: tuple[int, int]
    mount_point: str
    fs_type: str


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in paths as \ooo octal escapes.
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m[1], 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of a ``mountinfo`` text (proc(5)), in order; malformed lines raise."""
    mounts = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split(" ")
        try:
            separator = fields.index("-", 6)
            major, minor = fields[2].split(":")
            mounts.append(
                Mount(
                    device=(int(major), int(minor)),
                    mount_point=_unescape(fields[4]),
                    fs_type=fields[separator + 1],
                )
            )
        except (ValueError, IndexError) as e:
            raise NotMemoryBacked(f"mountinfo line {number} is malformed: {line!r}") from e
    return mounts


def existing_ancestor(path: Path) -> Path:
    """The nearest directory at or above ``path`` that exists (resolved): where new
    directories on the way to ``path`` would be created."""
    current = path.absolute()
    while not current.is_dir():
        if current.parent == current:
            break
        current = current.parent
    return current.resolve()


def filesystem_of(path: Path, mounts: Iterable[Mount]) -> Mount:
    """The mount holding directory ``path``: by device number, else (file systems whose
    ``st_dev`` differs from mountinfo's, e.g. btrfs subvolumes) the longest mount point
    that contains it. A later mount over the same point wins."""
    all_mounts = list(mounts)
    st = path.stat()
    device = (os.major(st.st_dev), os.minor(st.st_dev))
    by_device = [m for m in all_mounts if m.device == device]
    if by_device:
        return by_device[-1]
    text = str(path)
    best: Mount | None = None
    for m in all_mounts:
        point = m.mount_point.rstrip("/") or "/"
        inside = text == point or text.startswith(point if point == "/" else point + "/")
        if inside and (best is None or len(point) >= len(best.mount_point.rstrip("/") or "/")):
            best = m
    if best is None:
        raise NotMemoryBacked(f"no mount found for {path}")
    return best


def check_memory_backed(
    target: Path,
    *,
    allow_persistent: bool = False,
    mountinfo: Path = MOUNTINFO,
    override_flag: str = "--dataset-allow-persistent",
) -> str:
    """Refuse ``target`` unless it is on tmpfs/ramfs; returns the filesystem type.

    ``allow_persistent`` lets anything through, with a warning naming the filesystem.
    ``override_flag`` is the option the messages name (it differs between commands).
    """
    where = existing_ancestor(target)
    try:
        mount = filesystem_of(where, parse_mountinfo(mountinfo.read_text(encoding="utf-8")))
        fs_type = mount.fs_type
    except (OSError, UnicodeDecodeError, NotMemoryBacked) as e:
        if not allow_persistent:
            raise NotMemoryBacked(
                f"cannot tell which filesystem holds {target} ({e}); refusing to write "
                "plaintext where it might persist"
            ) from e
        fs_type = "unknown"
    if fs_type in MEMORY_FILESYSTEMS:
        return fs_type
    if not allow_persistent:
        raise NotMemoryBacked(
            f"{target} is on a {fs_type} filesystem ({where}), not in memory: decrypted data "
            "goes only to tmpfs or ramfs (e.g. under /dev/shm or an emptyDir with "
            f"medium: Memory); {override_flag} overrides this, INSECURELY"
        )
    logger.warning(
        "INSECURE: writing the plaintext of a dataset to %s on a %s filesystem, which may "
        "persist it (%s)",
        target,
        fs_type,
        override_flag,
    )
    return fs_type


# --- the launch ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlannedDataset:
    spec: DatasetSpec
    key_id: str
    fs_type: str


def plan(spec: DatasetSpec, *, allow_persistent: bool = False) -> PlannedDataset:
    """Steps 1-3 of the module docstring: everything that needs no broker."""
    key_id = spec.key_id()
    try:
        jobs = decrypt_plan(spec.encrypted, spec.plaintext)
        if not jobs:
            raise DatasetLaunchError(f"{spec.encrypted} holds no encrypted dataset file")
        for job in jobs:
            with job.source.open("rb") as f:
                header = read_header(f)
            if header.key_id != key_id:
                raise KeyIdMismatch(
                    f"{job.source} was encrypted under {header.key_id!r}, not the key "
                    f"{key_id!r} it is given"
                )
    except OSError as e:
        raise DatasetLaunchError(f"cannot read {e.filename or spec.encrypted}: {e.strerror}") from e
    fs_type = check_memory_backed(spec.plaintext, allow_persistent=allow_persistent)
    return PlannedDataset(spec, key_id, fs_type)


def fetch_key(hub: KeySource, planned: PlannedDataset) -> Secret[bytes]:
    """The data key, through the data hub (the start's attestation, no second handshake)."""
    spec = planned.spec
    raw = hub.unseal(spec.key) if spec.sealed else hub.get_resource(planned.key_id)
    return check_key(raw, what=f"the resource {planned.key_id}")


def decrypt(planned: PlannedDataset, key: Secret[bytes]) -> list[Path]:
    """Decrypt one planned dataset; on failure nothing is left under a final name."""
    spec = planned.spec
    return decrypt_path(
        spec.encrypted,
        spec.plaintext,
        key,
        expected_key_id=planned.key_id,
        overwrite=True,  # a restarted container finds its earlier copy: replace it whole
        create_parents=True,  # directories inside the memory-backed mount checked by plan()
    )


def remove_plaintext(paths: Iterable[Path]) -> None:
    """Best-effort removal of decrypted files (a later dataset of the same start failed)."""
    for path in paths:
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
