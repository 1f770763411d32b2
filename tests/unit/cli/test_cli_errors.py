"""The one-line rendering of every kind of failure (custodes.cli._errors.describe)."""

from __future__ import annotations

import errno
import json
import tomllib
from collections.abc import Callable

import httpx
import pytest
import yaml

from custodes.cli._errors import describe, one_line
from custodes.errors import ConfigError


def _raised(f: Callable[[], object]) -> BaseException:
    try:
        f()
    except Exception as e:  # the point is to capture any of them
        return e
    raise AssertionError("nothing was raised")


def _connect_error() -> BaseException:
    request = httpx.Request("GET", "http://127.0.0.1:1/kbs/v0/auth")
    return httpx.ConnectError("[Errno 111] Connection refused", request=request)


CASES = [
    (ConfigError("bad\nthing"), "bad; thing"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/y"), "/x/y does not exist"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/tmp"), "/tmp is a directory"),
    (PermissionError(errno.EACCES, "Permission denied", "/k"), "cannot access /k"),
    (OSError(errno.ENOSPC, "No space left on device", "/o"), "no space left"),
    (_raised(lambda: tomllib.loads("[x")), "malformed TOML"),
    (_raised(lambda: json.loads("{")), "malformed JSON: Expecting"),
    (_raised(lambda: b"\xff".decode()), "not utf-8 text (byte 0)"),
    (_raised(lambda: yaml.safe_load("a: [b")), "malformed YAML: line 1, column 6"),
    (_connect_error(), "cannot reach http://127.0.0.1:1/kbs/v0/auth"),
    (
        httpx.UnsupportedProtocol("ftp", request=httpx.Request("GET", "ftp://x/")),
        "must start with http:// or https://",
    ),
    (ValueError("Could not deserialize key data."), "invalid input: Could not deserialize"),
]


@pytest.mark.parametrize(("error", "fragment"), CASES, ids=[type(e).__name__ for e, _ in CASES])
def test_each_known_failure_is_one_line(error: BaseException, fragment: str) -> None:
    message, unexpected = describe(error)
    assert fragment in message
    assert "\n" not in message
    assert not unexpected


def test_an_unexpected_failure_says_how_to_see_the_traceback() -> None:
    message, unexpected = describe(RuntimeError("boom"))
    assert unexpected
    assert message == "unexpected error: RuntimeError: boom (run with -vv for the traceback)"


def test_one_line_drops_blank_lines() -> None:
    assert one_line("\n  first\n\n second  \n") == "first; second"
    assert one_line("") == "(no message)"
