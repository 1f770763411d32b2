"""What `custodes run` and `custodes guest api` share: a guest configuration (``--config``)
with the command line's overrides, and the init-data file the guest sends.

Both commands start the same guest (the attesters, the brokers), so they take the same
options and read them the same way. Declared with light imports: the guest's configuration
module is imported when the configuration is built.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from custodes.cli._common import add_cacert
from custodes.errors import ConfigError
from custodes.guest.attester.select import GPU_MODES, SELECTABLE

if TYPE_CHECKING:
    from custodes.guest.config import GuestConfig


def add_guest_config_options(p: argparse.ArgumentParser) -> None:
    """``--config`` and what the command line overrides in it (:func:`guest_config`)."""
    p.add_argument("--config", type=Path, help="guest configuration (TOML)")
    p.add_argument("--url", help="broker URL (when the config names none)")
    add_cacert(p)
    p.add_argument("--tee", choices=SELECTABLE, help="attester (default: detect)")
    p.add_argument("--tcti", help="TPM TCTI for --tee tpm")
    p.add_argument(
        "--gpu",
        choices=GPU_MODES,
        help="attest the NVIDIA GPUs with the CPU (default auto: when the driver is present; "
        "needs the custodes[gpu] extra)",
    )
    p.add_argument(
        "--policy-selector",
        metavar="NAME",
        help="ask the broker for the attestation policy it maps NAME to (its "
        "attestation.policy_id_map); default: the broker's default policy",
    )


def guest_config(args: argparse.Namespace) -> GuestConfig:
    """The ``--config`` file (or the defaults) with the options of
    :func:`add_guest_config_options` that were given."""
    import dataclasses

    from custodes.guest.config import broker_from_url, load_guest_config

    config = load_guest_config(args.config)
    changes: dict[str, object] = {}
    if args.url:
        changes["brokers"] = (broker_from_url(args.url, args.cacert),)
    for name in ("tee", "tcti", "gpu"):
        if getattr(args, name):
            changes[name] = getattr(args, name)
    config = dataclasses.replace(config, **changes)  # type: ignore[arg-type]
    if args.policy_selector is not None:
        config = config.with_policy_selector(args.policy_selector)
    return config


def read_init_data_text(path: Path | None) -> str | None:
    """The init-data TOML the guest sends with its evidence, as text (``None``: none)."""
    if path is None:
        return None
    try:
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read init-data {path}: {e}") from e
