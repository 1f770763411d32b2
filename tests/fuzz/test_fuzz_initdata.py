"""Fuzz the init-data parsers: the TOML document (and the claims built from it), the pod
annotation (base64 of gzip) and the block image (magic, length, gzip, sector padding)."""

from __future__ import annotations

import gzip

from fuzz_support import (
    FUZZ,
    KEEP_FAILURES_READABLE,
    byte_inputs,
    check,
    mutated,
    text_inputs,
    vector,
)
from hypothesis import given
from hypothesis import strategies as st

from custodes._internal.b64 import b64std_decode, b64std_encode
from custodes.initdata.encoding import (
    decode_annotation,
    decode_image,
    encode_image,
    pack_annotation,
    pack_image,
)
from custodes.initdata.format import InitData

pytest_plugins = ["fuzz_report"]
pytestmark = KEEP_FAILURES_READABLE

_DIR = "guest-components/initdata"
TOMLS = [
    vector(f"{_DIR}/{name}.toml").decode()
    for name in (
        "kata-default-initdata",
        "website-initdata-example",
        "kata-howto-policy-annotation.decoded",
        "website-runtime-attestation-annotation.decoded",
    )
] + [vector("trustee/integration-tests/tests/init-data-with-policy.toml").decode()]
ANNOTATIONS = [
    vector(f"{_DIR}/{name}.b64").decode().strip()
    for name in ("kata-howto-policy-annotation", "website-runtime-attestation-annotation")
]
IMAGES = [vector(f"{_DIR}/kata-agent-testdata-initdata.img")] + [
    encode_image(InitData.parse(t)) for t in TOMLS[:2]
]
# TOML that nests deeply (tomllib recurses) and TOML values that are not strings.
HOSTILE_TOML = [
    'version = "0.1.0"\nalgorithm = "sha256"\n[data]\nx = ' + "[" * 5000 + "]" * 5000 + "\n",
    'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n"aa.toml" = "a = ' + "[" * 5000 + '"\n',
    'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n"policy.rego" = "policy_data := {"\n',
    'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n"cdh.toml" = "x = nan\\ny = 1979-05-27"\n',
    "a = { " * 2000 + "}" * 2000,
]


def _init_data(doc: InitData) -> InitData:
    doc.claims()  # the broker builds these from what the guest sent
    return doc


def test_seeds_parse() -> None:
    assert all(isinstance(_init_data(InitData.parse(t)), InitData) for t in TOMLS)
    assert all(isinstance(decode_annotation(a), InitData) for a in ANNOTATIONS)
    assert all(isinstance(decode_image(i), InitData) for i in IMAGES[1:])


@FUZZ
@given(text=text_inputs(TOMLS) | st.sampled_from(HOSTILE_TOML))
def test_fuzz_initdata_toml(text: str) -> None:
    check("initdata.toml", lambda t: _init_data(InitData.parse(t)), text, InitData)


@FUZZ
@given(
    value=st.one_of(
        text_inputs(ANNOTATIONS),
        # a well-formed container around a mutated document, and a mutated gzip member
        mutated([t.encode() for t in TOMLS]).map(pack_annotation),
        mutated([b64std_decode(a) for a in ANNOTATIONS]).map(b64std_encode),
        st.binary(max_size=512).map(gzip.compress).map(b64std_encode),
        st.sampled_from(HOSTILE_TOML).map(str.encode).map(pack_annotation),
    )
)
def test_fuzz_initdata_annotation(value: str) -> None:
    check("initdata.annotation", lambda v: _init_data(decode_annotation(v)), value, InitData)


@FUZZ
@given(
    image=st.one_of(
        byte_inputs(IMAGES),
        mutated([t.encode() for t in TOMLS]).map(pack_image),
        st.binary(max_size=512).map(pack_image),
    )
)
def test_fuzz_initdata_image(image: bytes) -> None:
    check("initdata.image", lambda i: _init_data(decode_image(i)), image, InitData)
