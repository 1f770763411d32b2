"""A container for key material that never prints its content."""

from __future__ import annotations

import hmac
from typing import Final, Generic, NoReturn, TypeVar

T = TypeVar("T", bytes, str)

_REDACTED: Final = "Secret(**redacted**)"


class Secret(Generic[T]):
    """Wraps ``bytes`` or ``str`` key material; ``repr``/``str`` are redacted.

    Read it only with :meth:`reveal`, at the point of use.
    """

    __slots__ = ("_value",)
    _value: T

    def __init__(self, value: T) -> None:
        self._value = value

    def reveal(self) -> T:
        return self._value

    def __repr__(self) -> str:
        return _REDACTED

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return _REDACTED

    def __len__(self) -> int:
        return len(self._value)

    def __eq__(self, other: object) -> bool:
        # Constant time: a comparison of secrets must not leak a prefix length.
        if not isinstance(other, Secret):
            return NotImplemented
        a: bytes | str = self._value
        b: bytes | str = other._value
        if type(a) is not type(b):
            return False
        return hmac.compare_digest(_as_bytes(a), _as_bytes(b))

    def __hash__(self) -> int:
        raise TypeError("Secret is not hashable")

    def __reduce__(self) -> NoReturn:
        raise TypeError("Secret cannot be pickled")


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value
