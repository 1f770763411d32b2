"""The entry's canonical bytes are written as a fixed frame around the event's JCS bytes
(custodes.audit.entry._seal): they must equal rfc8785's encoding of the whole entry, for every
shape the log produces, or hashes would not verify elsewhere."""

from __future__ import annotations

import hashlib
import json

import rfc8785
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from custodes.audit.entry import MAX_ACTOR_CHARS, MAX_SEQ, AuditKind, build_entry, key_id
from custodes.types.json import Json

KEY = ec.generate_private_key(ec.SECP256R1())

# Every code point but lone surrogates (no UTF-8 form: refused).
characters = st.characters(exclude_categories=["Cs"])
texts = st.text(characters, max_size=40)
# Within ±2**53: JCS writes a larger float as integer digits, which read back as an int out
# of JCS's domain (the broker records no such numbers).
scalars: st.SearchStrategy[Json] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53) + 1, 2**53 - 1),
    texts,
    st.floats(-(2.0**53), 2.0**53, exclude_min=True, exclude_max=True),
)
json_values: st.SearchStrategy[Json] = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)
streams = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,20}", fullmatch=True)
actors = st.none() | st.text(characters, min_size=1, max_size=MAX_ACTOR_CHARS)


@settings(max_examples=400, deadline=None)
@given(
    seq=st.integers(0, MAX_SEQ),
    time_ms=st.integers(0, 253402300799999),
    stream=streams,
    kind=st.sampled_from(list(AuditKind)),
    actor=actors,
    event=st.dictionaries(texts, json_values, max_size=6),
    prev=st.binary(min_size=32, max_size=32).map(bytes.hex),
)
def test_the_frame_is_jcs(
    seq: int,
    time_ms: int,
    stream: str,
    kind: AuditKind,
    actor: str | None,
    event: dict[str, Json],
    prev: str,
) -> None:
    entry = build_entry(
        seq=seq,
        time_ms=time_ms,
        stream=stream,
        kind=kind,
        actor=actor,
        event=event,
        prev=prev,
        signing_key=KEY,
    )
    signed = rfc8785.dumps(entry.signed_part())
    assert entry.hash == hashlib.sha256(signed).hexdigest()
    assert entry.kid == key_id(KEY.public_key())
    # What the writer stores is what rfc8785 gives for the whole entry.
    from custodes.audit import entry as entry_module

    content = entry_module._content(kind, actor, event)
    _, raw = entry_module._seal(
        content,
        seq=seq,
        time_ms=time_ms,
        stream=stream,
        prev=prev,
        kid=entry.kid,
        kid_json=json.dumps(entry.kid).encode(),
        signing_key=KEY,
    )
    parsed = json.loads(raw)
    assert raw == rfc8785.dumps(parsed)
    assert {k: v for k, v in parsed.items() if k not in ("hash", "sig")} == entry.signed_part()


def test_control_characters_and_separators_in_the_actor() -> None:
    actor = 'a\x00\x1f\x7f\u2028\u2029"\\/\b\f\n\r\té😀'
    entry = build_entry(
        seq=1,
        time_ms=0,
        stream="s",
        kind="admin",
        actor=actor,
        event={"x": actor},
        prev="0" * 64,
        signing_key=KEY,
    )
    assert entry.hash == hashlib.sha256(rfc8785.dumps(entry.signed_part())).hexdigest()
