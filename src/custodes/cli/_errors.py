"""How the ``custodes`` command reports a failure: one line on stderr, never a traceback.

``describe(e)`` turns any exception into the text after ``custodes: error:``. Errors raised
on purpose (:class:`~custodes.errors.CustodesError`) already say what is wrong; the rest —
file system errors, undecodable input, malformed TOML/JSON/YAML, a broker that cannot be
reached — are named here with the file or address and, where there is one, the fix. An
exception nobody anticipated is still one line, with a pointer to ``-vv``, which prints the
traceback too.

This module imports nothing heavy: httpx and yaml are recognised only if the failing command
already loaded them (``sys.modules``), so start-up stays fast.
"""

from __future__ import annotations

import errno
import json
import os
import ssl
import sys
import tomllib
from typing import Final

from custodes.errors import CustodesError

EXIT_BROKEN_PIPE: Final = 128 + 13  # what a shell reports for a process killed by SIGPIPE
UNEXPECTED_HINT: Final = "run with -vv for the traceback"


def one_line(text: str) -> str:
    """Messages that span lines (a Rego compile error, a YAML mark) joined into one."""
    parts = [part.strip() for part in text.splitlines() if part.strip()]
    return "; ".join(parts) if parts else "(no message)"


def _os_error(e: OSError) -> str:
    name = e.filename
    if name is None:
        return e.strerror or str(e)
    if isinstance(e, FileNotFoundError):
        return f"{name} does not exist (check the path)"
    if isinstance(e, IsADirectoryError):
        return f"{name} is a directory; a file is expected here"
    if isinstance(e, NotADirectoryError):
        return f"{name}: a component of the path is not a directory"
    if isinstance(e, PermissionError):
        return f"cannot access {name}: permission denied"
    if isinstance(e, FileExistsError):
        return f"{name} exists; refusing to overwrite it"
    if e.errno == errno.ENOSPC:
        return f"cannot write {name}: no space left on the device"
    return f"{name}: {e.strerror or e}"


def _network_error(e: BaseException) -> str | None:
    """httpx's errors, if httpx was loaded by the command (it never is otherwise)."""
    httpx = sys.modules.get("httpx")
    if httpx is None or not isinstance(e, httpx.HTTPError):
        return None
    url = ""
    try:
        url = f" {e.request.url}"
    except RuntimeError:  # an error raised without a request
        pass
    if isinstance(e, httpx.UnsupportedProtocol):
        return f"cannot reach{url}: the URL must start with http:// or https://"
    if isinstance(e, httpx.ConnectError):
        return f"cannot reach{url}: {e} (is the broker running, and is the URL right?)"
    if isinstance(e, httpx.TimeoutException):
        return f"no answer from{url} in time: {e or type(e).__name__}"
    return f"request to{url} failed: {e or type(e).__name__}"


def _yaml_error(e: BaseException) -> str | None:
    yaml = sys.modules.get("yaml")
    if yaml is None or not isinstance(e, yaml.YAMLError):
        return None
    from custodes.k8s.yamlio import yaml_problem

    return f"malformed YAML: {yaml_problem(e)}"


def describe(e: BaseException) -> tuple[str, bool]:
    """The one-line message for ``e`` and whether it was unexpected (a bug, or a case that
    deserves its own precise error at the source)."""
    if isinstance(e, CustodesError):
        return one_line(str(e)), False
    if isinstance(e, ssl.SSLError):
        return one_line(f"TLS: {e.reason or e}"), False
    if isinstance(e, OSError):
        return one_line(_os_error(e)), False
    if isinstance(e, tomllib.TOMLDecodeError):
        return one_line(f"malformed TOML: {e}"), False
    if isinstance(e, json.JSONDecodeError):
        return one_line(f"malformed JSON: {e.msg} (line {e.lineno}, column {e.colno})"), False
    if isinstance(e, UnicodeDecodeError):
        return one_line(f"the input is not {e.encoding} text (byte {e.start}): {e.reason}"), False
    for known in (_network_error(e), _yaml_error(e)):
        if known is not None:
            return one_line(known), False
    if isinstance(e, ValueError):
        # Key and certificate parsers (cryptography) report bad input as ValueError.
        return one_line(f"invalid input: {e}"), False
    text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    return one_line(f"unexpected error: {text}") + f" ({UNEXPECTED_HINT})", True


def silence_stdout() -> None:
    """After EPIPE on stdout: point it at /dev/null so the interpreter's final flush does
    not print "Exception ignored … BrokenPipeError"."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout closed or not a real file
        pass
