"""The ``custodes`` command. Each command group lives in its own module with
``register(subparsers)``; ``main`` only builds the parser and renders errors."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from custodes import __version__
from custodes.errors import CustodesError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    from custodes.cli import admin, demo, guest, serve

    parser = argparse.ArgumentParser(
        prog="custodes",
        description=(
            "Confidential Containers trust stack. The workload admin runs the key broker "
            "(`custodes serve`) and manages it (`custodes admin`); inside the TEE, "
            "`custodes guest` attests and fetches secrets."
        ),
    )
    parser.add_argument("--version", action="version", version=f"custodes {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (serve, admin, guest, demo):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
