"""Reference values as command-line words: ``--type`` parsing, and the inverse rendering.

``custodes admin reference-value register NAME VALUE...`` reads each VALUE as ``--type``:
``string`` (the default: hex digests and versions such as ``0x1`` stay text), ``number``,
``bool`` or ``json``. Policies compare reference values with claims exactly (``1 == "1"`` is
false), so the type is said, never guessed. :func:`register_words` renders a value back into
the words that register it, for ``policy test --suggest``; the two are tested as inverses.
"""

from __future__ import annotations

import json
import math
import shlex
from typing import Final, Literal

from custodes.errors import ConfigError
from custodes.types.json import Json

ValueType = Literal["string", "number", "bool", "json"]
VALUE_TYPES: Final[tuple[ValueType, ...]] = ("string", "number", "bool", "json")
REGISTER_COMMAND: Final = ("custodes", "admin", "reference-value", "register")


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def parse_value(text: str, kind: ValueType) -> Json:
    """One VALUE word as ``kind``; ``ConfigError`` naming the word when it is not one."""
    if kind == "string":
        return text
    if kind == "bool":
        if text in ("true", "false"):
            return text == "true"
        raise ConfigError(f"--type bool: {text!r} is not true or false")
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise ConfigError(f"--type {kind}: {text!r} is not JSON") from None
    if kind == "number" and (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        raise ConfigError(f"--type number: {text!r} is not a number")
    return value


def _type_of(value: Json) -> ValueType:
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "json"


def _word(value: Json, kind: ValueType) -> str:
    if kind == "string":
        return str(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def register_words(name: str, value: Json) -> list[str]:
    """The ``register`` command line that stores ``value`` under ``name`` exactly."""
    single = not isinstance(value, list) or not value
    items = [value] if single else list(value)
    kinds = {_type_of(item) for item in items}
    kind: ValueType = kinds.pop() if len(kinds) == 1 else "json"
    words = [_word(item, kind) for item in items]
    options = [] if kind == "string" else ["--type", kind]
    if single:
        options.append("--single")
    # A value that starts with "-" would be read as an option: "--" ends the options.
    separator = ["--"] if any(w.startswith("-") for w in [name, *words]) else []
    return [*REGISTER_COMMAND, *options, *separator, name, *words]


def register_command(name: str, value: Json) -> str:
    """:func:`register_words` as one shell-quoted line."""
    return shlex.join(register_words(name, value))
