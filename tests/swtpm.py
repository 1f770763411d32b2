"""A real software TPM 2.0 (swtpm) for tests: fresh state, free loopback ports, always stopped.

Use it from any test under ``tests/`` as::

    from swtpm import running_swtpm

    with running_swtpm() as tpm:
        attester = TpmAttester(tpm.tcti)  # "swtpm:host=127.0.0.1,port=N"

Why the plain import works without ``__init__.py`` files: in pytest's default ``prepend``
import mode, the directory of every ``conftest.py`` pytest loads is put on ``sys.path``, and
``tests/conftest.py`` is loaded for every test under ``tests/``, so ``tests/`` is importable.
mypy resolves it the same way (each ``tests/`` file is a top-level module).

The swtpm runs as ``swtpm socket --tpm2`` on a data port P and a control port P+1 (the
``swtpm`` TCTI uses both), with ``not-need-init,startup-clear`` so it is ready for commands.
A start that loses a race for the ports is retried on other ports. On exit the process is
terminated (killed if it lingers) and its state directory removed, also when the test failed.
swtpm has no resource manager: callers must flush the transient objects they load.
swtpm, swtpm_ioctl and tpm2_startup come from system packages (``scripts/setup-system``); a
missing binary is an error, not a skip.

EK certificates (:func:`provision_ek_certificate`): a TPM as a manufacturer ships it, with its
EK certified by a CA. The test makes the CA itself (:class:`TestCa`, ``cryptography``), creates
the EK from its TCG template (L-1 RSA 2048 or L-2 ECC P-256), issues the certificate and
NV-writes it at the EK certificate index (0x01c00002 RSA, 0x01c0000a ECC), as
``swtpm_setup --create-ek-cert`` would, but without swtpm_localca's system-wide state.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from custodes.vm.tpm import ca_certificate

HOST = "127.0.0.1"
_START_ATTEMPTS = 5
_READY_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Swtpm:
    """A running swtpm."""

    port: int
    state_dir: Path
    pid: int

    @property
    def ctrl_port(self) -> int:
        return self.port + 1

    @property
    def tcti(self) -> str:
        """The TCTI string for tpm2-pytss and tpm2-tools."""
        return f"swtpm:host={HOST},port={self.port}"

    def reset(self) -> None:
        """A TPM Reset: power cycle (``TPM_Init``) then ``TPM2_Startup(CLEAR)``.

        PCRs return to their initial values and saved contexts of transient objects become
        unloadable, as after a reboot.
        """
        subprocess.run(
            ["swtpm_ioctl", "--tcp", f"{HOST}:{self.ctrl_port}", "-i"],
            check=True,
            capture_output=True,
            timeout=_STOP_TIMEOUT_S,
        )
        subprocess.run(
            ["tpm2_startup", "--clear", "--tcti", self.tcti],
            check=True,
            capture_output=True,
            timeout=_STOP_TIMEOUT_S,
        )


def _port_pair() -> int:
    """A port P such that P and P+1 were both free a moment ago."""
    for _ in range(50):
        with closing(socket.socket()) as first:
            first.bind((HOST, 0))
            port = int(first.getsockname()[1])
            if port >= 65535:
                continue
            with closing(socket.socket()) as second:
                try:
                    second.bind((HOST, port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free pair of loopback ports")


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(_STOP_TIMEOUT_S)


def _start(state_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("swtpm")
    if binary is None:
        raise RuntimeError("swtpm is not installed (see scripts/setup-system)")
    log = state_dir / "swtpm.log"
    failures = []
    for _ in range(_START_ATTEMPTS):
        port = _port_pair()
        command = [
            binary,
            "socket",
            "--tpm2",
            "--server",
            f"type=tcp,port={port},bindaddr={HOST}",
            "--ctrl",
            f"type=tcp,port={port + 1},bindaddr={HOST}",
            "--tpmstate",
            f"dir={state_dir}",
            "--flags",
            "not-need-init,startup-clear",
            "--log",
            f"file={log}",
        ]
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break  # most likely lost the ports to another process: try others
            if _accepts(port) and _accepts(port + 1):
                return process, port
            time.sleep(0.02)
        _stop(process)
        stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
        failures.append(f"port {port}: exit {process.returncode}: {stderr.strip()}")
    raise RuntimeError("swtpm did not start: " + "; ".join(failures))


@contextmanager
def running_swtpm() -> Iterator[Swtpm]:
    """A fresh swtpm (empty state) for the duration of the ``with`` block."""
    state_dir = Path(tempfile.mkdtemp(prefix="custodes-swtpm-"))
    try:
        process, port = _start(state_dir)
        try:
            yield Swtpm(port=port, state_dir=state_dir, pid=process.pid)
        finally:
            _stop(process)
            if process.stderr:
                process.stderr.close()
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


# --- EK certificates -----------------------------------------------------------------------

EK_CERT_INDICES = {"rsa": 0x01C00002, "ecc": 0x01C0000A}
_EK_TEMPLATES = {"rsa": "EK-RSA2048", "ecc": "EK-ECC256"}
_NV_CHUNK = 512


@dataclass(frozen=True)
class TestCa:
    """A certificate authority for EK certificates (a P-256 key and a self-signed CA cert)."""

    __test__ = False  # not a pytest test class

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(cls, name: str = "custodes test TPM manufacturer CA") -> TestCa:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = ca_certificate(key, name)
        return cls(key, cert)

    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue_ek(
        self,
        public_key: object,
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        key_usage: str | None = None,
    ) -> x509.Certificate:
        """An EK certificate for ``public_key`` (keyEncipherment for RSA, keyAgreement for
        ECC, unless ``key_usage`` names another single usage)."""
        now = datetime.now(UTC)
        is_ec = isinstance(public_key, ec.EllipticCurvePublicKey)
        usage = key_usage or ("key_agreement" if is_ec else "key_encipherment")
        flags = {
            name: name == usage
            for name in (
                "digital_signature",
                "content_commitment",
                "key_encipherment",
                "data_encipherment",
                "key_agreement",
                "key_cert_sign",
                "crl_sign",
            )
        }
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - timedelta(days=1))
            .not_valid_after(not_after or now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(**flags, encipher_only=False, decipher_only=False), critical=True
            )
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DirectoryName(
                            x509.Name(
                                [
                                    x509.NameAttribute(
                                        x509.ObjectIdentifier("2.23.133.2.1"), "id:53575450"
                                    )
                                ]
                            )
                        )
                    ]
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )


def ek_public_key(tpm: Swtpm, algorithm: str = "rsa") -> object:
    """The public key of the TPM's EK of ``algorithm`` ("rsa" or "ecc"), from its template."""
    from tpm2_pytss import ESAPI, ESYS_TR  # type: ignore[import-untyped]
    from tpm2_pytss.utils import NoSuchIndex, create_ek_template  # type: ignore[import-untyped]

    def no_index(index: int) -> bytes:
        raise NoSuchIndex(index)

    ectx = ESAPI(tpm.tcti)
    try:
        _, template = create_ek_template(_EK_TEMPLATES[algorithm], no_index)
        handle, public, _, _, _ = ectx.create_primary(None, template, ESYS_TR.ENDORSEMENT)
        ectx.flush_context(handle)
        return serialization.load_der_public_key(public.publicArea.to_der())
    finally:
        ectx.close()


def nv_write_ek_certificate(tpm: Swtpm, der: bytes, algorithm: str = "rsa") -> None:
    """Define the EK certificate index of ``algorithm`` (owner hierarchy) and write ``der``."""
    from tpm2_pytss import ESAPI, ESYS_TR, TPM2_ALG, TPM2B_NV_PUBLIC, TPMA_NV, TPMS_NV_PUBLIC

    ectx = ESAPI(tpm.tcti)
    try:
        public = TPM2B_NV_PUBLIC(
            nvPublic=TPMS_NV_PUBLIC(
                nvIndex=EK_CERT_INDICES[algorithm],
                nameAlg=TPM2_ALG.SHA256,
                attributes=TPMA_NV.OWNERWRITE
                | TPMA_NV.OWNERREAD
                | TPMA_NV.AUTHREAD
                | TPMA_NV.NO_DA,
                dataSize=len(der),
            )
        )
        handle = ectx.nv_define_space(None, public, ESYS_TR.OWNER)
        for offset in range(0, len(der), _NV_CHUNK):
            ectx.nv_write(handle, der[offset : offset + _NV_CHUNK], offset, ESYS_TR.OWNER)
    finally:
        ectx.close()


def provision_ek_certificate(tpm: Swtpm, ca: TestCa, algorithm: str = "rsa") -> x509.Certificate:
    """Certify the TPM's EK of ``algorithm`` by ``ca`` and store the certificate in NV."""
    cert = ca.issue_ek(ek_public_key(tpm, algorithm))
    nv_write_ek_certificate(tpm, cert.public_bytes(serialization.Encoding.DER), algorithm)
    return cert
