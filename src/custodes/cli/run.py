"""`custodes run`: the pod's entrypoint. Unseals secrets inside the TEE, then execs the
workload unchanged."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from custodes.cli._guest_config import (
    add_guest_config_options,
    guest_config,
    read_init_data_text,
)
from custodes.errors import ConfigError, CustodesError

if TYPE_CHECKING:
    from custodes.guest.dataset_launch import DatasetSpec

# The guest's modules (config, attesters, the KBS client, dataset decryption) are imported by
# the handler: `custodes run --help` imports only this declaration.

EPILOG = """\
Examples:
  custodes run --config /etc/custodes/guest.toml -- python app.py
  custodes run --url https://broker:8080 --tee tpm --secret-mount /etc/secrets -- ./server
  custodes run --initdata /run/confidential-containers/initdata/initdata.toml -- ./job
  custodes run --url https://broker:8080 --policy-selector confidential-ai -- python app.py
  custodes run --url https://broker:8080 \
      --dataset kbs:///default/dataset/tx=/data/tx.csv.cdx:/dev/shm/tx.csv -- python app.py

Environment values that start with "sealed." are unsealed, and so are files under each
--secret-mount whose content starts with "sealed.". Then CMD is exec'd with the plaintext
environment. A secret that cannot be unsealed stops the start (--on-unseal-error warn keeps
the sealed value and goes on, as upstream does).

Each --dataset KEY=ENCRYPTED_PATH:PLAIN_PATH is decrypted before the exec, with the data key
released by the broker after the same attestation; KEY is the key's kbs:// resource URI or a
sealed secret pointing at it. PLAIN_PATH must be on tmpfs or ramfs (e.g. /dev/shm): plaintext
is never written to persistent storage unless --dataset-allow-persistent (insecure) says so.
A dataset that cannot be decrypted always stops the start.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="unseal secrets inside the TEE and exec the workload (pod entrypoint)",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_guest_config_options(p)
    p.add_argument("--initdata", type=Path, help="init-data TOML, bound and sent to the broker")
    p.add_argument(
        "--secret-mount",
        type=Path,
        action="append",
        default=[],
        help="a directory of mounted secrets to unseal (repeatable)",
    )
    p.add_argument(
        "--on-unseal-error",
        choices=["error", "warn"],
        help="stop the start (default) or warn and keep the sealed value",
    )
    p.add_argument(
        "--dataset",
        type=_dataset_arg,
        action="append",
        default=[],
        metavar="KEY=ENCRYPTED_PATH:PLAIN_PATH",
        help="decrypt a dataset into memory before the exec (repeatable); KEY is "
        "kbs:///repo/type/tag or a sealed.… reference to it",
    )
    p.add_argument(
        "--dataset-allow-persistent",
        action="store_true",
        help="INSECURE: let decrypted datasets go to a filesystem that is not tmpfs/ramfs",
    )
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    p.set_defaults(func=run)


def _dataset_arg(text: str) -> DatasetSpec:
    """argparse ``type=``: a usage error naming the problem instead of a traceback."""
    from custodes.guest.dataset_launch import DatasetSpec

    try:
        return DatasetSpec.parse(text)
    except CustodesError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def run(args: argparse.Namespace) -> int:
    from custodes.guest.launcher import prepare

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise ConfigError("no workload command: custodes run [options] -- CMD [ARGS...]")
    executable = shutil.which(command[0])
    if executable is None:
        raise ConfigError(f"workload command not found: {command[0]}")
    config = guest_config(args)
    changes: dict[str, object] = {}
    if args.secret_mount:
        changes["secret_mounts"] = config.secret_mounts + tuple(args.secret_mount)
    if args.on_unseal_error:
        changes["unseal_failure"] = args.on_unseal_error
    config = dataclasses.replace(config, **changes)  # type: ignore[arg-type]
    from custodes._internal.tls import tls_verify

    for broker in config.brokers:
        # Checked before anything else: a wrong CA file fails the start with its name, even
        # when this start would not have needed the broker.
        tls_verify(broker.cacert)
    prepared = prepare(
        config,
        os.environ,
        init_data_text=read_init_data_text(args.initdata),
        datasets=args.dataset,
        dataset_allow_persistent=args.dataset_allow_persistent,
    )
    for path in prepared.datasets:
        print(f"custodes run: decrypted dataset {path}", file=sys.stderr, flush=True)
    print(
        f"custodes run: unsealed {len(prepared.unsealed_env)} environment variable(s) and "
        f"{len(prepared.unsealed_files)} file(s) with {prepared.handshakes} attestation(s); "
        f"exec {command[0]}",
        file=sys.stderr,
        flush=True,
    )
    # The workload replaces this process (no shell: the argv is passed as given).
    os.execve(executable, command, prepared.env)  # noqa: S606
