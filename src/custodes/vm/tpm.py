"""The VM's vTPM: a swtpm state directory manufactured like a real TPM, with EK certificates
issued by a local test CA (``swtpm_setup --create-ek-cert`` through ``swtpm_localca``, with
the CA key and certificate this module makes), then served to QEMU on a UNIX socket.

The CA is a test CA, generated per state directory: the broker that should accept this TPM's
EK is configured with ``ca.pem`` (``attestation.tpm_ek_ca_bundle``). The AK the guest quotes
with is a primary key derived from the TPM's endorsement seed, so it is known before boot
(:meth:`VirtualTpm.identity` reads it over a short-lived TCP swtpm on the same state).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from custodes.errors import ConfigError

_READY_S = 10.0
_STOP_S = 5.0


@dataclass(frozen=True, slots=True)
class TpmIdentity:
    ek_certificate: bytes  # DER, read back from the TPM's NV
    ak_public: bytes  # DER SubjectPublicKeyInfo of the default RSA AK
    ca_pem: bytes  # the local test CA that issued the EK certificate


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ConfigError(f"{name} is not installed (apt install swtpm swtpm-tools)")
    return found


def ca_certificate(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, common_name: str
) -> x509.Certificate:
    """A self-signed certificate authority for EK certificates (ten years, certificate and
    CRL signing only): the VM's swtpm_localca signs with it, and the tests' own EK CA too."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )


def _make_ca(directory: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = ca_certificate(key, "custodes vm test TPM CA")
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    fd = os.open(directory / "signkey.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    (directory / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "localca.conf").write_text(
        f"statedir = {directory}\nsigningkey = {directory / 'signkey.pem'}\n"
        f"issuercert = {directory / 'ca.pem'}\ncertserial = {directory / 'certserial'}\n"
    )
    (directory / "swtpm_setup.conf").write_text(
        f"create_certs_tool = {_binary('swtpm_localca')}\n"
        f"create_certs_tool_config = {directory / 'localca.conf'}\n"
        "create_certs_tool_options = /dev/null\n"
    )


def _free_port_pair() -> int:
    for _ in range(50):
        with closing(socket.socket()) as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            with closing(socket.socket()) as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise ConfigError("no free pair of loopback ports for swtpm")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(_STOP_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(_STOP_S)


class VirtualTpm:
    """A manufactured vTPM in ``directory`` (created 0700 by :meth:`manufacture`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.state = directory / "state"
        self.ca = directory / "ca"

    @classmethod
    def manufacture(cls, directory: Path) -> VirtualTpm:
        """A fresh TPM: endorsement seed, EKs (RSA 2048, ECC) and their certificates."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        tpm = cls(directory)
        for sub in (tpm.state, tpm.ca):
            sub.mkdir(mode=0o700, exist_ok=True)
        _make_ca(tpm.ca)
        done = subprocess.run(
            [
                _binary("swtpm_setup"),
                "--tpm2",
                "--tpmstate",
                str(tpm.state),
                "--create-ek-cert",
                "--config",
                str(tpm.ca / "swtpm_setup.conf"),
                "--overwrite",
                "--pcr-banks",
                "sha256",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise ConfigError(f"swtpm_setup failed: {done.stderr.strip() or done.stdout.strip()}")
        return tpm

    def identity(self) -> TpmIdentity:
        """The EK certificate and the AK public key, read from the TPM before any boot."""
        from custodes.guest.attester.tpm import TpmAttester

        with self.serve_tcp() as tcti:
            attester = TpmAttester(tcti)
            return TpmIdentity(
                ek_certificate=attester.ek_certificate(),
                ak_public=attester.ak_public_der(),
                ca_pem=(self.ca / "ca.pem").read_bytes(),
            )

    @contextmanager
    def serve_tcp(self) -> Iterator[str]:
        """swtpm over TCP on this state (the TCTI string), for host-side use before a boot."""
        port = _free_port_pair()
        options = [
            "--server",
            f"type=tcp,port={port},bindaddr=127.0.0.1",
            "--ctrl",
            f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
            "--flags",
            "not-need-init,startup-clear",
        ]
        with self._serve(options, lambda: _accepts(port), "swtpm (tcp)"):
            yield f"swtpm:host=127.0.0.1,port={port}"

    @contextmanager
    def serve_for_qemu(self, workdir: Path) -> Iterator[Path]:
        """swtpm on a UNIX control socket in ``workdir`` for QEMU's ``tpm-emulator``; a fresh
        process per boot, so the PCRs start from reset as on a real power-on."""
        sock = workdir / "swtpm.sock"
        options = ["--ctrl", f"type=unixio,path={sock}", "--log", f"file={workdir / 'swtpm.log'}"]
        with self._serve(options, sock.exists, "swtpm (unix socket)"):
            yield sock

    @contextmanager
    def _serve(self, options: list[str], ready: Callable[[], bool], what: str) -> Iterator[None]:
        """``swtpm socket`` on this state with ``options``, until the block ends."""
        process = subprocess.Popen(
            [_binary("swtpm"), "socket", "--tpm2", "--tpmstate", f"dir={self.state}", *options],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for(ready, process, what)
            yield
        finally:
            _stop(process)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _wait_for(ready: object, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + _READY_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ConfigError(f"{what} exited with status {process.returncode}")
        if callable(ready) and ready():
            return
        time.sleep(0.02)
    raise ConfigError(f"{what} did not start within {_READY_S:.0f} s")
