"""`custodes dataset` as a user runs it (a subprocess): exit codes, no tracebacks, the key
never printed; keygen --store and decrypt --url against a real broker (sample TEE)."""

from __future__ import annotations

import base64
import io
import json
import os
import pty
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from custodes.cli.dataset import ProgressBar
from custodes.datasets.keys import read_key_file, write_key_file
from custodes.protocol.resource import ResourcePath
from custodes.types.secret import Secret

if TYPE_CHECKING:
    from live_broker import LiveBroker

KEY_ID = "kbs:///default/dataset/fraud"
RESOURCE = ResourcePath.parse("default/dataset/fraud")
PLAIN = os.urandom(200_000)


def cli(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    from live_broker import run_cli

    return run_cli(*(str(a) for a in args))


def assert_ok(result: subprocess.CompletedProcess[bytes]) -> None:
    assert result.returncode == 0, result.stderr.decode()
    assert b"Traceback" not in result.stderr


def assert_error(result: subprocess.CompletedProcess[bytes], code: int = 1) -> str:
    assert result.returncode == code, result.stderr.decode()
    assert b"Traceback" not in result.stderr
    return result.stderr.decode()


def assert_key_not_in(result: subprocess.CompletedProcess[bytes], key: Secret[bytes]) -> None:
    raw = key.reveal()
    shown = result.stdout + result.stderr
    for form in (raw, raw.hex().encode(), base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        assert form not in shown
        assert form.rstrip(b"=") not in shown


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    result = cli("dataset", "keygen", "--out", tmp_path / "data.key")
    assert_ok(result)
    assert_key_not_in(result, read_key_file(tmp_path / "data.key"))
    return tmp_path / "data.key"


@pytest.fixture
def sealed(tmp_path: Path, key_file: Path) -> Path:
    plain = tmp_path / "plain.csv"
    plain.write_bytes(PLAIN)
    out = tmp_path / "plain.csv.cdx"
    result = cli("dataset", "encrypt", "--key-file", key_file, "--key-id", KEY_ID,
                 "--chunk-size", "64K", plain, out)  # fmt: skip
    assert_ok(result)
    assert_key_not_in(result, read_key_file(key_file))
    assert "encrypted 1 file(s)" in result.stderr.decode()
    return out


def test_keygen_writes_a_raw_key_file(key_file: Path) -> None:
    assert len(key_file.read_bytes()) == 32
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_keygen_text_form(tmp_path: Path) -> None:
    result = cli("dataset", "keygen", "--out", tmp_path / "k.txt", "--text")
    assert_ok(result)
    key = read_key_file(tmp_path / "k.txt")
    assert_key_not_in(result, key)


def test_keygen_needs_a_destination() -> None:
    assert "--out" in assert_error(cli("dataset", "keygen"))


def test_keygen_refuses_an_existing_key_file(key_file: Path) -> None:
    before = key_file.read_bytes()
    assert "refusing to overwrite" in assert_error(cli("dataset", "keygen", "--out", key_file))
    assert key_file.read_bytes() == before


def test_encrypt_decrypt_inspect(tmp_path: Path, key_file: Path, sealed: Path) -> None:
    result = cli("dataset", "inspect", sealed, "-o", "json")
    assert_ok(result)
    info = json.loads(result.stdout)
    assert info["key_id"] == KEY_ID
    assert info["chunk_size"] == 65536
    assert info["plaintext_size"] == len(PLAIN)
    assert info["chunks"] == len(PLAIN) // 65536 + 1
    back = tmp_path / "back.csv"
    result = cli("dataset", "decrypt", "--key-file", key_file, "--key-id", KEY_ID, sealed, back)
    assert_ok(result)
    assert_key_not_in(result, read_key_file(key_file))
    assert back.read_bytes() == PLAIN
    # Not a terminal: no progress bar.
    assert "\r" not in result.stderr.decode()


def test_encrypt_and_decrypt_a_directory(tmp_path: Path, key_file: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.csv").write_bytes(PLAIN)
    (tree / "sub" / "b.csv").write_bytes(b"b")
    assert_ok(cli("dataset", "encrypt", "--key-file", key_file, "--key-id", KEY_ID,
                  tree, tmp_path / "sealed"))  # fmt: skip
    result = cli("dataset", "inspect", tmp_path / "sealed", "-o", "json")
    assert_ok(result)
    assert [i["plaintext_size"] for i in json.loads(result.stdout)] == [len(PLAIN), 1]
    assert_ok(cli("dataset", "decrypt", "--key-file", key_file, tmp_path / "sealed",
                  tmp_path / "back"))  # fmt: skip
    assert (tmp_path / "back" / "a.csv").read_bytes() == PLAIN
    assert (tmp_path / "back" / "sub" / "b.csv").read_bytes() == b"b"


def test_decrypt_tampered_file_fails_cleanly(tmp_path: Path, key_file: Path, sealed: Path) -> None:
    data = bytearray(sealed.read_bytes())
    data[-100] ^= 1
    sealed.write_bytes(bytes(data))
    back = tmp_path / "back.csv"
    err = assert_error(cli("dataset", "decrypt", "--key-file", key_file, sealed, back))
    assert err.startswith("custodes: error: chunk 3 does not authenticate")
    assert not back.exists()
    assert not (tmp_path / "back.csv.partial").exists()


def test_decrypt_with_the_wrong_key(tmp_path: Path, sealed: Path) -> None:
    other = tmp_path / "other.key"
    assert_ok(cli("dataset", "keygen", "--out", other))
    assert_error(cli("dataset", "decrypt", "--key-file", other, sealed, tmp_path / "back"))
    assert not (tmp_path / "back").exists()


def test_decrypt_with_another_expected_key_id(tmp_path: Path, key_file: Path, sealed: Path) -> None:
    err = assert_error(cli("dataset", "decrypt", "--key-file", key_file, "--key-id",
                           "kbs:///default/dataset/other", sealed, tmp_path / "back"))  # fmt: skip
    assert "kbs:///default/dataset/fraud" in err
    assert not (tmp_path / "back").exists()


def test_refuses_to_overwrite_without_force(tmp_path: Path, key_file: Path, sealed: Path) -> None:
    back = tmp_path / "back"
    back.write_bytes(b"keep")
    assert "exists" in assert_error(cli("dataset", "decrypt", "--key-file", key_file, sealed, back))
    assert back.read_bytes() == b"keep"
    assert_ok(cli("dataset", "decrypt", "--key-file", key_file, "--force", sealed, back))
    assert back.read_bytes() == PLAIN


@pytest.mark.parametrize(
    ("args", "code"),
    [
        ("encrypt --key-file {key} --key-id " + KEY_ID + " --chunk-size lots {inp} {out}", 2),
        ("encrypt --key-file {key} --key-id not-a-uri {inp} {out}", 2),
        ("encrypt --key-file {key} --key-id " + KEY_ID + " --chunk-size 1K {inp} {out}", 1),
        ("decrypt {inp} {out}", 2),  # neither --key-file nor --url
        ("decrypt --key-file {key} --url http://x {inp} {out}", 2),
        ("decrypt --key-file {key} --tee sample {inp} {out}", 1),
    ],
)
def test_usage_errors(tmp_path: Path, key_file: Path, args: str, code: int) -> None:
    plain = tmp_path / "in"
    plain.write_bytes(b"x")
    words = args.format(key=key_file, inp=plain, out=tmp_path / "out").split()
    assert_error(cli("dataset", *words), code)
    assert not (tmp_path / "out").exists()


def test_bad_key_file(tmp_path: Path, sealed: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"too short\n")
    err = assert_error(cli("dataset", "decrypt", "--key-file", bad, sealed, tmp_path / "back"))
    assert "32" in err


def test_inspect_refuses_other_files(tmp_path: Path) -> None:
    other = tmp_path / "x.csv"
    other.write_bytes(b"amount,label\n1,0\n")
    assert "magic" in assert_error(cli("dataset", "inspect", other))


def test_inspect_reports_an_inconsistent_layout(sealed: Path) -> None:
    final_chunk = len(PLAIN) % 65536 + 16
    with sealed.open("r+b") as f:  # leave 5 bytes of the final chunk: less than its tag
        f.truncate(sealed.stat().st_size - final_chunk + 5)
    result = cli("dataset", "inspect", sealed, "-o", "json")
    assert_ok(result)
    info = json.loads(result.stdout)
    assert info["plaintext_size"] is None
    assert info["layout"].startswith("INVALID")


# --- against a real broker ---------------------------------------------------------------


def _store(broker: LiveBroker, *extra: str | Path) -> subprocess.CompletedProcess[bytes]:
    return cli("dataset", "keygen", "--store", KEY_ID, "--url", broker.url,
               "--key", broker.data_dir / "admin-key.pem", *extra)  # fmt: skip


@pytest.fixture
def shm() -> Iterator[Path]:
    """A private directory on tmpfs, where `decrypt --url` may write plaintext."""
    if not Path("/dev/shm").is_dir():
        pytest.fail("/dev/shm is needed: decrypt --url writes only to memory-backed storage")
    d = Path(tempfile.mkdtemp(prefix="custodes-test-", dir="/dev/shm"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_keygen_store_then_decrypt_inside_the_tee(
    broker: LiveBroker, tmp_path: Path, shm: Path
) -> None:
    """The workload admin makes and stores the key in one step and encrypts; the guest
    (sample TEE) attests, fetches the key the header names, and decrypts."""
    key_file = tmp_path / "data.key"
    result = _store(broker, "--out", key_file)
    assert_ok(result)
    key = read_key_file(key_file)
    assert_key_not_in(result, key)
    with broker.admin() as admin:
        assert admin.resource_info(RESOURCE)["size"] == 32
    plain = tmp_path / "plain.csv"
    plain.write_bytes(PLAIN)
    sealed = tmp_path / "plain.csv.cdx"
    assert_ok(cli("dataset", "encrypt", "--key-file", key_file, "--key-id", KEY_ID, plain,
                  sealed))  # fmt: skip
    back = shm / "plain.csv"
    result = cli("dataset", "decrypt", "--url", broker.url, "--tee", "sample", sealed, back)
    assert_ok(result)
    assert_key_not_in(result, key)
    assert back.read_bytes() == PLAIN


def test_keygen_store_without_a_key_file(broker: LiveBroker, tmp_path: Path) -> None:
    result = _store(broker)
    assert_ok(result)
    assert "no key file was written" in result.stderr.decode()
    assert list(tmp_path.glob("*.key")) == []
    with broker.admin() as admin:
        assert admin.resource_info(RESOURCE)["size"] == 32


def test_keygen_store_refuses_to_replace_a_key(broker: LiveBroker, tmp_path: Path) -> None:
    assert_ok(_store(broker))
    err = assert_error(_store(broker, "--out", tmp_path / "k"))
    assert "--replace" in err
    assert not (tmp_path / "k").exists()  # checked before writing anything
    assert_ok(_store(broker, "--replace"))


def test_keygen_store_needs_the_admin_key(broker: LiveBroker, tmp_path: Path) -> None:
    env_free = cli("dataset", "keygen", "--store", KEY_ID, "--url", broker.url, "--key",
                   tmp_path / "missing.pem", "--out", tmp_path / "k")  # fmt: skip
    assert_error(env_free)
    assert not (tmp_path / "k").exists()


def test_decrypt_url_when_the_broker_has_no_such_key(
    broker: LiveBroker, tmp_path: Path, shm: Path
) -> None:
    key_file = tmp_path / "k"
    write_key_file(key_file, Secret(os.urandom(32)))
    plain = tmp_path / "p"
    plain.write_bytes(b"data")
    assert_ok(cli("dataset", "encrypt", "--key-file", key_file, "--key-id", KEY_ID, plain,
                  tmp_path / "p.cdx"))  # fmt: skip
    result = cli("dataset", "decrypt", "--url", broker.url, "--tee", "sample", tmp_path / "p.cdx",
                 shm / "back")  # fmt: skip
    assert "404" in assert_error(result)
    assert not (shm / "back").exists()


def test_decrypt_url_refuses_a_resource_that_is_not_a_key(
    broker: LiveBroker, tmp_path: Path, shm: Path
) -> None:
    with broker.admin() as admin:
        admin.put_resource(RESOURCE, b"a password, not a 32-byte key")
    key_file = tmp_path / "k"
    write_key_file(key_file, Secret(os.urandom(32)))
    plain = tmp_path / "p"
    plain.write_bytes(b"data")
    assert_ok(cli("dataset", "encrypt", "--key-file", key_file, "--key-id", KEY_ID, plain,
                  tmp_path / "p.cdx"))  # fmt: skip
    result = cli("dataset", "decrypt", "--url", broker.url, "--tee", "sample", tmp_path / "p.cdx",
                 shm / "back")  # fmt: skip
    assert "32 bytes" in assert_error(result)
    assert not (shm / "back").exists()


def _sealed_for_the_broker(broker: LiveBroker, tmp_path: Path) -> Path:
    key_file = tmp_path / "k"
    assert_ok(_store(broker, "--out", key_file))
    plain = tmp_path / "p"
    plain.write_bytes(PLAIN)
    assert_ok(cli("dataset", "encrypt", "--key-file", key_file, "--key-id", KEY_ID, plain,
                  tmp_path / "p.cdx"))  # fmt: skip
    return tmp_path / "p.cdx"


def test_decrypt_url_refuses_persistent_storage_before_attesting(
    broker: LiveBroker, tmp_path: Path
) -> None:
    """Issue 12 #6: inside the TEE, plaintext goes to tmpfs/ramfs only, as for `run`."""
    from custodes.guest.dataset_launch import NotMemoryBacked, check_memory_backed

    with pytest.raises(NotMemoryBacked):  # the test needs a persistent temporary directory
        check_memory_backed(tmp_path)
    sealed = _sealed_for_the_broker(broker, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    result = cli("dataset", "decrypt", "--url", broker.url, "--tee", "sample", sealed,
                 out / "plain.csv")  # fmt: skip
    err = assert_error(result)
    assert "not in memory" in err and "--allow-persistent" in err
    assert list(out.iterdir()) == []
    assert "INSECURE: issued a token" not in err  # refused before any attestation


def test_decrypt_url_allow_persistent_is_loud(broker: LiveBroker, tmp_path: Path) -> None:
    sealed = _sealed_for_the_broker(broker, tmp_path)
    back = tmp_path / "plain.csv"
    result = cli("dataset", "decrypt", "--url", broker.url, "--tee", "sample", "--allow-persistent",
                 sealed, back)  # fmt: skip
    assert_ok(result)
    assert "INSECURE: writing the plaintext" in result.stderr.decode()
    assert "--allow-persistent" in result.stderr.decode()
    assert back.read_bytes() == PLAIN


def test_allow_persistent_needs_url(key_file: Path, tmp_path: Path) -> None:
    err = assert_error(cli("dataset", "decrypt", "--key-file", key_file, "--allow-persistent",
                           tmp_path / "x.cdx", tmp_path / "x"))  # fmt: skip
    assert "--allow-persistent" in err


def test_encrypt_into_a_missing_directory_creates_nothing(key_file: Path, tmp_path: Path) -> None:
    plain = tmp_path / "p"
    plain.write_bytes(b"data")
    result = cli("dataset", "encrypt", "--key-file", key_file, "--key-id", KEY_ID, plain,
                 tmp_path / "nonexistent" / "x")  # fmt: skip
    err = assert_error(result)
    assert err.count("\n") == 1 and "does not exist" in err
    assert not (tmp_path / "nonexistent").exists()


# --- progress bar ------------------------------------------------------------------------


def test_progress_bar_draws_one_line() -> None:
    out = io.StringIO()
    bar = ProgressBar("decrypting", 4 * 2**20, out)
    bar(2**20)
    bar.close()
    text = out.getvalue()
    assert text.startswith("\rdecrypting [")
    assert text.endswith("\n")
    assert "25.0%" in text and "1.0/4.0 MiB" in text
    assert "100.0%" not in text  # it was not finished: the bar says so


def test_progress_bar_on_a_terminal(tmp_path: Path, key_file: Path, sealed: Path) -> None:
    """stderr on a real pseudo-terminal: the bar is drawn (and reaches 100 %)."""
    controller, terminal = pty.openpty()
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "custodes",
                "dataset",
                "decrypt",
                "--key-file",
                str(key_file),
                str(sealed),
                str(tmp_path / "back"),
            ],
            stdout=subprocess.PIPE,
            stderr=terminal,
            timeout=60,
            check=False,
        )
        os.close(terminal)
        shown = b""
        while True:
            try:
                part = os.read(controller, 4096)
            except OSError:  # EIO: the terminal side is closed and drained
                break
            if not part:
                break
            shown += part
    finally:
        os.close(controller)
    assert result.returncode == 0
    assert b"\rdecrypting [" in shown
    assert b"100.0%" in shown
    key = read_key_file(key_file).reveal()
    for form in (key, key.hex().encode(), base64.b64encode(key)):
        assert form not in shown + result.stdout
