"""Writing an init-data document, byte for byte the same for the same inputs.

The digest covers the raw bytes, so the writer fixes every choice a TOML serialiser could
make differently::

    version = "0.1.0"
    algorithm = "<algorithm>"

    [data]
    "aa.toml" = '''
    <text>'''

    "cdh.toml" = '''
    ...

Entries come in a fixed order (``aa.toml``, ``cdh.toml``, ``policy.rego``, then any others
sorted by name), separated by one blank line; the file ends with a newline. A value is written
as a multi-line literal string (the upstream examples' style: the text appears verbatim) when
that can hold it exactly; otherwise (it contains ``'''``, a carriage return or a control
character, or ends with a quote) as a one-line basic string with escapes. The result is parsed
back with the strict parser, which must give the same entries, and ``aa.toml``/``cdh.toml``
must be TOML and a ``policy.rego`` must compile with one constant ``policy_data`` object (or
none), as the broker will require.

The default algorithm is sha256: it is the only one every TEE binding accepts without
truncation (SNP HOST_DATA and PCR 8 need it; TDX MRCONFIGID takes it zero-padded).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final, cast

from custodes.errors import ConfigError
from custodes.initdata.errors import InitDataError
from custodes.initdata.format import (
    AA_CONFIG,
    AGENT_POLICY,
    CDH_CONFIG,
    INITDATA_VERSION,
    HashAlgorithmName,
    InitData,
    check_algorithm,
)

DEFAULT_ALGORITHM: Final[HashAlgorithmName] = "sha256"
_ORDER: Final = (AA_CONFIG, CDH_CONFIG, AGENT_POLICY)
_SHORT_ESCAPES: Final = {
    "\\": "\\\\",
    '"': '\\"',
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _is_control(ch: str) -> bool:
    return ch < " " or ch == "\x7f"


def _basic(text: str) -> str:
    """``text`` as a TOML one-line basic string."""
    out = []
    for ch in text:
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif _is_control(ch):
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _value(text: str) -> str:
    literal_ok = (
        "'''" not in text
        and not text.endswith("'")
        and not any(_is_control(ch) and ch not in "\t\n" for ch in text)
    )
    if literal_ok:
        # The newline after the opening delimiter is dropped by TOML; the text starts after it.
        return "'''\n" + text + "'''"
    return _basic(text)


def _ordered(entries: Mapping[str, str]) -> list[tuple[str, str]]:
    known = [(k, entries[k]) for k in _ORDER if k in entries]
    others = sorted((k, v) for k, v in entries.items() if k not in _ORDER)
    return known + others


def render(entries: Mapping[str, str], algorithm: str = DEFAULT_ALGORITHM) -> bytes:
    """The document bytes for ``entries`` (no check beyond the algorithm and value types)."""
    name = check_algorithm(algorithm)
    # Callers may be untyped (CLI, config files): check what the annotation promises.
    for key, value in cast(Mapping[object, object], entries).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InitDataError(f"init-data entry {key!r} must map a string to a string")
    parts = [f'version = "{INITDATA_VERSION}"\nalgorithm = "{name}"\n\n[data]\n']
    items = []
    for key, value in _ordered(entries):
        items.append(f"{_basic(key)} = {_value(value)}\n")
    parts.append("\n".join(items))
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError as e:
        raise InitDataError(f"init-data entry is not encodable as UTF-8: {e}") from e


def build_document(entries: Mapping[str, str], algorithm: str = DEFAULT_ALGORITHM) -> InitData:
    """Render ``entries`` and check the result as the guest and the broker will."""
    raw = render(entries, algorithm)
    init_data = InitData.from_bytes(raw)
    if dict(init_data.data) != dict(entries):
        # The writer's contract; a failure here is a custodes bug, never silent data loss.
        raise InitDataError("rendered init-data does not read back as the given entries")
    init_data.claims()  # aa.toml/cdh.toml must be TOML, policy.rego compile (policy_data)
    return init_data


def build(
    *,
    aa: str | None = None,
    cdh: str | None = None,
    policy: str | None = None,
    extra: Mapping[str, str] | None = None,
    algorithm: str = DEFAULT_ALGORITHM,
) -> InitData:
    """An init-data document with the agent's entries given as text (``None``: left out)."""
    entries: dict[str, str] = {}
    for key, value in (extra or {}).items():
        if key in _ORDER:
            raise InitDataError(f"init-data entry {key!r} has its own parameter")
        entries[key] = value
    for key, text in ((AA_CONFIG, aa), (CDH_CONFIG, cdh), (AGENT_POLICY, policy)):
        if text is not None:
            entries[key] = text
    return build_document(entries, algorithm)


def read_entry(path: Path) -> str:
    """A file's text exactly as stored (UTF-8, newlines untouched), for an init-data entry."""
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text: {e}") from e
