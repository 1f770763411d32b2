"""The ``custodes`` command. Each command group lives in its own module with
``register(subparsers)``; ``main`` only builds the parser and renders errors."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from custodes import __version__
from custodes.errors import CustodesError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


# Command -> (module, one-line help). Only the module of the command being run is imported,
# so that `custodes run` (a pod's entrypoint) does not pay for the broker's imports.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("custodes.cli.serve", "run the key broker"),
    "admin": (
        "custodes.cli.admin",
        "manage resources, policies and reference values (workload admin)",
    ),
    "guest": (
        "custodes.cli.guest",
        "attest this TEE and fetch secrets (inside the confidential pod)",
    ),
    "run": (
        "custodes.cli.run",
        "unseal secrets inside the TEE and exec the workload (pod entrypoint)",
    ),
    "secret": (
        "custodes.cli.secret",
        "sealed secrets: signing keys, seal, unseal, inspect (workload admin)",
    ),
    "initdata": (
        "custodes.cli.initdata",
        "build, digest and encode init-data (annotation, block image)",
    ),
    "evidence": ("custodes.cli.evidence", "verify TEE evidence offline (auditors)"),
    "audit": ("custodes.cli.audit", "audit log verification and the access matrix"),
    "k8s": ("custodes.cli.k8s", "Kubernetes manifests and the admission webhook"),
    "rv": ("custodes.cli.rv", "compute reference values (SNP launch measurement)"),
    "policy": (
        "custodes.cli.policy",
        "test a candidate policy against recorded evidence or attestations",
    ),
    "demo": (
        "custodes.cli.demo",
        "run a demo: the spine (default) or `fraud` (encrypted dataset, confidential AI)",
    ),
    "dataset": ("custodes.cli.dataset", "encrypted datasets: data keys, encrypt, decrypt, inspect"),
}


def _command_in(argv: Sequence[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or (``only``) one whose other commands are placeholders."""
    parser = argparse.ArgumentParser(
        prog="custodes",
        description=(
            "Confidential Containers trust stack. The workload admin runs the key broker "
            "(`custodes serve`) and manages it (`custodes admin`, `custodes secret`, "
            "`custodes initdata`); inside the TEE, `custodes run` unseals a workload's secrets "
            "and `custodes guest` attests and fetches them; auditors use `custodes evidence`."
        ),
    )
    parser.add_argument("--version", action="version", version=f"custodes {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        if only is None or name == only:
            importlib.import_module(module).register(sub)
        else:
            sub.add_parser(name, help=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_in(arguments))
    args = parser.parse_args(arguments)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("custodes").setLevel(level)
    try:
        result: int = args.func(args)
        return result
    except CustodesError as e:
        print(f"custodes: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("custodes: interrupted", file=sys.stderr)
        return 130
