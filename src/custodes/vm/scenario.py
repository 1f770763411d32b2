"""`custodes vm demo`: secrets released only to the boot the workload admin approved.

1. The workload admin starts the broker (EK CA bundle: the vTPM's test CA), stores a secret,
   signs a sealed reference to it (the workload's environment value), installs the
   measured-boot policy and registers the reference values computed from the artifacts
   (``custodes rv measured-boot``) and the vTPM's EK (``tpm_allowed_eks``).
2. The approved VM boots; its job enrols the AK through the EK (credential activation), then
   ``custodes run`` attests (quote + firmware event log), unseals the value and execs the
   workload, which prints the secret's SHA-256.
3. Then, one at a time, VMs that must be refused: another kernel command line, another
   initrd, another firmware build, a vTPM whose EK the admin never approved (its AK cannot
   enrol); for each, the admin's denial explanation names the failed measurement. Last, a
   quote captured from the approved boot is replayed in a new session and refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import ClassVar, Final

from cryptography import x509

from custodes._internal.kbs_http import KbsRequestError
from custodes.admin_client import AdminClient, load_admin_key
from custodes.attestation.verifiers.tpm.ekcert import ek_fingerprint
from custodes.guest.kbs_client import KbsClient
from custodes.kbs.app import create_app
from custodes.kbs.broker import build_broker
from custodes.kbs.config import AttestationConfig, KbsConfig, ServerConfig
from custodes.kbs.server import serve_in_thread
from custodes.protocol.resource import ResourcePath
from custodes.rvps.measured_boot import recorded_firmware, reference_values
from custodes.sealed.keys import generate_signing_key, public_jwk
from custodes.sealed.payload import VaultPayload
from custodes.sealed.seal import seal
from custodes.types.json import Json
from custodes.types.tee import Tee
from custodes.vm.initramfs import build_initramfs
from custodes.vm.kernel import Kernel, find_kernel
from custodes.vm.machine import GUEST_BROKER_URL, BootResult, BootSpec, boot
from custodes.vm.tpm import VirtualTpm

SECRET_PATH: Final = ResourcePath("default", "vm", "secret")
SIGNER_PATH: Final = ResourcePath("default", "sealing", "vm-signer")
SIGNER_KID: Final = f"kbs:///{SIGNER_PATH}"
DEMO_SECRET: Final = b"the launch codes are 0000"
SECRET_LINE: Final = re.compile(r"secret sha256: ([0-9a-f]{64})")
_CORRELATION: Final = re.compile(r"correlation id ([0-9a-f]+)")
OTHER_OVMF_CODE: Final = Path("/usr/share/OVMF/OVMF_CODE.fd")
OTHER_OVMF_VARS: Final = Path("/usr/share/OVMF/OVMF_VARS.fd")

Say = Callable[[str, str], None]
EVIDENCE_LINE: Final = re.compile(r"^CAPTURED-EVIDENCE (\{.*\})\r?$", re.MULTILINE)
_EVIDENCE_SNIPPET: Final = (
    "import hashlib, json; from custodes.guest.attester.select import select_attester; "
    'e = select_attester("tpm").evidence(hashlib.sha384(b"captured").digest()); '
    'print("CAPTURED-EVIDENCE " + json.dumps(e, separators=(",", ":")))'
)


class ReplayingAttester:
    """An attacker's attester: sends evidence captured from an earlier boot, whatever nonce
    the broker asks to be bound."""

    tee: ClassVar[Tee] = Tee.TPM

    def __init__(self, captured: Json) -> None:
        self._captured = captured

    def evidence(self, report_data: bytes) -> Json:
        return self._captured


def measured_boot_policy() -> str:
    """The measured-boot attestation policy custodes ships (custodes/vm/measured_boot.rego)."""
    return resources.files("custodes.vm").joinpath("measured_boot.rego").read_text("utf-8")


def job_script(sealed_value: str, *, enrol: bool = True, show_evidence: bool = False) -> str:
    """The guest's job: enrol the AK through the EK, then `custodes run` the workload with a
    sealed environment value; the workload prints the SHA-256 of what it received.
    ``show_evidence``: also print one quote + event log on the console, as an eavesdropper on
    the guest's traffic would capture it (the replay case of the demo)."""
    python = sys.executable  # the host's venv, seen at the same path over virtio-9p
    capture = f"{python} -c '{_EVIDENCE_SNIPPET}'\n" if show_evidence else ""
    workload = (
        'echo "CUSTODES-VM-T workload $(cut -d" " -f1 /proc/uptime)"; '
        'echo "secret sha256: $(printf %s "$SECRET" | sha256sum | cut -d" " -f1)"'
    )
    enrolment = (
        f"{python} -m custodes guest tpm-enrol --url {GUEST_BROKER_URL}"
        ' || echo "AK enrolment refused"\n'
        if enrol
        else ""
    )
    return (
        "export HOME=/run/tmp TMPDIR=/run/tmp PATH=/usr/bin:/bin\n"
        'echo "CUSTODES-VM-T job $(cut -d" " -f1 /proc/uptime)"\n'
        f"{enrolment}"
        f"{capture}"
        f"export SECRET='{sealed_value}'\n"
        'echo "CUSTODES-VM-T run $(cut -d" " -f1 /proc/uptime)"\n'
        f"exec {python} -m custodes run --url {GUEST_BROKER_URL} --tee tpm "
        f"-- /bin/sh -c '{workload.replace(chr(39), chr(39) + chr(92) + chr(39) + chr(39))}'\n"
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    name: str
    result: BootResult
    secret_digest: str | None
    correlation_id: str | None


@dataclass
class Lab:
    """The broker, the approved artifacts and the vTPM of one demo run."""

    url: str
    port: int
    admin: AdminClient
    kernel: Kernel
    initrd: bytes
    tpm: VirtualTpm
    workdir: Path
    sealed: str
    accel: str
    timeout: float
    console_dir: Path | None

    def boot(
        self,
        name: str,
        spec: BootSpec,
        *,
        tpm: VirtualTpm | None = None,
        enrol: bool = True,
        show_evidence: bool = False,
    ) -> Outcome:
        copy = None if self.console_dir is None else self.console_dir / f"{name}.log"
        result = boot(
            spec,
            tpm or self.tpm,
            job_script=job_script(self.sealed, enrol=enrol, show_evidence=show_evidence),
            broker_port=self.port,
            timeout=self.timeout,
            console_copy=copy,
        )
        digest = SECRET_LINE.search(result.console)
        correlation = _CORRELATION.search(result.console)
        return Outcome(
            name,
            result,
            digest.group(1) if digest else None,
            correlation.group(1) if correlation else None,
        )

    def approved_spec(self) -> BootSpec:
        return BootSpec(kernel=self.kernel.vmlinuz, initrd=self.initrd, accel=self.accel)


@contextmanager
def lab(
    *, accel: str = "tcg", timeout: float = 300.0, console_dir: Path | None = None
) -> Iterator[Lab]:
    """Everything of one demo run; all of it (broker, state, temporary files) removed after."""
    kernel = find_kernel()
    initrd = build_initramfs(kernel)
    with tempfile.TemporaryDirectory(prefix="custodes-vm-demo-") as tmp:
        workdir = Path(tmp)
        tpm = VirtualTpm.manufacture(workdir / "tpm")
        identity = tpm.identity()
        config = KbsConfig(
            server=ServerConfig(listen="127.0.0.1:0", data_dir=workdir / "broker"),
            attestation=AttestationConfig(tpm_ek_ca_bundle=tpm.ca / "ca.pem"),
        ).validate()
        broker = build_broker(config)
        try:
            with serve_in_thread(create_app(broker), dataclasses.replace(config)) as url:
                port = int(url.rstrip("/").rsplit(":", 1)[1])
                admin = AdminClient(url, load_admin_key(workdir / "broker" / "admin-key.pem"))
                try:
                    sealed = _provision(admin, kernel, initrd, identity.ek_certificate)
                    yield Lab(
                        url, port, admin, kernel, initrd, tpm, workdir, sealed, accel, timeout,
                        console_dir,
                    )  # fmt: skip
                finally:
                    admin.close()
        finally:
            broker.close()


def _provision(admin: AdminClient, kernel: Kernel, initrd: bytes, ek_certificate: bytes) -> str:
    """Secret, sealed reference, policy, reference values; returns the sealed value."""
    admin.put_resource(SECRET_PATH, DEMO_SECRET)
    signing = generate_signing_key()
    admin.put_resource(
        SIGNER_PATH, json.dumps(public_jwk(signing.public_key(), SIGNER_KID)).encode()
    )
    sealed = seal(VaultPayload(name=f"kbs:///{SECRET_PATH}"), signing, SIGNER_KID)
    admin.set_policy("attestation", measured_boot_policy(), policy_id="default_cpu")
    spec = BootSpec(kernel=kernel.vmlinuz, initrd=initrd)
    values = reference_values(
        firmware=recorded_firmware(spec.firmware.read_bytes(), None),
        kernel=kernel.vmlinuz.read_bytes(),
        initrd=initrd,
        cmdline=spec.cmdline,
        qemu_memory=spec.memory_mib << 20,
    )
    ek_key = x509.load_der_x509_certificate(ek_certificate).public_key()
    admin.register_reference_values({**values, "tpm_allowed_eks": [ek_fingerprint(ek_key)]})  # type: ignore[arg-type]
    return sealed


def explain(admin: AdminClient, correlation_id: str) -> list[str]:
    """The admin's view of a denial: each failed condition with its claim and reference."""
    why = admin.get_denial(correlation_id)
    lines: list[str] = []
    attestation = why.get("attestation")
    explanation = attestation.get("explanation", {}) if isinstance(attestation, dict) else {}
    if not isinstance(explanation, dict):
        return lines
    for submod, claims in explanation.items():
        if not isinstance(claims, dict):
            continue
        for claim, detail in claims.items():
            if not isinstance(detail, dict):
                continue
            for failed in detail.get("failed") or []:
                if not isinstance(failed, dict):
                    continue
                lines.append(
                    f"{submod} {claim}={detail.get('value')}: failed `{failed.get('condition')}`"
                )
                for name, value in (failed.get("claims") or {}).items():
                    lines.append(f"  claim {name} = {value!r}")
                for name, value in (failed.get("reference_values") or {}).items():
                    lines.append(f"  reference value {name} = {value!r}")
    return lines


def tampered_initrd(kernel: Kernel) -> bytes:
    """The approved initramfs with one file added: what a host slipping a tool in would boot."""
    return build_initramfs(kernel, extra_files={"etc/injected": b"a host-added file\n"})


def other_firmware(spec: BootSpec) -> BootSpec:
    """The same boot on Debian's other OVMF build (2 MB flash layout): another PCR 0."""
    return dataclasses.replace(spec, firmware=OTHER_OVMF_CODE, firmware_vars=OTHER_OVMF_VARS)


def run_demo(say: Say, *, accel: str, timeout: float, console_dir: Path | None) -> int:
    """The whole scenario; 0 when every approved boot got the secret and every other was
    refused with an explanation."""
    expected = hashlib.sha256(DEMO_SECRET).hexdigest()
    failures = 0
    captured: Json = None
    say("1. The workload admin starts the broker and provisions it", "")
    with lab(accel=accel, timeout=timeout, console_dir=console_dir) as env:
        say("", f"broker at {env.url}; secret at kbs:///{SECRET_PATH}, sealed reference signed")
        say("", "policy: measured boot (custodes/vm/measured_boot.rego); reference values")
        say("", "computed from OVMF, the kernel, the initrd and the command line; EK approved")
        approved = env.approved_spec()
        cases: list[tuple[str, str, BootSpec, VirtualTpm | None]] = [
            ("approved", "2. The approved VM boots", approved, None),
            (
                "cmdline",
                "3. A VM with another kernel command line",
                dataclasses.replace(approved, cmdline=approved.cmdline + " init=/bin/sh"),
                None,
            ),
            (
                "initrd",
                "4. A VM with another initrd (one file added)",
                dataclasses.replace(approved, initrd=tampered_initrd(env.kernel)),
                None,
            ),
            (
                "firmware",
                "5. The approved kernel, initrd and command line on another firmware build",
                other_firmware(approved),
                None,
            ),
            (
                "ek",
                "6. The approved boot on a vTPM whose EK the admin never approved",
                approved,
                VirtualTpm.manufacture(env.workdir / "other-tpm"),
            ),
        ]
        for name, title, spec, tpm in cases:
            say(title, "")
            outcome = env.boot(name, spec, tpm=tpm, show_evidence=name == "approved")
            say("", f"VM ran {outcome.result.elapsed:.1f} s, job status {outcome.result.status}")
            if name == "approved":
                found = EVIDENCE_LINE.search(outcome.result.console)
                captured = json.loads(found.group(1)) if found else None
                if outcome.secret_digest == expected:
                    say("", f"the workload received the secret: sha256 {expected}")
                else:
                    failures += 1
                    say("", "FAILED: the approved VM did not receive the secret")
                continue
            if outcome.secret_digest is not None:
                failures += 1
                say("", "FAILED: this VM received the secret")
                continue
            if outcome.correlation_id is None:
                failures += 1
                say("", "FAILED: the refusal carries no correlation id")
                continue
            say("", f"refused (correlation id {outcome.correlation_id}); the admin looks up why:")
            for line in explain(env.admin, outcome.correlation_id):
                say("", "  " + line)
        say("7. A quote captured from the approved boot, replayed in a new session", "")
        if captured is None:
            failures += 1
            say("", "FAILED: the approved boot printed no evidence to capture")
        else:
            refusal = replay(env.url, captured)
            if refusal is None:
                failures += 1
                say("", "FAILED: the replayed quote was accepted")
            else:
                say("", f"refused: {refusal}")
    return 1 if failures else 0


def replay(url: str, captured: Json) -> str | None:
    """Attest with ``captured`` evidence in a fresh session; the refusal, or None."""
    with KbsClient(url, ReplayingAttester(captured)) as attacker:
        try:
            attacker.get_resource(SECRET_PATH)
        except KbsRequestError as e:
            return f"{e.status}: {e.detail}"
    return None
