"""``custodes run --dataset``: the spec, the memory-backed check, the plan, and the launcher's
dataset step against a real broker (sample TEE) with a real data hub."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from custodes.datasets.errors import DatasetKeyError, DatasetPathError, KeyIdMismatch
from custodes.datasets.files import encrypt_path
from custodes.datasets.keys import generate_key
from custodes.errors import ConfigError
from custodes.guest.agent import AttestationAgent
from custodes.guest.attester.sample import SampleAttester
from custodes.guest.cdh import ConfidentialDataHub
from custodes.guest.config import GuestConfig, broker_from_url, parse_config
from custodes.guest.dataset_launch import (
    DatasetLaunchError,
    DatasetSpec,
    DatasetSpecError,
    Mount,
    NotMemoryBacked,
    check_memory_backed,
    existing_ancestor,
    fetch_key,
    filesystem_of,
    parse_mountinfo,
    plan,
)
from custodes.guest.launcher import prepare
from custodes.protocol.resource import ResourcePath, ResourceUri
from custodes.sealed.envelope import seal_envelope
from custodes.sealed.keys import generate_signing_key, public_jwk
from custodes.sealed.payload import VaultPayload
from custodes.sealed.seal import seal
from custodes.types.secret import Secret
from live_broker import LiveBroker

URI = "kbs:///default/dataset/tx"
KID = "kbs:///default/sealing/signer"
DATA = b"id,amount,is_fraud\n" + b"".join(b"t%06d,%d.50,0\n" % (i, i) for i in range(3000))


def _tmpfs(path: Path) -> bool:
    try:
        check_memory_backed(path)
    except NotMemoryBacked:
        return False
    return True


@pytest.fixture
def shm(tmp_path: Path) -> Iterator[Path]:
    """A private directory on tmpfs (/dev/shm), removed after the test."""
    if not _tmpfs(Path("/dev/shm")):
        pytest.skip("/dev/shm is not tmpfs on this machine")
    d = Path(tempfile.mkdtemp(prefix="custodes-test-", dir="/dev/shm"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def persistent(tmp_path: Path) -> Path:
    if _tmpfs(tmp_path):
        pytest.skip("the temporary directory is on tmpfs here; no persistent path to refuse")
    return tmp_path


def _encrypted(tmp_path: Path, key: Secret[bytes], key_id: str = URI) -> Path:
    plain = tmp_path / "tx.csv"
    plain.write_bytes(DATA)
    enc = tmp_path / "tx.csv.cdx"
    encrypt_path(plain, enc, key, key_id, chunk_size=4096)
    plain.unlink()
    return enc


# --- the spec -----------------------------------------------------------------------------


def test_spec_with_a_uri() -> None:
    spec = DatasetSpec.parse(f"{URI}=/data/tx.csv.cdx:/dev/shm/tx.csv")
    assert spec == DatasetSpec(URI, Path("/data/tx.csv.cdx"), Path("/dev/shm/tx.csv"))
    assert not spec.sealed and spec.key_id() == URI


def test_spec_with_a_host_and_port_and_colons_in_the_source() -> None:
    spec = DatasetSpec.parse("kbs://broker.example:8080/a/b/c=/data/x:y.cdx:/dev/shm/x")
    assert spec.key_id() == "kbs://broker.example:8080/a/b/c"
    # The split is at the last ':', so the plaintext path is the part after it.
    assert spec.encrypted == Path("/data/x:y.cdx") and spec.plaintext == Path("/dev/shm/x")


@pytest.mark.parametrize(
    "text",
    [
        "kbs:///a/b/c",  # no paths
        "kbs:///a/b/c=/data/x",  # no plaintext path
        "=/data/x:/dev/shm/x",  # no key
        "kbs:///a/b/c=:/dev/shm/x",  # empty source
        "kbs:///a/b/c=/data/x:",  # empty target
    ],
)
def test_spec_shape_refused(text: str) -> None:
    with pytest.raises(DatasetSpecError):
        DatasetSpec.parse(text)


@pytest.mark.parametrize(
    "key",
    [
        "kbs:///a/b",  # two segments
        "kbs:///a/../c",  # traversal
        "https://a/b/c",  # not kbs://
        "kbs:///a/b/c?x",  # a query (the '=' would split there)
    ],
)
def test_spec_key_refused(key: str) -> None:
    with pytest.raises(DatasetSpecError):
        DatasetSpec.parse(f"{key}=/data/x:/dev/shm/x")


def test_sealed_key_names_its_vault_resource() -> None:
    sealed = seal(VaultPayload(name=URI), generate_signing_key(), KID)
    spec = DatasetSpec.parse(f"{sealed}=/data/x:/dev/shm/x")
    assert spec.sealed and spec.key_id() == URI


def test_sealed_envelope_key_refused() -> None:
    envelope = seal_envelope(b"k" * 32, kek=b"e" * 32, kek_uri=ResourceUri.parse(URI))
    sealed = seal(envelope, _signer(), KID)
    with pytest.raises(DatasetSpecError, match="vault"):
        DatasetSpec.parse(f"{sealed}=/data/x:/dev/shm/x")


def test_malformed_sealed_key_refused() -> None:
    with pytest.raises(DatasetSpecError, match="sealed secret"):
        DatasetSpec.parse("sealed.abc.def=/data/x:/dev/shm/x")


def test_sealed_key_whose_vault_name_is_not_a_resource_refused() -> None:
    sealed = seal(VaultPayload(name="vault/path/key"), _signer(), KID)
    with pytest.raises(DatasetSpecError, match="kbs://"):
        DatasetSpec.parse(f"{sealed}=/data/x:/dev/shm/x")


def _signer() -> ec.EllipticCurvePrivateKey:
    return generate_signing_key()


def test_config_datasets_table(tmp_path: Path) -> None:
    raw = {"datasets": [{"key": URI, "encrypted": "tx.cdx", "plaintext": "/dev/shm/tx.csv"}]}
    config = parse_config(raw, tmp_path)
    assert config.datasets == (DatasetSpec(URI, tmp_path / "tx.cdx", Path("/dev/shm/tx.csv")),)


@pytest.mark.parametrize(
    "table",
    [
        {"key": URI, "encrypted": "x"},  # no plaintext
        {"key": URI, "encrypted": "x", "plaintext": "y", "mode": "fifo"},  # unknown setting
    ],
)
def test_config_datasets_table_refused(tmp_path: Path, table: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"datasets\[0\]"):
        parse_config({"datasets": [table]}, tmp_path)


def test_config_datasets_bad_key_refused(tmp_path: Path) -> None:
    table = {"key": "kbs:///a/b", "encrypted": "x", "plaintext": "y"}
    with pytest.raises(DatasetSpecError):
        parse_config({"datasets": [table]}, tmp_path)


# --- memory-backed or not -----------------------------------------------------------------


def test_parse_the_real_mountinfo() -> None:
    mounts = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    assert any(m.mount_point == "/" for m in mounts)


def test_parse_mountinfo_unescapes_and_reads_optional_fields() -> None:
    text = (
        "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 shared:2 - ext3 /dev/root rw\n"
        "40 35 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=1024k\n"
    )
    assert parse_mountinfo(text) == [
        Mount((98, 0), "/mnt/with space", "ext3"),
        Mount((0, 23), "/dev/shm", "tmpfs"),
    ]


@pytest.mark.parametrize(
    "line", ["36 35 98:0 /mnt1 /mnt rw", "x y zz / /mnt rw - ext4 /dev/sda rw"]
)
def test_malformed_mountinfo_refused(line: str) -> None:
    with pytest.raises(NotMemoryBacked):
        parse_mountinfo(line)


def test_filesystem_by_device(tmp_path: Path) -> None:
    st = tmp_path.stat()
    device = (os.major(st.st_dev), os.minor(st.st_dev))
    mounts = [Mount(device, "/elsewhere", "ramfs"), Mount((999, 999), "/", "ext4")]
    assert filesystem_of(tmp_path, mounts).fs_type == "ramfs"


def test_filesystem_by_longest_prefix_when_no_device_matches(tmp_path: Path) -> None:
    mounts = [
        Mount((999, 1), "/", "ext4"),
        Mount((999, 2), str(tmp_path.parent), "btrfs"),
        Mount((999, 3), str(tmp_path.parent), "tmpfs"),  # mounted over it: this one counts
        Mount((999, 4), str(tmp_path) + "-sibling", "ext4"),
    ]
    assert filesystem_of(tmp_path, mounts).fs_type == "tmpfs"


def test_filesystem_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotMemoryBacked):
        filesystem_of(tmp_path, [Mount((999, 1), "/nowhere", "tmpfs")])


def test_existing_ancestor(tmp_path: Path) -> None:
    assert existing_ancestor(tmp_path / "a" / "b" / "c.csv") == tmp_path.resolve()


def test_dev_shm_is_memory_backed_even_below_missing_directories(shm: Path) -> None:
    assert check_memory_backed(shm / "new" / "dir" / "tx.csv") in ("tmpfs", "ramfs")


def test_persistent_target_refused(persistent: Path) -> None:
    with pytest.raises(NotMemoryBacked, match="not in memory"):
        check_memory_backed(persistent / "tx.csv")


def test_persistent_target_allowed_loudly(
    persistent: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="custodes.guest.dataset_launch"):
        fs_type = check_memory_backed(persistent / "tx.csv", allow_persistent=True)
    assert fs_type not in ("tmpfs", "ramfs")
    assert "INSECURE" in caplog.text


def test_unreadable_mountinfo_refused_unless_allowed(shm: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-mountinfo"
    with pytest.raises(NotMemoryBacked, match="cannot tell"):
        check_memory_backed(shm / "tx.csv", mountinfo=missing)
    assert check_memory_backed(shm / "tx.csv", mountinfo=missing, allow_persistent=True) == (
        "unknown"
    )


# --- the plan (no broker) -------------------------------------------------------------------


def test_plan(tmp_path: Path, shm: Path) -> None:
    enc = _encrypted(tmp_path, generate_key())
    planned = plan(DatasetSpec(URI, enc, shm / "tx.csv"))
    assert planned.key_id == URI and planned.fs_type == "tmpfs"


def test_plan_refuses_a_key_id_mismatch(tmp_path: Path, shm: Path) -> None:
    enc = _encrypted(tmp_path, generate_key(), key_id="kbs:///default/dataset/other")
    with pytest.raises(KeyIdMismatch):
        plan(DatasetSpec(URI, enc, shm / "tx.csv"))


def test_plan_refuses_a_missing_source(tmp_path: Path, shm: Path) -> None:
    with pytest.raises(DatasetPathError):
        plan(DatasetSpec(URI, tmp_path / "absent.cdx", shm / "tx.csv"))


def test_plan_refuses_a_directory_without_datasets(tmp_path: Path, shm: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLaunchError):
        plan(DatasetSpec(URI, tmp_path / "empty", shm / "out"))


def test_plan_refuses_a_persistent_target(tmp_path: Path, persistent: Path) -> None:
    enc = _encrypted(tmp_path, generate_key())
    with pytest.raises(NotMemoryBacked):
        plan(DatasetSpec(URI, enc, persistent / "tx.csv"))


# --- with a broker --------------------------------------------------------------------------


def _config(broker: LiveBroker) -> GuestConfig:
    return GuestConfig(brokers=(broker_from_url(broker.url),), tee="sample")


def test_fetch_key_refuses_a_resource_that_is_not_a_data_key(
    broker: LiveBroker, tmp_path: Path, shm: Path
) -> None:
    with broker.admin() as admin:
        admin.put_resource(ResourcePath.parse("default/dataset/tx"), b"sixteen byte key")
    enc = _encrypted(tmp_path, generate_key())
    agent = AttestationAgent(_config(broker), SampleAttester())
    try:
        with pytest.raises(DatasetKeyError):
            fetch_key(ConfidentialDataHub(agent), plan(DatasetSpec(URI, enc, shm / "tx.csv")))
    finally:
        agent.close()


def test_prepare_decrypts_with_one_attestation_for_secrets_and_datasets(
    broker: LiveBroker, tmp_path: Path, shm: Path
) -> None:
    key, signer = generate_key(), generate_signing_key()
    with broker.admin() as admin:
        admin.put_resource(ResourcePath.parse("default/dataset/tx"), key.reveal())
        admin.put_resource(ResourcePath.parse("default/app/password"), b"hunter2")
        admin.put_resource(
            ResourcePath.parse("default/sealing/signer"),
            json.dumps(public_jwk(signer.public_key(), KID)).encode(),
        )
    enc = _encrypted(tmp_path, key)
    env = {"PASSWORD": seal(VaultPayload(name="kbs:///default/app/password"), signer, KID)}
    sealed_key = seal(VaultPayload(name=URI), signer, KID)
    datasets = [
        DatasetSpec.parse(f"{URI}={enc}:{shm}/a/tx.csv"),
        DatasetSpec.parse(f"{sealed_key}={enc}:{shm}/b/tx.csv"),
    ]
    prepared = prepare(_config(broker), env, datasets=datasets)
    assert prepared.env["PASSWORD"] == "hunter2"
    assert prepared.datasets == [shm / "a" / "tx.csv", shm / "b" / "tx.csv"]
    assert (shm / "a" / "tx.csv").read_bytes() == DATA == (shm / "b" / "tx.csv").read_bytes()
    assert (shm / "a" / "tx.csv").stat().st_mode & 0o777 == 0o600
    assert prepared.handshakes == 1


def test_prepare_takes_back_earlier_plaintext_when_a_later_key_is_missing(
    broker: LiveBroker, tmp_path: Path, shm: Path
) -> None:
    key = generate_key()
    with broker.admin() as admin:
        admin.put_resource(ResourcePath.parse("default/dataset/tx"), key.reveal())
    first = _encrypted(tmp_path, key)
    other = tmp_path / "other"
    other.mkdir()
    second = _encrypted(other, generate_key(), key_id="kbs:///default/dataset/absent")
    datasets = [
        DatasetSpec.parse(f"{URI}={first}:{shm}/first.csv"),
        DatasetSpec.parse(f"kbs:///default/dataset/absent={second}:{shm}/second.csv"),
    ]
    with pytest.raises(DatasetLaunchError, match="cannot obtain the key"):
        prepare(_config(broker), {}, datasets=datasets)
    assert list(shm.iterdir()) == []


def test_prepare_leaves_nothing_when_the_broker_refuses(
    broker: LiveBroker, tmp_path: Path, shm: Path
) -> None:
    key = generate_key()
    with broker.admin() as admin:
        admin.put_resource(ResourcePath.parse("default/dataset/tx"), key.reveal())
        admin.register_reference_values({"launch_digest": ["not-this-guest"]})
    enc = _encrypted(tmp_path, key)
    with pytest.raises(DatasetLaunchError, match="PolicyDeny"):
        prepare(_config(broker), {}, datasets=[DatasetSpec.parse(f"{URI}={enc}:{shm}/tx.csv")])
    assert list(shm.iterdir()) == []


def test_prepare_checks_datasets_before_attesting(
    broker: LiveBroker, tmp_path: Path, persistent: Path
) -> None:
    enc = _encrypted(tmp_path, generate_key())
    spec = DatasetSpec.parse(f"{URI}={enc}:{persistent}/tx.csv")
    # An unknown TEE would fail at attester selection: the dataset check comes first.
    config = GuestConfig(brokers=(broker_from_url(broker.url),), tee="no-such-tee")
    with pytest.raises(NotMemoryBacked):
        prepare(config, {}, datasets=[spec])
    assert not (persistent / "tx.csv").exists()


def test_prepare_takes_datasets_from_the_configuration_too(
    broker: LiveBroker, tmp_path: Path, shm: Path
) -> None:
    key = generate_key()
    with broker.admin() as admin:
        admin.put_resource(ResourcePath.parse("default/dataset/tx"), key.reveal())
    enc = _encrypted(tmp_path, key)
    config = dataclasses.replace(
        _config(broker), datasets=(DatasetSpec.of(URI, enc, shm / "from-config.csv"),)
    )
    prepared = prepare(config, {}, datasets=[DatasetSpec.parse(f"{URI}={enc}:{shm}/cli.csv")])
    assert prepared.datasets == [shm / "from-config.csv", shm / "cli.csv"]
    assert prepared.handshakes == 1
