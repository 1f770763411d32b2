"""The ``tpm`` evidence JSON: upstream's vector round-trips; every malformation is refused."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from custodes.attestation.verifiers.tpm.evidence import TpmEvidence, TpmQuote
from custodes.errors import MalformedEvidence


@pytest.fixture(scope="module")
def vector(vectors: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (vectors / "trustee/deps/verifier/test_data/tpm_evidence.json").read_text()
    )
    return data


def test_vector_round_trips(vector: dict[str, Any]) -> None:
    evidence = TpmEvidence.from_json(vector)
    assert len(evidence.quote.pcrs) == 24
    assert evidence.quote.pcrs[17] == b"\xff" * 32
    assert evidence.ak_public[:2] == b"\x30\x82"  # DER SEQUENCE
    assert evidence.to_json() == vector
    assert TpmEvidence.from_json(json.dumps(vector)) == evidence
    assert TpmEvidence.from_json(json.dumps(vector).encode()) == evidence


def test_unknown_keys_ignored_and_upper_hex_accepted(vector: dict[str, Any]) -> None:
    changed = copy.deepcopy(vector)
    changed["report_data"] = "ignored, as upstream"
    changed["tpm_quote"]["pcrs"][17] = "F" * 64
    assert TpmEvidence.from_json(changed).quote.pcrs[17] == b"\xff" * 32


MUTATIONS = [
    "not-json-text",
    "not-an-object",
    "no-ak",
    "no-quote",
    "quote-not-object",
    "ak-not-string",
    "ak-url-alphabet",
    "ak-unpadded",
    "signature-bad-b64",
    "message-missing",
    "pcrs-not-list",
    "pcrs-23",
    "pcrs-25",
    "pcr-31-bytes",
    "pcr-33-bytes",
    "pcr-not-hex",
    "pcr-with-space",
    "pcr-not-string",
]


def _mutate(vector: dict[str, Any], name: str) -> object:
    ev = copy.deepcopy(vector)
    quote = ev["tpm_quote"]
    if name == "not-json-text":
        return "{not json"
    if name == "not-an-object":
        return [ev]
    if name == "no-ak":
        del ev["ak_public"]
    elif name == "no-quote":
        del ev["tpm_quote"]
    elif name == "quote-not-object":
        ev["tpm_quote"] = "x"
    elif name == "ak-not-string":
        ev["ak_public"] = 5
    elif name == "ak-url-alphabet":
        ev["ak_public"] = ev["ak_public"].replace("+", "-").replace("/", "_")
    elif name == "ak-unpadded":
        ev["ak_public"] = ev["ak_public"] + "A"
    elif name == "signature-bad-b64":
        quote["signature"] = "!!" + quote["signature"][2:]
    elif name == "message-missing":
        del quote["message"]
    elif name == "pcrs-not-list":
        quote["pcrs"] = "00" * 32
    elif name == "pcrs-23":
        quote["pcrs"] = quote["pcrs"][:23]
    elif name == "pcrs-25":
        quote["pcrs"] = [*quote["pcrs"], "00" * 32]
    elif name == "pcr-31-bytes":
        quote["pcrs"][3] = "00" * 31
    elif name == "pcr-33-bytes":
        quote["pcrs"][3] = "00" * 33
    elif name == "pcr-not-hex":
        quote["pcrs"][3] = "zz" * 32
    elif name == "pcr-with-space":
        quote["pcrs"][3] = "00 " + "00" * 31
    elif name == "pcr-not-string":
        quote["pcrs"][3] = 0
    return ev


@pytest.mark.parametrize("name", MUTATIONS)
def test_malformed(vector: dict[str, Any], name: str) -> None:
    with pytest.raises(MalformedEvidence) as info:
        TpmEvidence.from_json(_mutate(vector, name))
    assert info.type is MalformedEvidence


def test_quote_requires_24_pcrs_of_32_bytes() -> None:
    with pytest.raises(MalformedEvidence):
        TpmQuote(signature=b"", message=b"", pcrs=(bytes(32),) * 23)
    with pytest.raises(MalformedEvidence):
        TpmQuote(signature=b"", message=b"", pcrs=(bytes(32),) * 23 + (bytes(31),))
