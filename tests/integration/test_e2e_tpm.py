"""A guest with a real (software) TPM attests to the broker: it gets the secret while its PCRs
match the registered reference values, and is refused after a PCR is extended. The TPM is a
real swtpm started by the test on loopback; the broker runs on loopback too."""

from __future__ import annotations

import base64

import pytest

from custodes._internal.kbs_http import KbsRequestError
from custodes.guest.attester.tpm import AkAlgorithm, TpmAttester
from custodes.guest.kbs_client import KbsClient
from custodes.protocol.resource import ResourcePath
from live_broker import LiveBroker
from swtpm import running_swtpm

SECRET = ResourcePath("tenant", "key", "tpm-only")


@pytest.mark.parametrize("ak", [AkAlgorithm.RSA, AkAlgorithm.ECC])
def test_tpm_guest_gets_secret_until_a_pcr_changes(broker: LiveBroker, ak: AkAlgorithm) -> None:
    with running_swtpm() as tpm, broker.admin() as admin:
        attester = TpmAttester(tpm.tcti, ak_algorithm=ak)
        admin.put_resource(SECRET, b"released only to this TPM")

        # Without reference values the TPM is not trusted: executables stays 33 (warning).
        with KbsClient(broker.url, attester) as guest:
            with pytest.raises(KbsRequestError) as denied:
                guest.get_resource(SECRET)
            vector = guest.token().claims()["submods"]["cpu0"]["ear.trustworthiness-vector"]
        assert denied.value.status == 401 and "PolicyDeny" in denied.value.error_type
        assert vector["executables"] == 33

        # The workload admin registers this TPM's AK and its expected PCR 11.
        ak_public = base64.b64encode(attester.ak_public_der()).decode()
        pcr11 = attester.read_pcrs()[11].hex()
        admin.register_reference_values({"trusted_aks": [ak_public], "tpm_pcr11": [pcr11]})
        with KbsClient(broker.url, attester) as guest:
            assert guest.get_resource(SECRET) == b"released only to this TPM"
            claims = guest.token().claims()
        cpu0 = claims["submods"]["cpu0"]
        assert cpu0["ear.status"] == "affirming"
        assert cpu0["ear.veraison.annotated-evidence"]["tpm"]["pcr11"] == pcr11
        assert "custodes.insecure" in claims  # this test broker also allows the sample TEE

        # Something new runs in the guest: PCR 11 moves, the same guest is refused.
        attester.extend_pcr(11, b"an unexpected binary")
        with KbsClient(broker.url, attester) as guest:
            with pytest.raises(KbsRequestError) as denied:
                guest.get_resource(SECRET)
            cpu0 = guest.token().claims()["submods"]["cpu0"]
        assert "PolicyDeny" in denied.value.error_type
        assert cpu0["ear.status"] == "warning"
        assert cpu0["ear.trustworthiness-vector"]["executables"] == 33


def test_tpm_evidence_for_another_key_is_refused(broker: LiveBroker) -> None:
    """Evidence produced for one session's key cannot be replayed under another key."""
    with running_swtpm() as tpm:
        attester = TpmAttester(tpm.tcti)

        class Replaying:
            tee = attester.tee

            def __init__(self) -> None:
                self.recorded: object = None

            def evidence(self, report_data: bytes) -> object:
                if self.recorded is None:
                    self.recorded = attester.evidence(report_data)
                return self.recorded

        replaying = Replaying()
        with KbsClient(broker.url, replaying) as first:  # type: ignore[arg-type]
            first.attest()
        with KbsClient(broker.url, replaying) as second:  # type: ignore[arg-type]
            with pytest.raises(KbsRequestError) as refused:
                second.attest()
        assert refused.value.status == 401 and "AttestationError" in refused.value.error_type
