"""JSON value types."""

from __future__ import annotations

from typing import Any, TypeAlias

# A JSON value as produced by ``json.loads``. ``Any`` because recursive aliases are not
# useful at the boundaries where untrusted JSON is validated field by field.
Json: TypeAlias = Any
JsonObject: TypeAlias = dict[str, Any]
