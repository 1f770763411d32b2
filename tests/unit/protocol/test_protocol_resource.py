"""Resource paths and kbs:// URIs."""

from __future__ import annotations

import pytest

from custodes.errors import InvalidResourcePath
from custodes.protocol.resource import MAX_SEGMENT_LENGTH, SEGMENT_RE, ResourcePath, ResourceUri


@pytest.mark.parametrize(
    "path",
    [
        "default/key/1",
        "my-repo/type_1/tag.v2",
        "_x/-y/z..",
        "a.b/c.d/e.f",
        f"{'a' * MAX_SEGMENT_LENGTH}/b/c",
        "REPO/Type/TAG",
    ],
)
def test_valid_paths(path: str) -> None:
    parsed = ResourcePath.parse(path)
    assert str(parsed) == path
    assert "/".join(parsed.segments) == path
    assert ResourcePath.from_segments(path.split("/")) == parsed


def test_path_fields() -> None:
    p = ResourcePath.parse("default/key/1")
    assert (p.repo, p.type, p.tag) == ("default", "key", "1")


@pytest.mark.parametrize(
    "path",
    [
        "",
        "a/b",
        "a/b/c/d",
        "a//c",
        "/a/b/c",
        "a/b/c/",
        "../b/c",
        "a/../c",
        "a/b/..",
        "./b/c",
        ".hidden/b/c",
        "a/.b/c",
        "%2e%2e/b/c",
        "a/b/%2e%2e",
        "a%2fb/c/d",
        "a b/c/d",
        "a/b/c\n",
        "a/b/c\x00",
        "a/b\\c/d",
        "é/b/c",
        "a/b/c?x=1",
        f"{'a' * (MAX_SEGMENT_LENGTH + 1)}/b/c",
    ],
)
def test_invalid_paths(path: str) -> None:
    with pytest.raises(InvalidResourcePath):
        ResourcePath.parse(path)


def test_segment_regex_refuses_trailing_newline() -> None:
    assert SEGMENT_RE.match("abc")
    assert not SEGMENT_RE.match("abc\n")


@pytest.mark.parametrize("segments", ["abc", ["a", "b"], ["a", "b", "c", "d"], ("a", "", "c")])
def test_from_segments_refusals(segments: object) -> None:
    with pytest.raises(InvalidResourcePath):
        ResourcePath.from_segments(segments)  # type: ignore[arg-type]


def test_direct_construction_is_validated() -> None:
    with pytest.raises(InvalidResourcePath):
        ResourcePath(repo="..", type="b", tag="c")
    with pytest.raises(InvalidResourcePath):
        ResourcePath(repo="a", type=1, tag="c")  # type: ignore[arg-type]


def test_parse_non_string_refused() -> None:
    with pytest.raises(InvalidResourcePath):
        ResourcePath.parse(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidResourcePath):
        ResourceUri.parse(b"kbs:///a/b/c")  # type: ignore[arg-type]


# --- kbs:// URIs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "host", "path", "query"),
    [
        ("kbs:///default/key/1", None, "default/key/1", {}),
        ("kbs://kbs.example:8080/default/key/1", "kbs.example:8080", "default/key/1", {}),
        ("kbs://10.0.0.1/a/b/c", "10.0.0.1", "a/b/c", {}),
        ("kbs://[::1]:8080/a/b/c", "[::1]:8080", "a/b/c", {}),
        ("kbs://localhost/a/b/c?version=2", "localhost", "a/b/c", {"version": "2"}),
        ("kbs:///a/b/c?x=a%20b&y=", None, "a/b/c", {"x": "a b", "y": ""}),
        ("kbs:///a/b/c?", None, "a/b/c", {}),
    ],
)
def test_valid_uris(uri: str, host: str | None, path: str, query: dict[str, str]) -> None:
    parsed = ResourceUri.parse(uri)
    assert parsed.host == host
    assert parsed.path == ResourcePath.parse(path)
    assert dict(parsed.query) == query
    assert ResourceUri.parse(str(parsed)) == parsed


def test_uri_str() -> None:
    assert str(ResourceUri.parse("kbs:///default/key/1")) == "kbs:///default/key/1"
    assert str(ResourceUri.parse("kbs://h:1/a/b/c?k=v")) == "kbs://h:1/a/b/c?k=v"
    uri = ResourceUri(host=None, path=ResourcePath.parse("a/b/c"), query={"k": "a b&c"})
    assert str(uri) == "kbs:///a/b/c?k=a%20b%26c"


def test_uri_query_is_read_only() -> None:
    source = {"k": "v"}
    uri = ResourceUri(host=None, path=ResourcePath.parse("a/b/c"), query=source)
    source["k"] = "changed"
    assert uri.query["k"] == "v"
    with pytest.raises(TypeError):
        uri.query["k"] = "x"  # type: ignore[index]


@pytest.mark.parametrize(
    "uri",
    [
        "http://host/a/b/c",
        "KBS:///a/b/c",
        "kbs:/a/b/c",
        "kbs://host",
        "kbs://host/a/b",
        "kbs://host/a/b/c/d",
        "kbs:///../b/c",
        "kbs:///a/../c",
        "kbs:///%2e%2e/b/c",
        "kbs:///a/b/%2E%2E",
        "kbs:///a//c",
        "kbs:///.a/b/c",
        "kbs://user@host/a/b/c",
        "kbs://host:0/a/b/c",
        "kbs://host:99999/a/b/c",
        "kbs://host:/a/b/c",
        "kbs://[zz::1]/a/b/c",
        "kbs://-bad/a/b/c",
        "kbs://ho st/a/b/c",
        "kbs:///a/b/c#frag",
        "kbs:///a/b/c?x=1&x=2",
        "kbs:///a/b/c?=v",
        "kbs:///a/b/c?x=%ff",
        "kbs:///a b/c/d",
        "kbs:///é/b/c",
        "kbs:///a/b/c\n",
        f"kbs:///{'a' * (MAX_SEGMENT_LENGTH + 1)}/b/c",
    ],
)
def test_invalid_uris(uri: str) -> None:
    with pytest.raises(InvalidResourcePath):
        ResourceUri.parse(uri)
