"""Secret: the value never shows in text, is compared in constant time, and stays in memory."""

from __future__ import annotations

import copy
import logging
import pickle
import traceback

import pytest

from custodes.types.secret import Secret

VALUE = "hunter2-very-secret"
REDACTED = "Secret(**redacted**)"


@pytest.fixture(params=["bytes", "str"])
def secret(request: pytest.FixtureRequest) -> Secret[bytes] | Secret[str]:
    return Secret(VALUE.encode()) if request.param == "bytes" else Secret(VALUE)


def _leaks(text: str) -> bool:
    return VALUE in text or "hunter2" in text


def test_repr_str_format(secret: Secret[bytes] | Secret[str]) -> None:
    texts = [
        repr(secret),
        str(secret),
        format(secret),
        format(secret, ">40"),
        format(secret, "s"),
        f"{secret}",
        f"{secret!r}",
        f"{secret!s}",
        f"{secret:x}",
        "{}".format(secret),  # noqa: UP032 (str.format is what is tested)
        "%s" % (secret,),  # noqa: UP031 (the old operator is what is tested)
        "%r" % (secret,),  # noqa: UP031
        repr([secret]),
        repr({"k": secret}),
        str((secret,)),
    ]
    for text in texts:
        assert not _leaks(text), text
    assert repr(secret) == str(secret) == f"{secret}" == REDACTED


def test_logging(secret: Secret[bytes] | Secret[str], caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("custodes.test.secret")
    with caplog.at_level(logging.DEBUG, logger="custodes.test.secret"):
        logger.info("value %s", secret)
        logger.info("value %r", secret)
        logger.info("value %(v)s", {"v": secret})
        logger.info(secret)
        logger.info("value", extra={"secret": secret})
    assert len(caplog.records) == 5
    assert not _leaks(caplog.text)
    assert REDACTED in caplog.text


def test_exception_message(secret: Secret[bytes] | Secret[str]) -> None:
    try:
        raise ValueError(secret)
    except ValueError as e:
        rendered = "".join(traceback.format_exception(e))
    assert not _leaks(rendered)


def test_no_instance_dict(secret: Secret[bytes] | Secret[str]) -> None:
    assert not hasattr(secret, "__dict__")
    with pytest.raises(AttributeError):
        secret.extra = 1  # type: ignore[union-attr]


def test_reveal_and_len() -> None:
    assert Secret(b"\x00\x01").reveal() == b"\x00\x01"
    assert Secret("é").reveal() == "é"
    assert len(Secret(b"abc")) == 3
    assert len(Secret("é")) == 1


def test_equality() -> None:
    assert Secret(b"abc") == Secret(b"abc")
    assert Secret("abc") == Secret("abc")
    assert Secret("é") == Secret("é")
    assert Secret(b"") == Secret(b"")
    assert Secret(b"abc") != Secret(b"abd")
    assert Secret(b"abc") != Secret(b"ab")
    assert Secret(b"abc") != Secret(b"abcd")
    assert Secret("abc") != Secret("abC")


def test_bytes_and_str_are_never_equal() -> None:
    assert Secret(b"abc") != Secret("abc")
    assert Secret("abc") != Secret(b"abc")
    assert Secret(b"") != Secret("")
    # "é" as UTF-8 bytes is the same encoding the str is compared through.
    assert Secret("é".encode()) != Secret("é")


def test_not_equal_to_the_plain_value() -> None:
    # Comparing a Secret with a plain value is a mistake; it is simply not equal.
    assert Secret(b"abc") != b"abc"
    assert b"abc" != Secret(b"abc")
    assert Secret("abc") != "abc"
    assert Secret(b"abc") != None  # noqa: E711


def test_unhashable(secret: Secret[bytes] | Secret[str]) -> None:
    with pytest.raises(TypeError):
        hash(secret)
    with pytest.raises(TypeError):
        {secret}  # noqa: B018
    with pytest.raises(TypeError):
        {secret: 1}  # noqa: B018


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_not_picklable(secret: Secret[bytes] | Secret[str], protocol: int) -> None:
    with pytest.raises(TypeError):
        pickle.dumps(secret, protocol=protocol)


def test_not_copyable(secret: Secret[bytes] | Secret[str]) -> None:
    # copy goes through the same reduce protocol as pickle.
    with pytest.raises(TypeError):
        copy.copy(secret)
    with pytest.raises(TypeError):
        copy.deepcopy(secret)
