"""``custodes run``: prepare the workload's secrets inside the TEE, then exec it unchanged.

Steps, in order:
1. choose the attesters (the CPU TEE's and the GPUs': :meth:`AttestationAgent.from_config`);
   with init-data, bind it where the guest can (TPM: extend PCR 8) and send it with every
   attestation;
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

The broker requests of steps 2-5 run concurrently (:func:`fetch_all`): up to
:data:`FETCH_CONCURRENCY` in flight over the KBS client's one connection pool (HTTP/1.1 has no
multiplexing, so each request in flight holds its own pooled connection); the first request to
a broker attests, the others wait for that token (:class:`~custodes.guest.kbs_client.KbsClient`
runs one handshake at a time). Every fetch finishes before anything is written, and results are
applied in the order above, so the outcome, the warnings and the error that stops a start are
those of a sequential start; a start that stops writes no secret at all.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from custodes.errors import ConfigError, CustodesError
from custodes.guest.agent import AttestationAgent
from custodes.guest.cdh import ConfidentialDataHub, write_credential, write_private
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


# Broker requests in flight at once during a start. The broker's cost per release bounds the
# gain beyond a few; more would only hold more connections open.
FETCH_CONCURRENCY = 8


class UnsealFailed(CustodesError):
    code = "unseal-failed"


class _NotStarted:
    """The result of a fetch skipped because an earlier one already stopped the start."""


NOT_STARTED = _NotStarted()


# What a fetch gives: a plaintext, or None (a mounted file that is not sealed).
Got = Secret[bytes] | None
Outcome = Got | Exception | _NotStarted


@dataclass(frozen=True, slots=True)
class Fetch:
    """One broker request of a start. ``stops(error)``: does this failure stop the start (so
    later fetches need not be made)?"""

    run: Callable[[], Got]
    stops: Callable[[Exception], bool]


def fetch_all(fetches: Sequence[Fetch], *, concurrency: int = FETCH_CONCURRENCY) -> list[Outcome]:
    """Run ``fetches`` on up to ``concurrency`` threads; results in the order given.

    Once fetch ``i`` fails in a way that stops the start, fetches after ``i`` that have not
    started are skipped (:data:`NOT_STARTED`); fetches before ``i`` still run, so the first
    stopping failure in order is always found, as a sequential start would find it.
    """
    results: list[Outcome] = [NOT_STARTED] * len(fetches)
    cutoff = len(fetches)
    lock = threading.Lock()

    def one(i: int) -> None:
        nonlocal cutoff
        with lock:
            if i > cutoff:
                return
        try:
            results[i] = fetches[i].run()
        except Exception as e:  # kept for the caller, who decides in order what it means
            results[i] = e
            if fetches[i].stops(e):
                with lock:
                    cutoff = min(cutoff, i)

    workers = max(1, min(concurrency, len(fetches)))
    if workers == 1:
        for i in range(len(fetches)):
            one(i)
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="custodes-fetch") as pool:
            list(pool.map(one, range(len(fetches))))
    return results


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


def _unseal_env(hub: ConfidentialDataHub, sealed: str) -> Secret[bytes]:
    plain = hub.unseal(sealed.strip())
    try:
        plain.reveal().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UnsealFailed("the plaintext is not UTF-8 text") from e
    return plain


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


# What a secret file's failure may be: these follow ``unseal_failure``; anything else stops.
_FILE_ERRORS = (CustodesError, OSError, UnicodeDecodeError)


def _unseal_file(hub: ConfidentialDataHub, entry: Path) -> Secret[bytes] | None:
    """The plaintext of a sealed secret file, or ``None`` for a file that is not sealed."""
    with open(entry.resolve(), "rb") as f:
        head = f.read(MAX_SEALED_FILE + 1)
    if not head.startswith(SEALED_PREFIX.encode()):
        return None
    if len(head) > MAX_SEALED_FILE:
        raise UnsealFailed(f"{entry}: a sealed secret file over {MAX_SEALED_FILE} bytes")
    return hub.unseal(head.decode("ascii", errors="strict").strip())


def _install_file(entry: Path, plain: bytes) -> None:
    target = entry.resolve()
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


def _decrypt_datasets(
    planned: Sequence[PlannedDataset], keys: Mapping[str, Secret[bytes]], prepared: Prepared
) -> None:
    try:
        for item in planned:
            spec = item.spec
            try:
                written = decrypt(item, keys[spec.key])
            except CustodesError as e:
                raise DatasetLaunchError(f"cannot decrypt dataset {spec.encrypted}: {e}") from e
            logger.info("dataset %s -> %s (%s)", spec.encrypted, spec.plaintext, item.fs_type)
            prepared.datasets.extend(written)
    except BaseException:
        # The workload will not start: take back what earlier datasets of this start wrote.
        remove_plaintext(prepared.datasets)
        prepared.datasets.clear()
        raise


def _value(result: Outcome) -> Got:
    """A fetch's value, or its error raised."""
    if isinstance(result, Exception):
        raise result
    if isinstance(result, _NotStarted):  # only after a stopping failure, raised before this
        raise UnsealFailed("a secret was not fetched because the start had already failed")
    return result


def prepare(
    config: GuestConfig,
    environ: Mapping[str, str],
    *,
    init_data_text: str | None = None,
    datasets: Sequence[DatasetSpec] = (),
    dataset_allow_persistent: bool = False,
    concurrency: int | None = None,
) -> Prepared:
    """Everything ``custodes run`` does before exec; returns the workload's environment.

    ``datasets`` come after the configuration's ``[[datasets]]``; ``dataset_allow_persistent``
    lets their plaintext go to a filesystem that is not memory-backed (insecure, logged).
    ``concurrency``: broker requests in flight at once (default :data:`FETCH_CONCURRENCY`;
    1 fetches one secret at a time).
    """
    init_data = InitData.parse(init_data_text) if init_data_text is not None else None
    # Local checks first: a dataset that cannot be used stops the start before any attestation.
    planned = [
        plan(spec, allow_persistent=dataset_allow_persistent)
        for spec in (*config.datasets, *datasets)
    ]
    # The CPU's attester and, per config.gpu, the GPUs' (the custodes[gpu] extra).
    agent = AttestationAgent.from_config(config, init_data=init_data_text)
    if init_data is not None:
        _bind_init_data(agent.attester, init_data)
    hub = ConfidentialDataHub(agent)
    prepared = Prepared(env=dict(environ))
    try:
        _fetch_and_apply(hub, config, environ, planned, prepared, concurrency)
        prepared.handshakes = agent.handshakes()
    finally:
        agent.close()
    return prepared


def _fetch_and_apply(
    hub: ConfidentialDataHub,
    config: GuestConfig,
    environ: Mapping[str, str],
    planned: Sequence[PlannedDataset],
    prepared: Prepared,
    concurrency: int | None,
) -> None:
    """Steps 2-5 of the module docstring: every fetch first (concurrently), then every check
    in order (the first failure that stops the start is raised before anything is written),
    then every write in order."""
    fail = config.unseal_failure != "warn"

    def always(_: Exception) -> bool:
        return True

    def env_stops(e: Exception) -> bool:
        return fail or not isinstance(e, CustodesError)

    def file_stops(e: Exception) -> bool:
        return fail or not isinstance(e, _FILE_ERRORS)

    credentials = [(cred, hub.credential_target(cred)) for cred in config.credentials]
    sealed_env = [(k, v) for k, v in sorted(environ.items()) if v.startswith(SEALED_PREFIX)]
    files = [entry for mount in config.secret_mounts for entry in _mount_entries(mount)]
    first_use: dict[str, PlannedDataset] = {}  # one fetch per key, however many datasets use it
    for item in planned:
        first_use.setdefault(item.spec.key, item)
    fetches: list[Fetch] = [
        *(Fetch(partial(hub.get_resource, c.resource_uri), always) for c, _ in credentials),
        *(Fetch(partial(_unseal_env, hub, value), env_stops) for _, value in sealed_env),
        *(Fetch(partial(_unseal_file, hub, entry), file_stops) for entry in files),
        *(Fetch(partial(fetch_key, hub, item), always) for item in first_use.values()),
    ]
    results = iter(fetch_all(fetches, concurrency=concurrency or FETCH_CONCURRENCY))

    # Checks, in order: raise the first failure that stops the start, warn about the others.
    got_credentials = [_value(next(results)) for _ in credentials]
    got_env: list[tuple[str, bytes]] = []
    for key, _ in sealed_env:
        result = next(results)
        if isinstance(result, CustodesError):
            _failed(prepared, config, f"environment variable {key}", result)
        elif (value := _value(result)) is not None:
            got_env.append((key, value.reveal()))
    got_files: list[tuple[Path, bytes]] = []
    for entry in files:
        result = next(results)
        if isinstance(result, _FILE_ERRORS):
            _failed(prepared, config, f"file {entry}", result)
        elif (content := _value(result)) is not None:
            got_files.append((entry, content.reveal()))
    keys: dict[str, Secret[bytes]] = {}
    for key_spec, item in first_use.items():
        result = next(results)
        if isinstance(result, CustodesError):
            raise DatasetLaunchError(
                f"cannot obtain the key {item.key_id} of dataset {item.spec.encrypted}: {result}"
            ) from result
        if (data_key := _value(result)) is not None:
            keys[key_spec] = data_key

    # Writes, in order.
    for (cred, target), fetched in zip(credentials, got_credentials, strict=True):
        if fetched is not None:
            write_credential(cred, target, fetched)
    for name, text in got_env:
        prepared.env[name] = text.decode("utf-8")
        prepared.unsealed_env.append(name)
    for entry, data in got_files:
        try:
            _install_file(entry, data)
        except OSError as e:
            _failed(prepared, config, f"file {entry}", e)
            continue
        prepared.unsealed_files.append(entry)
    _decrypt_datasets(planned, keys, prepared)
