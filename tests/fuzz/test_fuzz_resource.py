"""Fuzz resource paths (``repo/type/tag``), ``kbs://`` resource URIs and the broker's reading
of a raw request path (tenant and segments, before any handler runs)."""

from __future__ import annotations

from fuzz_support import FUZZ, KEEP_FAILURES_READABLE, byte_inputs, check, text_inputs
from hypothesis import given
from hypothesis import strategies as st

from custodes.kbs.app import _dispatch_target
from custodes.protocol.resource import ResourcePath, ResourceUri

pytest_plugins = ["fuzz_report"]
pytestmark = KEEP_FAILURES_READABLE

PATHS = ["default/key/s", "my-repo/cosign-key/1.0", "a_b/c.d/e-f"]
URIS = [
    "kbs:///default/key/s",
    "kbs://broker.example:8080/repo/type/tag?version=1&x=%2F",
    "kbs://[::1]:443/a/b/c",
]
# Traversal and encoding tricks, as text: the segment rule refuses each of them.
TRICKS = st.sampled_from(
    ["..", ".", "%2e%2e", "%2f", "%252e", "\u2025", "\uff0e\uff0e", "\\", "\x00", "a\n", "", "~"]
)
RAW_PATHS = [
    b"/kbs/v0/resource/default/key/s",
    b"/tenants/bank/kbs/v0/resource/default/key/s?x=1",
    b"/kbs/v0/auth",
    b"/tenants/bank/kbs/v0/attest",
]


def _uri(text: str) -> ResourceUri:
    uri = ResourceUri.parse(text)
    assert ResourceUri.parse(str(uri)) == uri  # what is accepted prints back to itself
    return uri


@FUZZ
@given(
    path=text_inputs(PATHS)
    | st.lists(TRICKS | st.sampled_from(["a", "key"]), min_size=1, max_size=4).map("/".join)
)
def test_fuzz_resource_path(path: str) -> None:
    def parse(text: str) -> ResourcePath:
        parsed = ResourcePath.parse(text)
        assert str(parsed) == text  # accepted only as written, never normalised
        return parsed

    check("resource.path", parse, path, ResourcePath)


@FUZZ
@given(uri=text_inputs(URIS))
def test_fuzz_resource_uri(uri: str) -> None:
    check("resource.uri", _uri, uri, ResourceUri)


@FUZZ
@given(raw=byte_inputs(RAW_PATHS, max_random=256))
def test_fuzz_request_path(raw: bytes) -> None:
    def parse(value: bytes) -> tuple[str, list[str]]:
        tenant, segments = _dispatch_target(value)
        if segments[:1] == ["resource"] and len(segments) == 4:
            ResourcePath.from_segments(segments[1:])
        return tenant, segments

    check("kbs.request_path", parse, raw, tuple)
