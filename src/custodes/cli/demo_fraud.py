"""`custodes demo fraud`: the confidential AI workload of the fraud-detection example.

A fraud model is trained on an encrypted card-transaction dataset. The scenario, in three
steps, all on this machine with real parts (the example's generator and application, a broker
on SQLite, the real ``custodes run`` as a subprocess, a sample TEE):

1. the traditional setup: the data key in a Kubernetes Secret. Anyone who can read Secrets
   (a cluster admin) decodes it and decrypts the dataset — the demo does exactly that;
2. the custodes setup: the key is only in the workload admin's broker; the cluster holds a
   signed sealed reference to it. ``custodes run --dataset`` attests, receives the key,
   decrypts into tmpfs and execs the unchanged application, which prints its metrics;
3. an untrusted environment (a launch measurement the admin does not trust) is refused: no
   key, no plaintext, the application never runs.

The example (``examples/fraud-detection``) is part of a custodes checkout, not of the
installed package, and needs scikit-learn (``pip install 'custodes[examples]'``).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import hmac
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx
import yaml

from custodes._internal.b64 import b64url_decode
from custodes._internal.clock import SystemClock
from custodes._internal.kbs_http import KbsRequestError
from custodes.admin_client import AdminClient, load_admin_key
from custodes.attestation.ear import EarClaims
from custodes.attestation.verifiers.base import Verifier
from custodes.attestation.verifiers.registry import VerifierSettings, build_verifiers
from custodes.datasets.files import encrypt_path
from custodes.datasets.format import decrypt_stream
from custodes.datasets.keys import generate_key
from custodes.errors import ConfigError
from custodes.guest.attester.sample import SampleAttester
from custodes.guest.dataset_launch import MEMORY_FILESYSTEMS, NotMemoryBacked, check_memory_backed
from custodes.guest.kbs_client import KbsClient
from custodes.kbs.app import create_app
from custodes.kbs.broker import build_broker
from custodes.kbs.config import AttestationConfig, KbsConfig, ServerConfig
from custodes.kbs.server import serve_in_thread
from custodes.protocol.resource import ResourcePath
from custodes.sealed.keys import generate_signing_key, public_jwk
from custodes.sealed.payload import VaultPayload
from custodes.sealed.seal import seal
from custodes.types.secret import Secret
from custodes.types.tee import Tee

if TYPE_CHECKING:
    from custodes.cli.demo_gpu import DemoGpu

DEFAULT_ROWS: Final = 300_000
# Fewer rows leave too few fraudulent ones (0.35 %) in the held-out period to score.
MIN_ROWS: Final = 5_000
# src/custodes/cli/demo_fraud.py -> the checkout's examples/fraud-detection.
DEFAULT_EXAMPLE: Final = Path(__file__).resolve().parents[3] / "examples" / "fraud-detection"
KEY_PATH: Final = ResourcePath("default", "dataset", "fraud-transactions")
KEY_URI: Final = f"kbs:///{KEY_PATH}"
SIGNER_PATH: Final = ResourcePath("default", "sealing", "dataset-signer")
SIGNER_KID: Final = f"kbs:///{SIGNER_PATH}"
# Names of a Kubernetes Secret object and its data field, not secrets.
SECRET_NAME: Final = "fraud-dataset-key"  # noqa: S105
SECRET_FIELD: Final = "dataset-key"  # noqa: S105
# Where the pod sees its volumes: the dataset volume, and a memory-backed emptyDir.
POD_DATA: Final = "/data"
POD_MEMORY: Final = "/run/plaintext"
DATASET_FILE: Final = "transactions.csv"
ENCRYPTED_FILE: Final = DATASET_FILE + ".cdx"
TRUSTED_VALUES: Final = {
    "svn": ["1"],
    "launch_digest": ["abcde"],
    "major_version": 1,
    "minimum_minor_version": 0,
}
# What a rebuilt (or tampered) guest image would measure as: not what the sample TEE reports.
OTHER_DIGEST: Final = hashlib.sha384(b"fraud-detection guest image v2").hexdigest()[:16]
SUBPROCESS_TIMEOUT: Final = 600


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rows",
        type=int,
        help=f"fraud scenario: transactions to generate (default {DEFAULT_ROWS})",
    )
    p.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="fraud scenario: keep the manifests, the encrypted dataset and the broker's "
        "state in DIR (never the plaintext)",
    )
    p.add_argument(
        "--gpu",
        action="store_true",
        help="fraud scenario: also attest a GPU (a recorded H100 report replayed with a demo "
        "key; proves nothing): the key is released only when the CPU and the GPU are trusted",
    )
    p.add_argument(
        "--example-dir",
        type=Path,
        help="fraud scenario: the examples/fraud-detection directory (default: the checkout's)",
    )


def say(step: str, text: str = "") -> None:
    print(f"\n== {step}" if not text else f"   {text}", flush=True)


def show(text: str) -> None:
    for line in text.rstrip("\n").splitlines():
        print(f"     | {line}", flush=True)


@dataclass(frozen=True, slots=True)
class Layout:
    """The demo's places: the admin's machine, persistent storage, the cluster's objects,
    the broker's state, and the memory-backed directory the pod decrypts into."""

    root: Path
    memory: Path
    memory_fs: str

    @property
    def admin(self) -> Path:
        return self.root / "workload-admin"

    @property
    def storage(self) -> Path:
        return self.root / "persistent-storage"

    @property
    def cluster(self) -> Path:
        return self.root / "cluster"

    @property
    def broker(self) -> Path:
        return self.root / "broker"

    @property
    def encrypted(self) -> Path:
        return self.storage / ENCRYPTED_FILE

    @property
    def plaintext(self) -> Path:
        return self.memory / DATASET_FILE


@contextmanager
def _memory_dir() -> Iterator[tuple[Path, str]]:
    """A fresh directory on tmpfs (``/dev/shm``), removed after; on a machine without one,
    a temporary directory used with --dataset-allow-persistent (said loudly)."""
    shm = Path("/dev/shm")  # noqa: S108 (a private mkdtemp inside it, mode 0700)
    try:
        fs_type = check_memory_backed(shm)
        base: Path | None = shm
    except NotMemoryBacked:
        fs_type, base = "persistent", None
    path = Path(tempfile.mkdtemp(prefix="custodes-fraud-", dir=base))
    try:
        yield path, fs_type
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _example(args: argparse.Namespace) -> tuple[Path, Path]:
    example: Path = args.example_dir or DEFAULT_EXAMPLE
    generator, app = example / "generate.py", example / "app.py"
    if not generator.is_file() or not app.is_file():
        raise ConfigError(
            f"the fraud-detection example is not at {example}: run the demo from a custodes "
            "checkout or pass --example-dir"
        )
    if importlib.util.find_spec("sklearn") is None:
        raise ConfigError(
            "the fraud-detection example needs scikit-learn: pip install 'custodes[examples]'"
        )
    return generator, app


def run(args: argparse.Namespace) -> int:
    rows = DEFAULT_ROWS if args.rows is None else args.rows
    if rows < MIN_ROWS:
        raise ConfigError(f"--rows must be at least {MIN_ROWS}: the model needs fraud to learn")
    generator, app = _example(args)
    with _memory_dir() as (memory, memory_fs), tempfile.TemporaryDirectory() as tmp:
        root = args.keep if args.keep is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        layout = Layout(root, memory, memory_fs)
        for d in (layout.admin, layout.storage, layout.cluster):
            d.mkdir(exist_ok=True)
        return _demo(layout, generator, app, rows, gpu=args.gpu)


def _demo(layout: Layout, generator: Path, app: Path, rows: int, *, gpu: bool = False) -> int:
    say("Fraud detection on an encrypted dataset: who can read the data key?")
    key = _prepare_data(layout, generator, rows)
    _traditional(layout, key)
    config = KbsConfig(
        server=ServerConfig(listen="127.0.0.1:0", data_dir=layout.broker),
        attestation=AttestationConfig(unsafe_allow_sample_tee=True),
    ).validate()
    demo_gpu = _demo_gpu(app) if gpu else None
    broker = build_broker(config, verifiers=_verifiers(demo_gpu))
    try:
        with serve_in_thread(create_app(broker), dataclasses.replace(config)) as url:
            admin = AdminClient(url, load_admin_key(layout.broker / "admin-key.pem"))
            with admin:
                trusted = _custodes(layout, app, url, admin, config, key)
                if trusted and demo_gpu is not None:
                    trusted = _with_gpu(url, admin, demo_gpu, key)
                refused = _untrusted(layout, app, url, admin) if trusted else False
    finally:
        broker.close()
    if not (trusted and refused):
        print("demo: the scenario did not go as it must; see above", file=sys.stderr)
        return 1
    say(
        "Done. With a Secret, whoever reads Secrets reads the data. With custodes the key left "
        "the broker only for an attested TEE with the trusted measurement, and the plaintext "
        "lived only in that TEE's memory."
    )
    return 0


def _demo_gpu(app: Path) -> DemoGpu:
    from custodes.cli.demo_gpu import DemoGpu

    return DemoGpu.load(app.parent / "gpu" / "h100-report.hex")


def _verifiers(demo_gpu: DemoGpu | None) -> dict[Tee, Verifier] | None:
    """The broker's usual verifiers; with --gpu, the NVIDIA one trusts the demo's GPU root."""
    if demo_gpu is None:
        return None
    clock = SystemClock()
    verifiers = build_verifiers(VerifierSettings(), clock)
    verifiers[Tee.NVIDIA] = demo_gpu.verifier(clock)
    return verifiers


def _with_gpu(url: str, admin: AdminClient, demo_gpu: DemoGpu, key: Secret[bytes]) -> bool:
    say("2b. The same workload on a GPU: the key needs the CPU and the GPU trusted")
    say("", "!!! INSECURE: no GPU here; a recorded H100 report is replayed with each session's")
    say("", "nonce and re-signed by a demo device key the demo broker trusts (proves nothing)")
    admin.register_reference_values(demo_gpu.reference_values())
    say("", "the admin registers the GPU's golden measurements and driver/VBIOS versions")
    released = _gpu_attempt(url, demo_gpu, key, debug_mode=False)
    say("", "a GPU in debug mode (a derived report: measurement 2 is not the golden value,")
    say("", "as a GPU in debug or developer-tools mode measures differently):")
    refused = not _gpu_attempt(url, demo_gpu, key, debug_mode=True)
    return released and refused


def _gpu_attempt(url: str, demo_gpu: DemoGpu, key: Secret[bytes], *, debug_mode: bool) -> bool:
    """One guest (sample CPU + the demo GPU) asks for the key; True when it received it."""
    gpu = demo_gpu.attester(debug_mode=debug_mode)
    with KbsClient(url, SampleAttester(), device_attesters=[gpu]) as guest:
        submods = EarClaims.parse(guest.attest().claims()).submodules
        statuses = ", ".join(f"{name} {a.status}" for name, a in submods.items())
        say("", f"appraisal: {statuses}")
        try:
            received = guest.get_resource(KEY_PATH)
        except KbsRequestError as e:
            say("", f"the key is refused ({e.status} {e.error_type.rsplit('/', 1)[-1]})")
            return False
    same = hmac.compare_digest(received, key.reveal())
    say("", f"the key is released to the TEE: {_fingerprint(received)}{'' if same else ' (WRONG)'}")
    return same


def _prepare_data(layout: Layout, generator: Path, rows: int) -> Secret[bytes]:
    say("0. The workload admin prepares the dataset (on their own machine)")
    plain = layout.admin / DATASET_FILE
    generated = subprocess.run(
        [sys.executable, str(generator), "--rows", str(rows), "--out", str(plain)],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    if generated.returncode != 0:
        raise ConfigError(f"the dataset generator failed:\n{generated.stderr}")
    key = generate_key()
    encrypt_path(plain, layout.encrypted, key, KEY_URI, overwrite=True)
    say("", f"examples/fraud-detection/generate.py: {generated.stderr.strip()}")
    say("", f"encrypted them under a fresh data key, key id {KEY_URI}")
    say(
        "",
        f"-> persistent storage: {layout.encrypted} ({layout.encrypted.stat().st_size} bytes)",
    )
    plain.unlink()
    say("", "the admin's plaintext copy is deleted; only the encrypted file travels")
    return key


def _manifest(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)


def _secret_manifest(value: bytes) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET_NAME, "namespace": "fraud"},
        "type": "Opaque",
        "data": {SECRET_FIELD: base64.b64encode(value).decode("ascii")},
    }


def _fingerprint(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()[:16]


def _traditional(layout: Layout, key: Secret[bytes]) -> None:
    say("1. Traditional setup: the data key in a Kubernetes Secret")
    manifest = layout.cluster / "traditional-secret.yaml"
    manifest.write_text(_manifest(_secret_manifest(key.reveal())))
    say("", f"the workload admin applies {manifest.name}; an init container decrypts with it:")
    show(manifest.read_text())
    say("", f"a cluster admin runs: kubectl -n fraud get secret {SECRET_NAME} -o yaml")
    stored = yaml.safe_load(manifest.read_text())
    recovered = base64.b64decode(stored["data"][SECRET_FIELD], validate=True)
    say("", f"and base64-decodes .data.{SECRET_FIELD}: {len(recovered)} bytes, the data key")
    same = hmac.compare_digest(recovered, key.reveal())
    say("", f"({_fingerprint(recovered)}: {'the' if same else 'NOT the'} key the admin generated)")
    # Decrypt into memory only: the demo shows the attack without leaving plaintext behind.
    sink = io.BytesIO()
    with layout.encrypted.open("rb") as src:
        decrypt_stream(src, sink, Secret(recovered), expected_key_id=KEY_URI)
    lines = sink.getvalue().decode("utf-8").splitlines()
    say("", f"with it, the cluster admin decrypts the whole dataset: {len(lines) - 1} rows, e.g.")
    show("\n".join(lines[:3]))
    say(
        "", "=> anyone who can read Secrets in the namespace (or etcd, or its backups) has the data"
    )


def _custodes(
    layout: Layout,
    app: Path,
    url: str,
    admin: AdminClient,
    config: KbsConfig,
    key: Secret[bytes],
) -> bool:
    say("2. custodes setup: the data key only in the workload admin's broker")
    say("", f"broker at {url} (in-process, SQLite state in {config.sqlite_path})")
    say("", "TEE: the sample TEE (no hardware: its evidence proves nothing; demo only)")
    for notice in config.insecure_notices():
        say("", f"!!! INSECURE: {notice}")
    admin.put_resource(KEY_PATH, key.reveal())
    say("", f"the workload admin stores the data key in the broker at {KEY_URI}")
    say("", "(the same key and encrypted file as in 1: only where the key is kept differs)")
    admin.register_reference_values(TRUSTED_VALUES)
    say("", f"and the reference values it trusts: {TRUSTED_VALUES}")
    signing = generate_signing_key()
    admin.put_resource(
        SIGNER_PATH, json.dumps(public_jwk(signing.public_key(), SIGNER_KID)).encode()
    )
    sealed = seal(VaultPayload(name=KEY_URI), signing, SIGNER_KID)
    say("", f"it signs a sealed reference to the key; the signer's public JWK is at {SIGNER_KID}")

    manifest = layout.cluster / "custodes-manifests.yaml"
    docs = [_secret_manifest(sealed.encode("ascii")), _pod_manifest(url)]
    manifest.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    say("", f"what the cluster stores ({manifest.name}): a sealed reference, no key")
    show(manifest.read_text())
    say("", f"a cluster admin decodes .data.{SECRET_FIELD}: a signed pointer, not a key:")
    payload = sealed.removeprefix("sealed.").split(".")[1]
    show(json.dumps(json.loads(b64url_decode(payload)), indent=2))
    answer = httpx.get(f"{url}/kbs/v0/resource/{KEY_PATH}", timeout=10)
    say("", f"and asking the broker for it without attesting: HTTP {answer.status_code}")

    say("", "the pod starts in the TEE; its entrypoint is custodes run:")
    say(
        "",
        f"(here {POD_DATA} is {layout.storage} and {POD_MEMORY} is {layout.memory}, "
        f"{layout.memory_fs}; --tee sample, as this machine is no TEE)",
    )
    result = _run_pod(layout, app, url, sealed)
    _relay(result.stderr)
    if result.returncode != 0:
        say("", f"custodes run failed (exit {result.returncode})")
        return False
    say("", "the unchanged application's output, computed on the decrypted data:")
    show(result.stdout)
    say(
        "",
        f"the plaintext lived only in {layout.memory_fs} at {layout.plaintext}; it goes "
        "with the pod (removed now)",
    )
    layout.plaintext.unlink(missing_ok=True)
    return True


def _pod_manifest(url: str) -> dict[str, Any]:
    spec = f"$(DATASET_KEY)={POD_DATA}/{ENCRYPTED_FILE}:{POD_MEMORY}/{DATASET_FILE}"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "fraud-detection", "namespace": "fraud"},
        "spec": {
            "runtimeClassName": "kata-qemu-snp",
            "containers": [
                {
                    "name": "model",
                    "image": "registry.example/fraud-detection:1.0",
                    "command": ["custodes", "run", "--url", url, "--dataset", spec, "--"],
                    "args": ["python", "app.py", f"{POD_MEMORY}/{DATASET_FILE}"],
                    "env": [
                        {
                            "name": "DATASET_KEY",
                            "valueFrom": {
                                "secretKeyRef": {"name": SECRET_NAME, "key": SECRET_FIELD}
                            },
                        }
                    ],
                    "volumeMounts": [
                        {"name": "dataset", "mountPath": POD_DATA, "readOnly": True},
                        {"name": "plaintext", "mountPath": POD_MEMORY},
                    ],
                }
            ],
            "volumes": [
                {"name": "dataset", "persistentVolumeClaim": {"claimName": "fraud-dataset"}},
                {"name": "plaintext", "emptyDir": {"medium": "Memory"}},
            ],
        },
    }


def _run_pod(layout: Layout, app: Path, url: str, sealed: str) -> subprocess.CompletedProcess[str]:
    """The pod's entrypoint, for real: ``custodes run`` in a subprocess, sample TEE."""
    command = [sys.executable, "-m", "custodes", "run", "--url", url, "--tee", "sample"]
    command += ["--dataset", f"{sealed}={layout.encrypted}:{layout.plaintext}"]
    if layout.memory_fs not in MEMORY_FILESYSTEMS:
        say("", "!!! INSECURE: no tmpfs here; decrypting to disk with --dataset-allow-persistent")
        command.append("--dataset-allow-persistent")
    command += ["--", sys.executable, str(app), str(layout.plaintext)]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, check=False
    )


def _relay(stderr: str) -> None:
    for line in stderr.splitlines():
        say("", f"> {line}")


def _appraisal(url: str) -> str:
    with KbsClient(url, SampleAttester()) as guest:
        cpu0 = EarClaims.parse(guest.token().claims()).submodules["cpu0"]
    claims = ", ".join(f"{k}={v}" for k, v in sorted((cpu0.vector or {}).items()) if v)
    return f"ear.status={cpu0.status} ({claims})"


def _untrusted(layout: Layout, app: Path, url: str, admin: AdminClient) -> bool:
    say("3. An untrusted environment: a launch measurement the admin does not trust")
    admin.register_reference_values({"launch_digest": [OTHER_DIGEST]})
    say("", f"the admin now trusts only launch_digest {OTHER_DIGEST} (say, a rebuilt image);")
    say("", "this guest still measures as 'abcde': the same pod, the same sealed reference")
    say("", f"appraisal of this guest: {_appraisal(url)}")
    result = _run_pod(layout, app, url, _sealed_from(layout))
    _relay(result.stderr)
    exists = os.path.lexists(layout.plaintext)
    ran = "ROC AUC" in result.stdout
    say("", f"custodes run exit status: {result.returncode}")
    say("", f"plaintext at {layout.plaintext}: {'PRESENT' if exists else 'absent'}")
    say("", f"the application ran: {'YES' if ran else 'no'}")
    return result.returncode != 0 and not exists and not ran


def _sealed_from(layout: Layout) -> str:
    """The sealed reference, read back from the manifest the cluster stores."""
    docs = list(yaml.safe_load_all((layout.cluster / "custodes-manifests.yaml").read_text()))
    return base64.b64decode(docs[0]["data"][SECRET_FIELD], validate=True).decode("ascii")
