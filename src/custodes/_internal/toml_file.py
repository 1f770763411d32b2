"""Reading a TOML settings file (the broker's, the guest's, the webhook's) with the same two
one-line errors for each: it cannot be read, or it is not TOML."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from custodes.errors import ConfigError


def read_toml(path: Path, what: str, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """The document in ``path``; ``error`` naming ``what`` (``guest config``) when the file
    cannot be read, and naming ``path`` when it is not UTF-8 TOML."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror}") from e
    # tomllib recurses into nested arrays and inline tables: a deep one is refused, not a crash.
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise error(f"{path}: not valid TOML: {e}") from e
