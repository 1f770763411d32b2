"""CC event log parsing and replay against trustee's eventlog vectors (raw logs + golden JSON)."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest

from custodes.attestation.eventlog import ALG_SHA256, ALG_SHA384, CcEventLog
from custodes.errors import MalformedEvidence

GOLDEN_LOGS = [
    "CCEL_data",
    "CCEL_data_ovmf",
    "CCEL_data_grub",
    "CCEL_data_grub_gke",
    "CCEL_AAEL_alibabacloud",
    "CCEL_data_csv",
]

# RTMR0..3 (CC-MR 1..4) that trustee's eventlog tests expect these logs to replay to.
EXPECTED_RTMRS = {
    "CCEL_data": (
        "2dc712306a963eadb894ad47dbaa17df44814151555aee11cbb843becca88950ffd079664902e6f22c66f7c8213543f4",
        "0fa3be56af61208bbd179dc7b124988eb929319154663c539d6f46445ecac2fec287075047ff7bd1922829fec28cd3cf",
        "00" * 48,
        "00" * 48,
    ),
    "CCEL_data_ovmf": (
        "8566f998798db09443b244c62de9a3041fb02e2e6936c4396d784bba2e90177329ec5aba3bb484404f2ab9cc90abe193",
        "775b9f6bfe99f8a31396f0d0218e67ffa796d3b96ccf961cbb0deba48c79c00f082cda1a5567c1c16305f1fc210c13c6",
        "94eaf7a7bf398ed8d888c91057ae0261802e4f3df084213a76ca7f0b5055ac9d2241de43cd58d9e8b49c503bbf25f34a",
        "00" * 48,
    ),
    "CCEL_data_grub": (
        "cec0a104f691f60da2387fea3c2de00c4ac035e2bb479ff02edcce69039d9e9907f0b3e55031da3dc7038f423adebd79",
        "6c289e0c62182d41ebe97bdbc9872d10998a08eaa86adcdc684001a363207ee72942c7522cdf00a4bbc3d784bed7b670",
        "08919d017ba0e52cd6d966351c7de16fe76c1d3d3d3da4554239e4c7d16cb8b82a94e7eaea3a0e6e18eb690b999fd31e",
        "00" * 48,
    ),
    "CCEL_data_gcp": (
        "3300980705adf09d28b707b79699d9874892164280832be2c386a715b6e204e0897fb564a064f810659207ba862b304f",
        "204d49f78d29918fe7b2f694e76653861a0c2a018987d2c3a54266eff737232524cf0af68c4d180e2f8c2c0937f21967",
        "00" * 48,
        "00" * 48,
    ),
    # Has EV_NO_ACTION events (at index 0), which replay skips.
    "CCEL_data_grub_gke": (
        "bc9945139042cf2cc75caf920aa57f14884ecfd7e893bccc51250c8ce90eb53ce72741e6adaa18183eb1331a87d4544a",
        "c17cb288a4dee302bb9ed8d27257a168f3264ad68cab53757f37eeaa7039657fa887cad65cf910e0fdc435ff110f8a7b",
        "334aeba2c985f8886cea97d1ecffbd512769d528b9a94009583db667ad7d2faa7d37fa145d75b192ceee2d2f10b2eb6d",
        "00" * 48,
    ),
}


@pytest.fixture(scope="module")
def logs(vectors: Path) -> Path:
    return vectors / "trustee" / "deps" / "eventlog" / "test_data"


def _spec_id_header(algorithms: list[tuple[int, int]]) -> bytes:
    body = b"Spec ID Event03\x00" + struct.pack("<IBBBB", 0, 0, 2, 0, 2)
    body += struct.pack("<I", len(algorithms))
    body += b"".join(struct.pack("<HH", a, s) for a, s in algorithms)
    body += b"\x00"
    return struct.pack("<II", 0, 3) + bytes(20) + struct.pack("<I", len(body)) + body


def _entry(index: int, event_type: int, event: bytes, digests: list[tuple[int, bytes]]) -> bytes:
    out = struct.pack("<III", index, event_type, len(digests))
    out += b"".join(struct.pack("<H", a) + d for a, d in digests)
    return out + struct.pack("<I", len(event)) + event


SHA384_HEADER = _spec_id_header([(ALG_SHA384, 48)])


@pytest.mark.parametrize("name", GOLDEN_LOGS)
def test_ccel_parse_matches_upstream_golden(logs: Path, name: str) -> None:
    parsed = CcEventLog.from_bytes((logs / name).read_bytes())
    expected = json.loads((logs / f"{name}_out.json").read_text())
    assert {"uefi_event_logs": parsed.to_json()} == expected


@pytest.mark.parametrize("name", sorted(EXPECTED_RTMRS))
def test_ccel_replay_matches_upstream_rtmrs(logs: Path, name: str) -> None:
    parsed = CcEventLog.from_bytes((logs / name).read_bytes())
    replayed = tuple(parsed.replay(index).hex() for index in (1, 2, 3, 4))
    assert replayed == EXPECTED_RTMRS[name]


def test_ccel_aael_entries_are_decoded(logs: Path) -> None:
    parsed = CcEventLog.from_bytes((logs / "CCEL_AAEL_alibabacloud").read_bytes())
    tags = [e for e in parsed.entries if e.type_name == "EV_EVENT_TAG"]
    assert [t.details.unicode_name for t in tags] == ["AAEL", "AAEL"]
    assert tags[1].details.data == {
        "content": {"key": "value", "nested-key": {"sub-key": "value"}},
        "domain": "coco.com",
        "operation": "some-operation",
    }
    assert all(t.digest_matches_event for t in tags)


def test_ccel_aael_content_that_is_not_json_stays_a_string() -> None:
    text = b"example.org op NaN"
    tagged = struct.pack("<II", 0x4141454C, len(text)) + text
    log = SHA384_HEADER + _entry(4, 6, tagged, [(ALG_SHA384, hashlib.sha384(tagged).digest())])
    details = CcEventLog.from_bytes(log).entries[0].details
    assert details.data == {"content": "NaN", "domain": "example.org", "operation": "op"}
    assert details.string == "example.org op NaN"


def test_ccel_sm3_digests_are_parsed(logs: Path) -> None:
    parsed = CcEventLog.from_bytes((logs / "CCEL_data_csv").read_bytes())
    assert {d.to_json()["alg"] for e in parsed.entries for d in e.digests} == {"SM3"}


def test_ccel_replay_extends_from_zero() -> None:
    d1, d2 = hashlib.sha384(b"one").digest(), hashlib.sha384(b"two").digest()
    log = (
        SHA384_HEADER
        + _entry(2, 0x80000007, b"one", [(ALG_SHA384, d1)])
        + _entry(2, 0x80000007, b"two", [(ALG_SHA384, d2)])
        + _entry(2, 0x3, b"", [(ALG_SHA384, bytes(48))])  # EV_NO_ACTION: not extended
        + b"\xff" * 8
    )
    parsed = CcEventLog.from_bytes(log)
    step = hashlib.sha384(bytes(48) + d1).digest()
    assert parsed.replay(2) == hashlib.sha384(step + d2).digest()
    assert parsed.replay(1) == bytes(48)
    assert [e.digest_matches_event for e in parsed.entries] == [True, True, False]


def test_ccel_bytes_after_end_marker_are_ignored() -> None:
    log = SHA384_HEADER + _entry(1, 0x4, b"\x00" * 4, []) + b"\xff" * 8 + b"garbage"
    assert len(CcEventLog.from_bytes(log).entries) == 1


def test_ccel_log_may_end_without_marker() -> None:
    log = SHA384_HEADER + _entry(1, 0x4, b"\x00" * 4, [])
    assert CcEventLog.from_bytes(log).entries[0].type_name == "EV_SEPARATOR"


def test_ccel_replay_of_undeclared_algorithm_is_refused() -> None:
    parsed = CcEventLog.from_bytes(SHA384_HEADER)
    with pytest.raises(MalformedEvidence):
        parsed.replay(1, 0x9999)


@pytest.mark.parametrize(
    ("label", "log"),
    [
        ("empty", b""),
        ("header only partly", SHA384_HEADER[:30]),
        ("first event not EV_NO_ACTION", struct.pack("<II", 0, 4) + SHA384_HEADER[8:]),
        ("bad signature", SHA384_HEADER.replace(b"Spec ID Event03", b"Spec ID Event02")),
        ("wrong digest size", _spec_id_header([(ALG_SHA384, 32)])),
        ("unknown algorithm", _spec_id_header([(0x99, 48)])),
        ("no algorithm", _spec_id_header([])),
        ("unknown event type", SHA384_HEADER + _entry(1, 0x7777, b"", [])),
        (
            "undeclared digest algorithm",
            SHA384_HEADER + _entry(1, 4, b"", [(ALG_SHA256, bytes(32))]),
        ),
        ("truncated digest", SHA384_HEADER + _entry(1, 4, b"", [(ALG_SHA384, bytes(48))])[:-30]),
        ("truncated event data", SHA384_HEADER + _entry(1, 0x80000007, b"abcdef", [])[:-2]),
        ("short tail", SHA384_HEADER + b"\x01\x00\x00"),
        ("non-UTF-8 EV_EFI_ACTION", SHA384_HEADER + _entry(1, 0x80000007, b"\xff\xfe", [])),
        ("truncated EFI variable", SHA384_HEADER + _entry(1, 0x80000001, bytes(20), [])),
        ("truncated tagged event", SHA384_HEADER + _entry(1, 6, struct.pack("<II", 1, 9), [])),
        (
            "bad device path",
            SHA384_HEADER
            + _entry(
                1,
                0x80000003,
                bytes(24) + b"\x09" + bytes(7) + b"\x04\x01\x02\x00\x7f\xff\x04\x00",
                [],
            ),
        ),
    ],
)
def test_ccel_malformed_logs_are_refused(label: str, log: bytes) -> None:
    with pytest.raises(MalformedEvidence):
        CcEventLog.from_bytes(log)


def test_ccel_tampered_digest_changes_replay(logs: Path) -> None:
    raw = bytearray((logs / "CCEL_data").read_bytes())
    original = CcEventLog.from_bytes(bytes(raw)).replay(1)
    # The first measured event's SHA-384 digest starts after its 14-byte entry header.
    first = raw.index(bytes.fromhex("c6e6d33de4104b81"))
    raw[first] ^= 0x01
    tampered = CcEventLog.from_bytes(bytes(raw))
    assert tampered.replay(1) != original
    assert tampered.entries[0].digests[0].digest.hex().startswith("c7e6d33d")


def _device_path_event(nodes: bytes) -> bytes:
    path = nodes + b"\x7f\xff\x04\x00"
    return bytes(24) + struct.pack("<Q", len(path)) + path


def _node(node_type: int, sub_type: int, data: bytes) -> bytes:
    return struct.pack("<BBH", node_type, sub_type, 4 + len(data)) + data


@pytest.mark.parametrize(
    ("node", "text"),
    [
        (_node(1, 1, b"\x02\x01"), "Pci(2,1)"),
        (_node(2, 1, bytes.fromhex("d041030a02000000")), "ACPI(PNP0A03,2)"),
        (_node(3, 5, b"\x01\x02"), "USB(1,2)"),
        (
            _node(3, 0x0B, bytes.fromhex("001320f5fa77") + bytes(26) + b"\x01"),
            "Mac(001320F5FA77,0x01)",
        ),
        (
            _node(3, 0x0C, bytes.fromhex("0100a8c06400a8c00000bc0c0600010000000000000000")),
            "IPv4(192.168.0.100,TCP,Static,192.168.0.1)",
        ),
        (_node(3, 0x15, bytes(range(8)) * 2), "FibreEx(0x0001020304050607,0x0001020304050607)"),
        (
            _node(
                4,
                1,
                struct.pack("<IQQ", 1, 0x800, 0x2EE000)
                + bytes.fromhex("431202a0")
                + bytes(12)
                + b"\x01\x01",
            ),
            "HD(1,MBR,0xa0021243,0x800,0x2ee000)",
        ),
        (_node(4, 4, "k\\v".encode("utf-16-le") + b"\x00\x00"), "File(k\\v)"),
        (_node(5, 1, b"\x80\x00\x00\x00ABC\x00"), "BBS(DEV,ABC,0)"),
        (_node(3, 23, b"\x01\x02"), "Path(3,23,0102)"),
        (_node(1, 1, b"\x02"), "Path(1,1,02)"),
    ],
)
def test_ccel_device_path_text(node: bytes, text: str) -> None:
    log = SHA384_HEADER + _entry(1, 0x80000003, _device_path_event(node), [])
    assert CcEventLog.from_bytes(log).entries[0].details.device_paths == (text,)
