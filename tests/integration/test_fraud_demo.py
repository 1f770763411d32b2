"""The confidential fraud-detection workload end to end: the example's generator and
application, ``custodes run --dataset`` as a real subprocess against a real broker, and
``custodes demo fraud``.

Plaintext targets are under /dev/shm (tmpfs here; the tests that need it skip, saying so,
where it is not); the persistent paths are pytest's temporary directory.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from custodes.datasets.files import encrypt_path
from custodes.datasets.keys import generate_key
from custodes.guest.dataset_launch import NotMemoryBacked, check_memory_backed
from custodes.protocol.resource import ResourcePath
from custodes.sealed.keys import generate_signing_key, public_jwk
from custodes.sealed.payload import VaultPayload
from custodes.sealed.seal import seal
from custodes.types.secret import Secret
from live_broker import LiveBroker, run_cli

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fraud-detection"
URI = "kbs:///default/dataset/tx"
KID = "kbs:///default/sealing/signer"
COLUMNS = [
    "transaction_id",
    "timestamp",
    "card_id",
    "merchant_category",
    "amount",
    "currency",
    "country",
    "channel",
    "card_present",
    "hour",
    "distance_from_home_km",
    "txn_count_1h",
    "txn_count_24h",
    "merchant_risk_score",
    "is_fraud",
]
# Prints its argument's content to stdout: "the workload ran, and saw this".
SHOW = "import sys; print(open(sys.argv[1]).read(), end='')"


def _memory_backed(path: Path) -> bool:
    try:
        check_memory_backed(path)
    except NotMemoryBacked:
        return False
    return True


@pytest.fixture
def shm() -> Iterator[Path]:
    if not _memory_backed(Path("/dev/shm")):
        pytest.skip("/dev/shm is not tmpfs on this machine")
    d = Path(tempfile.mkdtemp(prefix="custodes-test-", dir="/dev/shm"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def generate(out: Path, rows: int, seed: int | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(EXAMPLE / "generate.py"), "--rows", str(rows)]
    command += ["--out", str(out), *(["--seed", str(seed)] if seed is not None else [])]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def attestations(url: str) -> float:
    total = 0.0
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("custodes_attestations_total{") and 'tee="sample"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


# --- the example ----------------------------------------------------------------------------


def test_generator_is_deterministic(tmp_path: Path) -> None:
    generate(tmp_path / "a.csv", 5000, seed=1)
    generate(tmp_path / "b.csv", 5000, seed=1)
    generate(tmp_path / "c.csv", 5000, seed=2)
    a = (tmp_path / "a.csv").read_bytes()
    assert a == (tmp_path / "b.csv").read_bytes()
    assert a != (tmp_path / "c.csv").read_bytes()
    assert not list(tmp_path.glob("*.partial"))


def test_generated_columns_imbalance_and_fraud_signal(tmp_path: Path) -> None:
    out = tmp_path / "tx.csv"
    generated = generate(out, 20_000)
    assert "20000 transactions" in generated.stderr
    with out.open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        rows = list(reader)
    assert len(rows) == 20_000
    fraud = [r for r in rows if r["is_fraud"] == "1"]
    legit = [r for r in rows if r["is_fraud"] == "0"]
    assert len(fraud) + len(legit) == len(rows)
    assert 0.002 <= len(fraud) / len(rows) <= 0.005
    # Chronological, ids in that order, channels consistent with card presence.
    assert [r["timestamp"] for r in rows] == sorted(r["timestamp"] for r in rows)
    assert rows[0]["transaction_id"] == "t000000001"
    assert {r["channel"] for r in rows} == {"pos", "ecom", "atm"}
    assert all((r["channel"] == "ecom") == (r["card_present"] == "0") for r in rows)
    assert all(r["merchant_category"] == "6011" for r in rows if r["channel"] == "atm")

    def mean(group: list[dict[str, str]], column: str) -> float:
        return sum(float(r[column]) for r in group) / len(group)

    def share(group: list[dict[str, str]], **match: str) -> float:
        return sum(all(r[k] == v for k, v in match.items()) for r in group) / len(group)

    # Fraud differs plausibly, feature by feature.
    for column in ("distance_from_home_km", "txn_count_1h", "merchant_risk_score", "amount"):
        assert mean(fraud, column) > mean(legit, column), column
    assert share(fraud, channel="ecom") > share(legit, channel="ecom")
    night = {str(h) for h in range(6)}
    assert sum(r["hour"] in night for r in fraud) / len(fraud) > sum(
        r["hour"] in night for r in legit
    ) / len(legit)


def test_app_prints_metrics_and_is_deterministic(tmp_path: Path) -> None:
    generate(tmp_path / "tx.csv", 20_000)
    results = []
    app = [sys.executable, str(EXAMPLE / "app.py"), str(tmp_path / "tx.csv")]
    for name in ("m1.json", "m2.json"):
        done = subprocess.run(
            [*app, "--metrics-json", str(tmp_path / name)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        results.append(json.loads((tmp_path / name).read_text()))
    assert "ROC AUC" in done.stdout and "confusion matrix" in done.stdout
    assert results[0] == results[1]
    m = results[0]
    assert m["transactions"] == 20_000 and m["train_rows"] == 15_000
    assert 0.5 < m["roc_auc"] <= 1.0 and 0.0 < m["average_precision"] <= 1.0
    assert (
        m["true_negatives"] + m["false_positives"] + m["false_negatives"] + m["true_positives"]
        == m["test_rows"]
    )


def test_app_reads_the_dataset_from_the_environment(tmp_path: Path) -> None:
    generate(tmp_path / "tx.csv", 5000)
    done = subprocess.run(
        [sys.executable, str(EXAMPLE / "app.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env={"FRAUD_DATASET": str(tmp_path / "tx.csv"), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "5000 transactions" in done.stdout


def test_app_refuses_a_file_that_is_not_a_transactions_csv(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    done = subprocess.run(
        [sys.executable, str(EXAMPLE / "app.py"), str(tmp_path / "x.csv")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1 and "missing column" in done.stderr


# --- custodes run --dataset, the real CLI -----------------------------------------------------


def _dataset(broker: LiveBroker, tmp_path: Path, *, key_id: str = URI) -> tuple[Path, bytes]:
    """An encrypted dataset on persistent storage, its key in the broker at ``URI``."""
    key: Secret[bytes] = generate_key()
    with broker.admin() as admin:
        admin.put_resource(ResourcePath.parse(URI.removeprefix("kbs:///")), key.reveal())
    plain = tmp_path / "tx.csv"
    generate(plain, 2000)
    data = plain.read_bytes()
    enc = tmp_path / "tx.csv.cdx"
    encrypt_path(plain, enc, key, key_id)
    plain.unlink()
    return enc, data


def _run(broker: LiveBroker, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = run_cli("run", "--url", broker.url, "--tee", "sample", *args, env=env)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def test_run_decrypts_into_tmpfs_with_one_attestation_for_secrets_and_dataset(
    broker: LiveBroker, tmp_path: Path, shm: Path
) -> None:
    enc, data = _dataset(broker, tmp_path)
    signer = generate_signing_key()
    with broker.admin() as admin:
        admin.put_resource(
            ResourcePath.parse("default/sealing/signer"),
            json.dumps(public_jwk(signer.public_key(), KID)).encode(),
        )
        admin.put_resource(ResourcePath.parse("default/app/token"), b"s3cret")
    sealed_env = seal(VaultPayload(name="kbs:///default/app/token"), signer, KID)
    sealed_key = seal(VaultPayload(name=URI), signer, KID)
    plain = shm / "tx.csv"
    code, out, err = _run(
        broker,
        "--dataset",
        f"{sealed_key}={enc}:{plain}",
        "--",
        sys.executable,
        "-c",
        "import os, sys; print(os.environ['TOKEN']); print(open(sys.argv[1]).read(), end='')",
        str(plain),
        env={"TOKEN": sealed_env},
    )
    assert code == 0, err
    assert out == "s3cret\n" + data.decode()
    assert f"decrypted dataset {plain}" in err
    assert "unsealed 1 environment variable(s) and 0 file(s) with 1 attestation(s)" in err
    assert attestations(broker.url) == 1
    assert plain.stat().st_mode & 0o777 == 0o600


def test_run_refuses_a_persistent_target_unless_overridden(
    broker: LiveBroker, tmp_path: Path
) -> None:
    enc, data = _dataset(broker, tmp_path)
    if _memory_backed(tmp_path):
        pytest.skip("the temporary directory is on tmpfs here; no persistent path to refuse")
    plain = tmp_path / "out" / "tx.csv"
    code, out, err = _run(broker, "--dataset", f"{URI}={enc}:{plain}", "--", "true")
    assert code == 1
    assert "not in memory" in err and "--dataset-allow-persistent" in err
    assert not plain.exists() and not plain.parent.exists()
    assert attestations(broker.url) == 0  # refused before asking the broker anything

    code, out, err = _run(
        broker,
        "--dataset",
        f"{URI}={enc}:{plain}",
        "--dataset-allow-persistent",
        "--",
        sys.executable,
        "-c",
        SHOW,
        str(plain),
    )
    assert code == 0, err
    assert out == data.decode()
    assert "INSECURE" in err and "persist" in err


def test_run_refuses_a_key_id_mismatch(broker: LiveBroker, tmp_path: Path, shm: Path) -> None:
    enc, _ = _dataset(broker, tmp_path, key_id="kbs:///default/dataset/other")
    plain = shm / "tx.csv"
    code, out, err = _run(broker, "--dataset", f"{URI}={enc}:{plain}", "--", "echo", "ran")
    assert code == 1
    assert "was encrypted under 'kbs:///default/dataset/other'" in err
    assert out == "" and not plain.exists()
    assert attestations(broker.url) == 0


def test_run_leaves_no_plaintext_when_the_broker_refuses(
    broker: LiveBroker, tmp_path: Path, shm: Path
) -> None:
    enc, _ = _dataset(broker, tmp_path)
    with broker.admin() as admin:
        admin.register_reference_values({"launch_digest": ["another-measurement"]})
    plain = shm / "tx.csv"
    code, out, err = _run(broker, "--dataset", f"{URI}={enc}:{plain}", "--", "echo", "ran")
    assert code == 1
    assert "cannot obtain the key kbs:///default/dataset/tx" in err and "PolicyDeny" in err
    assert out == ""  # the workload never ran
    assert list(shm.iterdir()) == []  # neither the plaintext nor a .partial


def test_run_dataset_usage_error(broker: LiveBroker) -> None:
    code, _, err = _run(broker, "--dataset", "kbs:///default/dataset/tx", "--", "true")
    assert code == 2 and "KEY=ENCRYPTED_PATH:PLAIN_PATH" in err


# --- the demo -------------------------------------------------------------------------------


def _section(text: str, start: str, end: str | None) -> str:
    begin = text.index(start)
    return text[begin : text.index(end, begin) if end else len(text)]


def test_demo_fraud_end_to_end(shm: Path) -> None:
    result = run_cli("demo", "fraud", "--rows", "20000")
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, out + err
    traditional = _section(out, "== 1. Traditional setup", "== 2.")
    trusted = _section(out, "== 2. custodes setup", "== 3.")
    untrusted = _section(out, "== 3. An untrusted environment", "== Done.")
    # 1: the Secret manifest, the key recovered from it, the data decrypted with it.
    assert "kind: Secret" in traditional and "dataset-key:" in traditional
    assert "32 bytes, the data key" in traditional and ": the key the admin generated" in (
        traditional
    )
    assert "decrypts the whole dataset: 20000 rows" in traditional
    # 2: only a sealed reference in the cluster; the workload attests once and runs.
    assert "sealed reference" in trusted and '"type": "vault"' in trusted
    assert "without attesting: HTTP 401" in trusted
    assert "TEE: the sample TEE" in trusted
    assert "with 1 attestation(s)" in trusted
    assert "ROC AUC" in trusted and "average precision" in trusted
    assert "confusion matrix" in trusted
    # 3: refused, nothing decrypted, the application never ran, no metrics anywhere else.
    assert "PolicyDeny" in untrusted
    assert "custodes run exit status: 1" in untrusted
    assert ": absent" in untrusted and "the application ran: no" in untrusted
    assert out.count("ROC AUC") == 1 and "ROC AUC" not in traditional + untrusted
    # The demo's plaintext directory on tmpfs is gone.
    memory = re.search(r"/run/plaintext is (\S+), tmpfs;", trusted)
    assert memory is not None and memory[1].startswith("/dev/shm/")
    assert not Path(memory[1]).exists()


def test_demo_fraud_keeps_what_it_is_asked_to_keep(tmp_path: Path, shm: Path) -> None:
    keep = tmp_path / "kept"
    result = run_cli("demo", "fraud", "--rows", "5000", "--keep", str(keep))
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert (keep / "persistent-storage" / "transactions.csv.cdx").is_file()
    assert (keep / "cluster" / "traditional-secret.yaml").is_file()
    assert "sealed." not in (keep / "cluster" / "traditional-secret.yaml").read_text()
    assert (keep / "cluster" / "custodes-manifests.yaml").is_file()
    assert (keep / "broker" / "custodes.db").is_file()
    # No plaintext is kept anywhere.
    assert not list(keep.rglob("transactions.csv"))


def test_demo_without_a_scenario_is_still_the_spine() -> None:
    result = run_cli("demo")
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    assert "Done. The secret reached the TEE" in out and "ROC AUC" not in out


def test_demo_options_of_the_other_scenario_refused() -> None:
    result = run_cli("demo", "--rows", "5000")
    assert result.returncode == 1 and b"only for `custodes demo fraud`" in result.stderr
