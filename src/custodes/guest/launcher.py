"""``custodes run``: prepare the workload's secrets inside the TEE, then exec it unchanged.

Steps, in order:
1. choose the attester; with init-data, bind it where the guest can (TPM: extend PCR 8) and
   send it with every attestation;
2. fetch the ``[[credentials]]`` files;
3. unseal every environment value that starts with ``sealed.``;
4. unseal every file under the configured secret mounts whose content starts with ``sealed.``:
   the plaintext goes next to the target as ``<target>.unsealed`` and the entry's symlink is
   swapped to it (the kubelet ``..data`` layout, as upstream's agent does); a plain file is
   replaced atomically;
5. decrypt each ``--dataset`` / ``[[datasets]]`` into a memory-backed path
   (:mod:`custodes.guest.dataset_launch`; checked before the broker is asked for anything,
   and a failure always stops the start).
One attestation per broker serves the whole start. Unlike upstream, a secret that cannot be
unsealed stops the start with an error naming it (``unseal_failure = "warn"`` keeps upstream's
behaviour: log and leave the sealed value).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from custodes.errors import ConfigError, CustodesError
from custodes.guest.agent import AttestationAgent
from custodes.guest.attester.select import select_attester
from custodes.guest.cdh import ConfidentialDataHub, write_private
from custodes.guest.config import GuestConfig
from custodes.guest.dataset_launch import (
    DatasetLaunchError,
    DatasetSpec,
    PlannedDataset,
    decrypt,
    fetch_key,
    plan,
    remove_plaintext,
)
from custodes.initdata.format import InitData
from custodes.types.secret import Secret

logger = logging.getLogger(__name__)

SEALED_PREFIX = "sealed."
MAX_SEALED_FILE = 1024 * 1024
# Kubelet-managed files that are never secrets (upstream skips the same names).
_SKIPPED = ("resolv.conf", "termination-log", "hostname", "hosts", "serviceaccount")


class UnsealFailed(CustodesError):
    code = "unseal-failed"


@dataclass
class Prepared:
    env: dict[str, str]
    unsealed_env: list[str] = field(default_factory=list)
    unsealed_files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    handshakes: int = 0
    datasets: list[Path] = field(default_factory=list)


def _bind_init_data(attester: object, init_data: InitData) -> None:
    bind = getattr(attester, "bind_init_data", None)
    if bind is None:
        # SNP HOST_DATA / TDX MRCONFIGID are set by the host at launch; the broker checks them.
        return
    if len(init_data.digest) != 32:
        raise ConfigError(
            'a TPM binds init-data in PCR 8 with a SHA-256 digest: set algorithm = "sha256"'
        )
    bind(init_data.digest)


def _failed(prepared: Prepared, config: GuestConfig, what: str, error: Exception) -> None:
    message = f"cannot unseal {what}: {error}"
    if config.unseal_failure == "warn":
        logger.warning("%s (left sealed: unseal_failure = warn)", message)
        prepared.warnings.append(message)
        return
    raise UnsealFailed(message) from error


def _unseal_text(hub: ConfidentialDataHub, sealed: str) -> str:
    plain = hub.unseal(sealed.strip()).reveal()
    try:
        return plain.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UnsealFailed("the plaintext is not UTF-8 text") from e


def _mount_entries(mount: Path) -> list[Path]:
    if not mount.is_dir():
        raise ConfigError(f"secret mount {mount} is not a directory")
    entries = []
    for entry in sorted(mount.iterdir()):
        if entry.name.startswith(".") or entry.name in _SKIPPED:
            continue  # kubelet's ..data / ..2024_… bookkeeping, and non-secrets
        if entry.is_file():
            entries.append(entry)
    return entries


def _unseal_file(hub: ConfidentialDataHub, entry: Path) -> Path | None:
    target = entry.resolve()
    with open(target, "rb") as f:
        head = f.read(MAX_SEALED_FILE + 1)
    if not head.startswith(SEALED_PREFIX.encode()):
        return None
    if len(head) > MAX_SEALED_FILE:
        raise UnsealFailed(f"{entry}: a sealed secret file over {MAX_SEALED_FILE} bytes")
    plain = hub.unseal(head.decode("ascii", errors="strict").strip()).reveal()
    if entry.is_symlink():
        unsealed = target.with_name(target.name + ".unsealed")
        write_private(unsealed, plain)
        link = os.path.relpath(unsealed, entry.parent)
        tmp_link = entry.with_name(f".{entry.name}.custodes-link")
        tmp_link.unlink(missing_ok=True)
        os.symlink(link, tmp_link)
        os.replace(tmp_link, entry)  # atomic swap of the kubelet symlink
    else:
        write_private(entry, plain)
    return entry


def _decrypt_datasets(
    hub: ConfidentialDataHub, planned: Sequence[PlannedDataset], prepared: Prepared
) -> None:
    keys: dict[str, Secret[bytes]] = {}  # one fetch per key, however many datasets use it
    try:
        for item in planned:
            spec = item.spec
            key = keys.get(spec.key)
            if key is None:
                try:
                    key = keys[spec.key] = fetch_key(hub, item)
                except CustodesError as e:
                    raise DatasetLaunchError(
                        f"cannot obtain the key {item.key_id} of dataset {spec.encrypted}: {e}"
                    ) from e
            try:
                written = decrypt(item, key)
            except CustodesError as e:
                raise DatasetLaunchError(f"cannot decrypt dataset {spec.encrypted}: {e}") from e
            logger.info("dataset %s -> %s (%s)", spec.encrypted, spec.plaintext, item.fs_type)
            prepared.datasets.extend(written)
    except BaseException:
        # The workload will not start: take back what earlier datasets of this start wrote.
        remove_plaintext(prepared.datasets)
        prepared.datasets.clear()
        raise


def prepare(
    config: GuestConfig,
    environ: Mapping[str, str],
    *,
    init_data_text: str | None = None,
    datasets: Sequence[DatasetSpec] = (),
    dataset_allow_persistent: bool = False,
) -> Prepared:
    """Everything ``custodes run`` does before exec; returns the workload's environment.

    ``datasets`` come after the configuration's ``[[datasets]]``; ``dataset_allow_persistent``
    lets their plaintext go to a filesystem that is not memory-backed (insecure, logged).
    """
    init_data = InitData.parse(init_data_text) if init_data_text is not None else None
    # Local checks first: a dataset that cannot be used stops the start before any attestation.
    planned = [
        plan(spec, allow_persistent=dataset_allow_persistent)
        for spec in (*config.datasets, *datasets)
    ]
    attester = select_attester(config.tee, tcti=config.tcti)
    if init_data is not None:
        _bind_init_data(attester, init_data)
    agent = AttestationAgent(config, attester, init_data=init_data_text)
    hub = ConfidentialDataHub(agent)
    prepared = Prepared(env=dict(environ))
    try:
        hub.fetch_credentials(config.credentials)
        for key, value in sorted(environ.items()):
            if not value.startswith(SEALED_PREFIX):
                continue
            try:
                prepared.env[key] = _unseal_text(hub, value)
                prepared.unsealed_env.append(key)
            except CustodesError as e:
                _failed(prepared, config, f"environment variable {key}", e)
        for mount in config.secret_mounts:
            for entry in _mount_entries(mount):
                try:
                    done = _unseal_file(hub, entry)
                except (CustodesError, OSError, UnicodeDecodeError) as e:
                    _failed(prepared, config, f"file {entry}", e)
                    continue
                if done is not None:
                    prepared.unsealed_files.append(done)
        _decrypt_datasets(hub, planned, prepared)
        prepared.handshakes = agent.handshakes()
    finally:
        agent.close()
    return prepared
