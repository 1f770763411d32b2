"""Named one-bit flags of a hardware register, read as ``bool`` attributes.

The SNP guest policy, platform info and key info and the TDX TD attributes are integers whose
bits the specifications name; each class declares its flags as a table of names and bit
numbers (``smt_allowed = Flag(16)``) over its ``raw`` integer, read in one place here.
"""

from __future__ import annotations

from typing import Protocol, overload


class Register(Protocol):
    """What a :class:`Flag` reads: the register's integer value."""

    @property
    def raw(self) -> int: ...


class Flag:
    """A read-only ``bool`` attribute: bit ``bit`` of the owner's ``raw``."""

    __slots__ = ("bit",)

    def __init__(self, bit: int) -> None:
        self.bit = bit

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Flag: ...

    @overload
    def __get__(self, obj: Register, owner: type | None = None) -> bool: ...

    def __get__(self, obj: Register | None, owner: type | None = None) -> Flag | bool:
        if obj is None:
            return self
        return bool(obj.raw >> self.bit & 1)
