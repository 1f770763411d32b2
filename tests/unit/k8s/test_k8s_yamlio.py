"""Strict YAML in and out."""

from __future__ import annotations

import pytest

from custodes.k8s.errors import ManifestError
from custodes.k8s.yamlio import MAX_MANIFEST_BYTES, dump_documents, load_documents


def test_multi_document_round_trip_keeps_order_and_scripts() -> None:
    text = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata:\n"
        "  script: |\n    echo one\n    echo two\n  when: 2024-01-01\n  flag: 'yes'\n"
        "---\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n"
    )
    docs = load_documents(text)
    assert [d["kind"] for d in docs] == ["ConfigMap", "Namespace"]  # empty document dropped
    assert docs[0]["data"]["when"] == "2024-01-01"  # a timestamp stays a string
    out = dump_documents(docs)
    assert "  script: |\n    echo one\n    echo two\n" in out
    assert out.startswith("---\napiVersion: v1\nkind: ConfigMap\n")
    assert load_documents(out) == docs


def test_strings_that_look_like_other_types_survive_the_round_trip() -> None:
    docs = [{"a": "true", "b": "0777", "c": "null", "d": "1e3", "e": "x\n  y ", "f": "=", "g": ""}]
    assert load_documents(dump_documents(docs)) == docs


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("a: 1\na: 2\n", "duplicate key 'a'"),
        ("x: &anchor {b: 1}\ny: *anchor\n", "aliases"),
        ("x: {b: 1}\ny:\n  <<: {c: 2}\n", "merge keys"),
        ("- 1\n- 2\n", "not a mapping"),
        ("a: [\n", "not valid YAML"),
        ("1: x\n", "is not a string"),
        ("a: !!binary aGVsbG8=\n", "no JSON form"),
        ("a: !!python/object:os.system {}\n", "not valid YAML"),
    ],
)
def test_refusals(text: str, needle: str) -> None:
    with pytest.raises(ManifestError, match=needle):
        load_documents(text)


def test_oversized_manifest_refused() -> None:
    with pytest.raises(ManifestError, match="larger than"):
        load_documents("a: " + "x" * MAX_MANIFEST_BYTES)
