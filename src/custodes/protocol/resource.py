"""Resource paths (``repo/type/tag``) and ``kbs://`` resource URIs.

A path is exactly three segments, each matching upstream's segment rule (no leading dot, so
no ``.`` or ``..``; no ``%``, so no percent-encoded traversal) and at most
:data:`MAX_SEGMENT_LENGTH` characters. Anything else is refused, never normalised.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, NoReturn
from urllib.parse import quote, unquote_plus, urlencode

from custodes.errors import InvalidResourcePath

# \Z rather than $: "$" also matches before a trailing newline.
SEGMENT_RE: Final = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*\Z")
MAX_SEGMENT_LENGTH: Final = 128
SEGMENT_COUNT: Final = 3
SCHEME: Final = "kbs://"

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_AUTHORITY: Final = re.compile(
    rf"(?P<host>{_LABEL}(?:\.{_LABEL})*|\[(?P<ipv6>[0-9A-Fa-f:.]+)\])(?::(?P<port>[0-9]{{1,5}}))?"
)
_MAX_HOST_LENGTH: Final = 253
# Printable ASCII without space: the URI is refused, not repaired, if it holds anything else.
_URI_CHARS: Final = re.compile(r"[!-~]*")


def _fail(msg: str) -> NoReturn:
    raise InvalidResourcePath(msg)


def _check_segment(segment: object) -> str:
    if not isinstance(segment, str):
        _fail("resource path segment is not a string")
    if not segment:
        _fail("empty resource path segment")
    if len(segment) > MAX_SEGMENT_LENGTH:
        _fail(f"resource path segment longer than {MAX_SEGMENT_LENGTH} characters")
    if not SEGMENT_RE.match(segment):
        _fail(f"invalid resource path segment {segment!r}")
    return segment


@dataclass(frozen=True, slots=True)
class ResourcePath:
    """``<repo>/<type>/<tag>``."""

    repo: str
    type: str
    tag: str

    def __post_init__(self) -> None:
        for segment in (self.repo, self.type, self.tag):
            _check_segment(segment)

    @classmethod
    def parse(cls, path: str) -> ResourcePath:
        if not isinstance(path, str):
            _fail("resource path is not a string")
        return cls.from_segments(path.split("/"))

    @classmethod
    def from_segments(cls, segments: Sequence[str]) -> ResourcePath:
        if isinstance(segments, str | bytes) or len(segments) != SEGMENT_COUNT:
            _fail(f"a resource path has exactly {SEGMENT_COUNT} segments")
        repo, type_, tag = segments
        return cls(repo=repo, type=type_, tag=tag)

    @property
    def segments(self) -> tuple[str, str, str]:
        return (self.repo, self.type, self.tag)

    def __str__(self) -> str:
        return f"{self.repo}/{self.type}/{self.tag}"


def _parse_host(authority: str) -> str | None:
    if not authority:
        return None  # kbs:///repo/type/tag: the configured broker
    m = _AUTHORITY.fullmatch(authority)
    if m is None or len(m["host"]) > _MAX_HOST_LENGTH:
        _fail("invalid host in kbs:// URI")
    if m["ipv6"] is not None:
        try:
            ipaddress.IPv6Address(m["ipv6"])
        except ValueError as e:
            raise InvalidResourcePath("invalid IPv6 address in kbs:// URI") from e
    port = m["port"]
    if port is not None and not 1 <= int(port) <= 65535:
        _fail("invalid port in kbs:// URI")
    return authority


def _parse_query(query: str) -> dict[str, str]:
    out: dict[str, str] = {}
    if not query:
        return out
    for part in query.split("&"):
        raw_key, _, raw_value = part.partition("=")
        try:
            key = unquote_plus(raw_key, errors="strict")
            value = unquote_plus(raw_value, errors="strict")
        except UnicodeDecodeError as e:
            raise InvalidResourcePath("query is not UTF-8") from e
        if not key:
            _fail("empty query parameter name")
        if key in out:
            _fail(f"duplicate query parameter {key!r}")
        out[key] = value
    return out


@dataclass(frozen=True, slots=True)
class ResourceUri:
    """``kbs://[host[:port]]/<repo>/<type>/<tag>[?query]``; ``host`` ``None`` = default broker."""

    host: str | None
    path: ResourcePath
    query: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        # Read-only view of a private copy, so the frozen value cannot change underneath.
        object.__setattr__(self, "query", MappingProxyType(dict(self.query)))

    @classmethod
    def parse(cls, uri: str) -> ResourceUri:
        if not isinstance(uri, str):
            _fail("kbs:// URI is not a string")
        if not _URI_CHARS.fullmatch(uri):
            _fail("kbs:// URI must be printable ASCII without spaces")
        if not uri.startswith(SCHEME):
            _fail("not a kbs:// URI")
        rest = uri[len(SCHEME) :]
        if "#" in rest:
            _fail("kbs:// URI must not have a fragment")
        hier, has_query, query = rest.partition("?")
        authority, slash, path = hier.partition("/")
        if not slash:
            _fail("kbs:// URI has no resource path")
        return cls(
            host=_parse_host(authority),
            path=ResourcePath.parse(path),
            query=_parse_query(query) if has_query else {},
        )

    def __str__(self) -> str:
        out = f"{SCHEME}{self.host or ''}/{self.path}"
        if self.query:
            out += "?" + urlencode(dict(self.query), quote_via=quote)
        return out
