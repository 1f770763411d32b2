"""EK-rooted trust in a TPM's attestation key, end to end, with real swtpms and a real broker.

Each TPM gets an EK certificate from a test CA (the test issues it and NV-writes it at the EK
certificate index, see tests/swtpm.py). The broker trusts that CA (``tpm_ek_ca_bundle``); the
workload admin approves one TPM's EK (``tpm_allowed_eks``) and its PCR 11. The guest enrols its
AK by credential activation, attests, and is given the secret. Refused, each with the reason:
(a) a TPM whose EK certificate is from another CA, (b) an AK that is not in the TPM whose EK
made the credential, (c) an AK that was never enrolled.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from custodes._internal.b64 import b64std_encode
from custodes._internal.clock import FrozenClock
from custodes._internal.kbs_http import KbsRequestError
from custodes.admin_client import AdminClient, OperatorClient, load_admin_key
from custodes.attestation.tpm_enrol import (
    ActivateRequest,
    EnrolChallenge,
    EnrolRequest,
)
from custodes.attestation.verifiers.tpm.ekcert import ek_fingerprint
from custodes.cli import main
from custodes.guest.attester.tpm import AkAlgorithm, TpmAttester, TpmAttesterError
from custodes.guest.kbs_client import KbsClient
from custodes.guest.tpm_enrol import enrol
from custodes.kbs.app import create_app
from custodes.kbs.broker import build_broker
from custodes.kbs.config import AttestationConfig, KbsConfig, OperatorConfig, ServerConfig
from custodes.kbs.keys import write_public_pem
from custodes.kbs.server import serve_in_thread
from custodes.protocol.resource import ResourcePath
from live_broker import LiveBroker
from swtpm import Swtpm, TestCa, provision_ek_certificate, running_swtpm

SECRET = ResourcePath("tenant", "key", "tpm-enrolled")
VALUE = b"released only to an enrolled TPM"


@dataclass
class EnrollingBroker:
    live: LiveBroker
    ca: TestCa


@pytest.fixture
def enrolling(tmp_path: Path) -> Iterator[EnrollingBroker]:
    """A broker whose tpm_ek_ca_bundle is a fresh test CA."""
    ca = TestCa.create()
    bundle = tmp_path / "ek-ca.pem"
    bundle.write_bytes(ca.pem())
    config = KbsConfig(
        server=ServerConfig(listen="127.0.0.1:0", data_dir=tmp_path / "data"),
        attestation=AttestationConfig(tpm_ek_ca_bundle=bundle),
    ).validate()
    clock = FrozenClock(time.time())
    b = build_broker(config, clock=clock)
    with serve_in_thread(create_app(b), config) as url:
        live = LiveBroker(url, b, clock, tmp_path / "data")
        with live.admin() as admin:
            admin.put_resource(SECRET, VALUE)
        yield EnrollingBroker(live, ca)
    b.close()


@contextlib.contextmanager
def certified_tpm(ca: TestCa, algorithm: str = "rsa") -> Iterator[tuple[Swtpm, x509.Certificate]]:
    with running_swtpm() as tpm:
        yield tpm, provision_ek_certificate(tpm, ca, algorithm)


def _fingerprint(cert: x509.Certificate) -> str:
    return ek_fingerprint(cert.public_key())  # type: ignore[arg-type]


def _approve(live: LiveBroker, attester: TpmAttester, *certs: x509.Certificate) -> None:
    """The workload admin approves these EKs and this attester's PCR 11."""
    with live.admin() as admin:
        admin.register_reference_values(
            {
                "tpm_allowed_eks": [_fingerprint(c) for c in certs],
                "tpm_pcr11": [attester.read_pcrs()[11].hex()],
            }
        )


def _trusted_aks(live: LiveBroker) -> list[str]:
    with live.admin() as admin:
        if "trusted_aks" not in admin.list_reference_values():
            return []
        value = admin.get_reference_value("trusted_aks")["value"]
    assert isinstance(value, list)
    return [str(v) for v in value]


def _refused_resource(url: str, attester: TpmAttester) -> KbsRequestError:
    with KbsClient(url, attester) as guest:
        with pytest.raises(KbsRequestError) as denied:
            guest.get_resource(SECRET)
        vector = guest.token().claims()["submods"]["cpu0"]["ear.trustworthiness-vector"]
    assert vector["executables"] == 33  # the AK is not trusted, whatever the PCRs say
    return denied.value


@pytest.mark.parametrize(("ek", "ak"), [("rsa", AkAlgorithm.RSA), ("ecc", AkAlgorithm.ECC)])
def test_enrolled_ak_attests_and_gets_the_secret(
    enrolling: EnrollingBroker, ek: str, ak: AkAlgorithm
) -> None:
    live = enrolling.live
    with certified_tpm(enrolling.ca, ek) as (tpm, cert):
        attester = TpmAttester(tpm.tcti, ak_algorithm=ak)
        _approve(live, attester, cert)
        # (c) Before enrolment the AK is not trusted: the guest is refused by policy.
        denied = _refused_resource(live.url, attester)
        assert denied.status == 401 and "PolicyDeny" in denied.error_type

        answer = enrol(live.url, attester, ek=AkAlgorithm(ek))
        ak_public = base64.b64encode(attester.ak_public_der()).decode()
        assert answer == {
            "ak_public": ak_public,
            "ek_fingerprint": _fingerprint(cert),
            "reference_value": "trusted_aks",
            "added": True,
        }
        assert _trusted_aks(live) == [ak_public]

        with KbsClient(live.url, attester) as guest:
            assert guest.get_resource(SECRET) == VALUE
            cpu0 = guest.token().claims()["submods"]["cpu0"]
        assert cpu0["ear.status"] == "affirming"
        assert cpu0["ear.veraison.annotated-evidence"]["tpm"]["ak_public"] == ak_public

        # Enrolling again changes nothing; the audit log has both enrolments, no secret.
        assert enrol(live.url, attester, ek=AkAlgorithm(ek))["added"] is False
        assert _trusted_aks(live) == [ak_public]
        with live.admin() as admin:
            audit = admin.export_audit().decode()
        assert audit.count('"status":"enrolled"') == 2
        assert _fingerprint(cert) in audit


def test_a_tpm_certified_by_another_ca_is_refused(enrolling: EnrollingBroker) -> None:
    """(a) The EK certificate is the authority: one from another CA enrols nothing, even when
    the admin listed that EK."""
    rogue = TestCa.create(enrolling.ca.certificate.subject.rfc4514_string()[3:])  # same name
    with certified_tpm(rogue) as (tpm, cert):
        attester = TpmAttester(tpm.tcti)
        _approve(enrolling.live, attester, cert)
        with pytest.raises(KbsRequestError) as refused:
            enrol(enrolling.live.url, attester)
    assert refused.value.status == 401 and "AttestationError" in refused.value.error_type
    assert "not issued by a CA of the broker's tpm_ek_ca_bundle" in refused.value.detail
    assert _trusted_aks(enrolling.live) == []


def test_an_ak_from_another_tpm_cannot_be_enrolled(enrolling: EnrollingBroker) -> None:
    """(b) A guest with a genuine, approved TPM claims another TPM's AK: the credential is
    made for that AK's Name, which its own TPM does not hold, so it cannot recover the secret;
    the other TPM holds the AK but not the EK. A guessed secret is refused, once."""
    live = enrolling.live
    with certified_tpm(enrolling.ca) as (tpm_a, cert_a), running_swtpm() as tpm_b:
        own, other = TpmAttester(tpm_a.tcti), TpmAttester(tpm_b.tcti)
        _approve(live, own, cert_a)
        request = EnrolRequest(own.ek_certificate(), other.ak_public_area())
        with httpx.Client() as http:
            answer = http.post(f"{live.url}/kbs/v0/tpm/enrol", json=request.to_json())
            assert answer.status_code == 200, answer.text
            challenge = EnrolChallenge.from_json(answer.json())
            for tpm_holding_part in (own, other):
                with pytest.raises(TpmAttesterError):
                    tpm_holding_part.activate_credential(
                        challenge.credential_blob, challenge.encrypted_secret
                    )
            guess = ActivateRequest(challenge.id, secrets.token_bytes(32)).to_json()
            wrong = http.post(f"{live.url}/kbs/v0/tpm/enrol/activate", json=guess)
            again = http.post(f"{live.url}/kbs/v0/tpm/enrol/activate", json=guess)
    assert wrong.status_code == 401
    assert "the AK is not resident in the TPM of that EK" in wrong.json()["detail"]
    assert again.status_code == 401 and "no such enrolment challenge" in again.json()["detail"]
    assert _trusted_aks(live) == []


def test_a_never_enrolled_ak_is_refused_with_the_reason(enrolling: EnrollingBroker) -> None:
    """(c) Another TPM of the same fleet, approved but never enrolled: its quote verifies,
    its PCRs match, and it is refused because its AK is not trusted; the admin sees why."""
    live = enrolling.live
    with certified_tpm(enrolling.ca) as (tpm_a, cert_a):
        enrolled = TpmAttester(tpm_a.tcti)
        with certified_tpm(enrolling.ca) as (tpm_b, cert_b):
            stranger = TpmAttester(tpm_b.tcti)
            _approve(live, enrolled, cert_a, cert_b)
            enrol(live.url, enrolled)
            denied = _refused_resource(live.url, stranger)
    correlation = denied.detail.split("correlation id ")[1].split(";")[0]
    with live.admin() as admin:
        why = admin.get_denial(correlation)
    failed = str(why["attestation"])
    assert "trusted_aks" in failed and "accepted(input.tpm.ak_public" in failed


def test_an_unapproved_ek_is_refused_naming_it(enrolling: EnrollingBroker) -> None:
    """A genuine TPM the tenant's admin has not approved: refused, and the refusal names the
    EK fingerprint the admin would list in tpm_allowed_eks."""
    with certified_tpm(enrolling.ca) as (tpm, cert):
        with pytest.raises(KbsRequestError) as refused:
            enrol(enrolling.live.url, TpmAttester(tpm.tcti))
    assert refused.value.status == 401
    assert _fingerprint(cert) in refused.value.detail
    assert "tpm_allowed_eks" in refused.value.detail


def test_enrolment_is_off_without_a_ca_bundle(broker: LiveBroker) -> None:
    with httpx.Client() as http:
        answer = http.post(
            f"{broker.url}/kbs/v0/tpm/enrol",
            json={"ek_certificate": b64std_encode(b"x"), "ak_public": b64std_encode(b"y")},
        )
    assert answer.status_code == 404
    assert "tpm_ek_ca_bundle" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("path", "body", "detail"),
    [
        ("tpm/enrol", {"ek_certificate": "AA=="}, "exactly"),
        ("tpm/enrol", {"ek_certificate": "not base64", "ak_public": "AA=="}, "base64"),
        ("tpm/enrol/activate", {"id": "0" * 32, "secret": "AAAA"}, "exactly 32 bytes"),
        ("tpm/enrol/activate", {"id": "../x", "secret": b64std_encode(bytes(32))}, "hex"),
    ],
)
def test_malformed_enrolment_requests_are_400(
    enrolling: EnrollingBroker, path: str, body: dict[str, str], detail: str
) -> None:
    with httpx.Client() as http:
        answer = http.post(f"{enrolling.live.url}/kbs/v0/{path}", json=body)
    assert answer.status_code == 400, answer.text
    assert detail in answer.json()["detail"]


def test_guest_cli_enrols(enrolling: EnrollingBroker, capsys: pytest.CaptureFixture[str]) -> None:
    """``custodes guest tpm-enrol``: prints the EK fingerprint, then enrols."""
    with certified_tpm(enrolling.ca) as (tpm, cert):
        assert main(["guest", "tpm-enrol", "--tcti", tpm.tcti, "--show-ek"]) == 0
        assert capsys.readouterr().out.strip() == _fingerprint(cert)
        attester = TpmAttester(tpm.tcti)
        _approve(enrolling.live, attester, cert)
        args = ["guest", "tpm-enrol", "--url", enrolling.live.url, "--tcti", tpm.tcti]
        assert main(args) == 0
        out = capsys.readouterr().out
        ak_public = base64.b64encode(attester.ak_public_der()).decode()
    assert out.startswith("enrolled: ") and _fingerprint(cert) in out and ak_public in out
    assert _trusted_aks(enrolling.live) == [ak_public]


def test_guest_cli_errors_are_one_line(
    enrolling: EnrollingBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_swtpm() as tpm:  # no EK certificate in NV
        assert main(["guest", "tpm-enrol", "--tcti", tpm.tcti, "--show-ek"]) != 0
        no_cert = capsys.readouterr().err
        with certified_tpm(enrolling.ca) as (certified, _):
            args = ["guest", "tpm-enrol", "--url", enrolling.live.url, "--tcti", certified.tcti]
            assert main(args) != 0  # the EK is not approved
            refused = capsys.readouterr().err
    assert no_cert.startswith("custodes: error: ") and no_cert.count("\n") == 1
    assert "no rsa EK certificate (NV index 0x01c00002)" in no_cert
    assert refused.startswith("custodes: error: ") and refused.count("\n") == 1
    assert "tpm_allowed_eks" in refused and "Traceback" not in refused


def test_enrolment_is_per_tenant(tmp_path: Path) -> None:
    """An AK enrolled at a tenant's URL is trusted by that tenant only; the EK approval is the
    tenant's own too."""
    ca = TestCa.create()
    (tmp_path / "ek-ca.pem").write_bytes(ca.pem())
    operator, acme_admin = (
        ed25519.Ed25519PrivateKey.generate(),
        ed25519.Ed25519PrivateKey.generate(),
    )
    write_public_pem(tmp_path / "operator.pub.pem", operator.public_key())
    config = KbsConfig(
        server=ServerConfig(listen="127.0.0.1:0", data_dir=tmp_path / "data"),
        attestation=AttestationConfig(tpm_ek_ca_bundle=tmp_path / "ek-ca.pem"),
        operator=OperatorConfig(public_keys=(tmp_path / "operator.pub.pem",)),
    ).validate()
    b = build_broker(config, clock=FrozenClock(time.time()))
    with serve_in_thread(create_app(b), config) as url, certified_tpm(ca) as (tpm, cert):
        acme_pem = acme_admin.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        with OperatorClient(url, operator) as op:
            op.create_tenant(
                "acme",
                [{"subject": "acme-admin", "role": "admin", "public_key": acme_pem.decode()}],
            )
        acme_url = f"{url}/tenants/acme"
        attester = TpmAttester(tpm.tcti)
        with AdminClient(acme_url, acme_admin, subject="acme-admin") as acme:
            acme.register_reference_values({"tpm_allowed_eks": [_fingerprint(cert)]})
        # The default tenant approved nothing: the same TPM cannot enrol there.
        with pytest.raises(KbsRequestError) as refused:
            enrol(url, attester)
        assert "not approved for this tenant" in refused.value.detail
        enrol(acme_url, attester)
        ak_public = base64.b64encode(attester.ak_public_der()).decode()
        with AdminClient(acme_url, acme_admin, subject="acme-admin") as acme:
            assert acme.get_reference_value("trusted_aks")["value"] == [ak_public]
        default_admin = load_admin_key(tmp_path / "data" / "admin-key.pem")
        with AdminClient(url, default_admin) as default:
            assert "trusted_aks" not in default.list_reference_values()
    b.close()
