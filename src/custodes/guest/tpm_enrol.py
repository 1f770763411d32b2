"""The guest side of TPM AK enrolment: prove to the broker that the AK lives in this TPM.

Two requests to the broker (``{base}/kbs/v0/tpm/enrol`` then ``.../tpm/enrol/activate``, see
:mod:`custodes.attestation.tpm_enrol`): send the EK certificate from the TPM's NV and the AK's
public area; run TPM2_ActivateCredential on the credential the broker made for the AK's Name
under the EK; send back the secret it recovered. Only this TPM, with this AK loaded, can.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from custodes._internal.kbs_http import raise_for_error
from custodes.errors import MalformedMessage, UpstreamError
from custodes.guest.attester.tpm import AkAlgorithm, TpmAttester
from custodes.protocol.tpm_enrol import ActivateRequest, EnrolChallenge, EnrolRequest
from custodes.types.json import Json, JsonObject


def _post(http: httpx.Client, url: str, body: JsonObject) -> Json:
    try:
        response = http.post(url, json=body)
    except httpx.HTTPError as e:
        raise UpstreamError(f"cannot reach the broker at {url}: {e}") from e
    raise_for_error(response)
    try:
        answer: Json = response.json()
    except ValueError as e:
        raise MalformedMessage(f"the broker's answer to {url} is not JSON") from e
    return answer


def enrol(
    url: str,
    attester: TpmAttester,
    *,
    ek: AkAlgorithm = AkAlgorithm.RSA,
    ca_file: Path | None = None,
    timeout: float = 30.0,
) -> JsonObject:
    """Enrol the attester's AK with the broker at ``url`` (a KBS base URL, tenant URLs too);
    returns the broker's answer (``ak_public``, ``ek_fingerprint``, ``reference_value``,
    ``added``). A refusal is raised as :class:`~custodes._internal.kbs_http.KbsRequestError`.
    """
    base = url.rstrip("/") + "/kbs/v0/tpm/enrol"
    request = EnrolRequest(attester.ek_certificate(ek), attester.ak_public_area())
    verify: bool | str = str(ca_file) if ca_file else True
    with httpx.Client(timeout=timeout, verify=verify) as http:
        challenge = EnrolChallenge.from_json(_post(http, base, request.to_json()))
        secret = attester.activate_credential(
            challenge.credential_blob, challenge.encrypted_secret, ek
        )
        answer = _post(http, base + "/activate", ActivateRequest(challenge.id, secret).to_json())
    if not isinstance(answer, dict):
        raise MalformedMessage("the broker's enrolment answer is not a JSON object")
    return answer
