"""The ``custodes`` command. Each command group lives in its own module with
``register(subparsers)``; ``main`` only builds the parser and renders errors."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from custodes import __version__
from custodes.cli._parser import CommandParser

# httpx imports its optional command-line client (click, rich, pygments: ~0.1 s) whenever
# those happen to be installed; custodes never uses it. A None entry makes that import fail,
# and httpx then skips it (its documented fallback when the extras are missing).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


# Command -> (module, one-line help). The parser is built from these lines alone; a command's
# module is imported only when that command is named (`custodes --help` and `--version` import
# none), and declares its arguments with light imports: the modules a command needs to run are
# imported inside its handlers, so `custodes run` (a pod's entrypoint) and `custodes X --help`
# do not pay for the broker, httpx or cryptography.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("custodes.cli.serve", "run the key broker"),
    "admin": (
        "custodes.cli.admin",
        "manage resources, policies and reference values (workload admin)",
    ),
    "operator": (
        "custodes.cli.operator",
        "create, list, suspend and resume tenants (broker operator)",
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
    "rv": ("custodes.cli.rv", "compute reference values (SNP launch, measured boot, NVIDIA RIMs)"),
    "policy": (
        "custodes.cli.policy",
        "test a candidate policy against recorded evidence or attestations",
    ),
    "demo": (
        "custodes.cli.demo",
        "run a demo: the spine (default) or `fraud` (encrypted dataset, confidential AI)",
    ),
    "vm": ("custodes.cli.vm", "a measured VM with a vTPM: demo, kernel, initramfs"),
    "dataset": ("custodes.cli.dataset", "encrypted datasets: data keys, encrypt, decrypt, inspect"),
    "completion": ("custodes.cli.completion", "print a shell completion script (bash, zsh, fish)"),
}


def _command_in(argv: Sequence[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser (``only=None``: every command module is imported), or one in which only
    the command ``only`` is declared in full and the others are one-line placeholders
    (``only=""``: placeholders only, enough for ``--help`` and ``--version``)."""
    parser = CommandParser(
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
    parser = build_parser(_command_in(arguments) or "")
    args = parser.parse_args(arguments)
    if args.verbose == 0 and "TSS2_LOG" not in os.environ:
        # libtss2 (loaded by the TPM attester) prints its own `ERROR:tcti:...` lines while it
        # probes for a TPM; custodes reports the failure itself. -v shows them. TSS2_LOG is
        # libtss2's variable, read with getenv when it first logs; set with putenv only, so
        # that it stays out of os.environ and of the environment `custodes run` gives the
        # workload. A value the user set is kept.
        os.putenv("TSS2_LOG", "all+NONE")
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("custodes").setLevel(level)
    try:
        result: int = args.func(args)
        # Flushed here, not at exit: a closed pipe (`custodes … | head`) is handled below.
        sys.stdout.flush()
        return result
    except BrokenPipeError:
        return _broken_pipe()
    except KeyboardInterrupt:
        print("custodes: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the one place where every failure becomes one line
        return _report(e, verbose=args.verbose)


def _broken_pipe() -> int:
    """The reader of stdout went away: stop quietly, as `cat` or `grep` do."""
    from custodes.cli._errors import EXIT_BROKEN_PIPE, silence_stdout

    silence_stdout()
    return EXIT_BROKEN_PIPE


def _report(e: Exception, *, verbose: int) -> int:
    """One line on stderr; at -vv the traceback first (the hint of an unexpected error)."""
    import traceback

    from custodes.cli._errors import describe

    message, _unexpected = describe(e)
    if verbose >= 2:
        traceback.print_exception(e, file=sys.stderr)
    print(f"custodes: error: {message}", file=sys.stderr)
    return EXIT_FAILURE
