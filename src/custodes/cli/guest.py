"""`custodes guest`: the guest side, run inside the TEE."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from custodes.cli._common import add_url, require_url, resource_arg, write_output
from custodes.cli._guest_config import add_guest_config_options, guest_config, read_init_data_text
from custodes.cli._output import add_out
from custodes.errors import ConfigError
from custodes.guest.attester.select import GPU_MODES, SELECTABLE

if TYPE_CHECKING:
    from custodes.guest.kbs_client import KbsClient

# The client, its HTTP stack and its crypto are imported by the handlers: `--help` stays light.

EPILOG = """\
Examples:
  custodes guest attest --url https://broker:8080 --cacert ca.pem
  custodes guest get-resource --url http://127.0.0.1:8080 --tee sample kbs:///default/key/db-password
  custodes guest get-resource --url ... kbs:///default/key/model --out /run/secrets/model.key
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "guest",
        help="attest this TEE and fetch secrets (inside the confidential pod)",
        description=(
            "Attest this TEE to a broker (KBS protocol 0.4.0) and fetch resources, which "
            "arrive encrypted to an ephemeral key made inside the TEE."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def common(a: argparse.ArgumentParser) -> None:
        add_url(a)
        a.add_argument(
            "--tee",
            choices=SELECTABLE,
            help="attester to use (default: detect the TEE; the sample TEE is never detected)",
        )
        a.add_argument(
            "--key-type",
            choices=["ec-p256", "ec-p521", "rsa"],
            default="ec-p256",
            help="ephemeral TEE key (default ec-p256, ECDH-ES+A256KW; rsa = RSA-OAEP-256)",
        )
        a.add_argument(
            "--tcti",
            help="TPM to use with --tee tpm, e.g. swtpm:host=127.0.0.1,port=2321 "
            "(default $CUSTODES_TPM_TCTI, else device:/dev/tpmrm0)",
        )
        a.add_argument("--init-data", type=Path, help="init-data TOML sent with the evidence")
        a.add_argument(
            "--gpu",
            choices=GPU_MODES,
            default="auto",
            help="attest the NVIDIA GPUs too (default auto: when the driver is present; "
            "needs the custodes[gpu] extra)",
        )
        a.add_argument(
            "--policy-selector",
            metavar="NAME",
            help="ask for the attestation policy the broker maps NAME to "
            "(its attestation.policy_id_map; default: the broker's default policy)",
        )

    at = actions.add_parser(
        "attest",
        help="run the handshake and print the EAR token",
        examples=[
            "custodes guest attest --url https://broker:8080 --cacert ca.pem",
            "CUSTODES_URL=https://broker:8080 CUSTODES_CACERT=ca.pem custodes guest attest "
            "--tee tpm",
        ],
    )
    common(at)
    at.set_defaults(func=_attest)
    gr = actions.add_parser(
        "get-resource",
        help="fetch a resource (raw bytes to stdout)",
        examples=[
            "custodes guest get-resource --url https://broker:8080 --cacert ca.pem "
            "kbs:///default/key/db-password",
            "custodes guest get-resource --url https://broker:8080 --tee tpm "
            "default/key/model --out /run/secrets/model.key",
        ],
    )
    common(gr)
    gr.add_argument("resource", type=resource_arg, help="kbs:///repo/type/tag or repo/type/tag")
    add_out(gr, text="write to FILE (mode 0600) instead of stdout")
    gr.add_argument(
        "--via",
        choices=["bearer", "cookie"],
        default="bearer",
        help="present the token as a Bearer header (default, as upstream's guest) or the "
        "session cookie",
    )
    gr.set_defaults(func=_get_resource)

    te = actions.add_parser(
        "tpm-enrol",
        help="enrol this TPM's attestation key with the broker (credential activation)",
        description=(
            "Prove to the broker that the attestation key lives in this TPM: send the EK "
            "certificate and the AK, activate the credential the broker makes for them, send "
            "back the secret. The broker then trusts the AK for its tenant (trusted_aks). The "
            "EK must be approved by the workload admin (reference value tpm_allowed_eks): "
            "--show-ek prints the fingerprint to approve."
        ),
        examples=[
            "custodes guest tpm-enrol --show-ek",
            "custodes guest tpm-enrol --url https://broker:8080/tenants/acme --cacert ca.pem",
        ],
    )
    add_url(te)
    te.add_argument(
        "--tcti",
        help="the TPM (default $CUSTODES_TPM_TCTI, else device:/dev/tpmrm0)",
    )
    te.add_argument(
        "--ek", choices=["rsa", "ecc"], default="rsa", help="the EK to use (default rsa)"
    )
    te.add_argument(
        "--ak-algorithm",
        choices=["rsa", "ecc"],
        default="rsa",
        help="the AK to enrol, the one `--tee tpm` quotes with (default rsa)",
    )
    te.add_argument(
        "--show-ek",
        action="store_true",
        help="print the EK's fingerprint (for tpm_allowed_eks) and contact no broker",
    )
    te.set_defaults(func=_tpm_enrol)

    api = actions.add_parser(
        "api",
        help="serve upstream's guest REST API on 127.0.0.1:8006",
        description=(
            "Serve the guest REST API (upstream api-server-rest paths: /info, "
            "/cdh/resource/<repo>/<type>/<tag>, /aa/token, /aa/evidence, "
            "/aa/additional-evidence) on a loopback address only. The 'attestation' feature "
            "hands the TEE private key to local callers, as upstream does: off by default."
        ),
        examples=[
            "custodes guest api --config /etc/custodes/guest.toml",
            "custodes guest api --url https://broker:8080 --tee snp --listen 127.0.0.1:8006",
            "custodes guest api --url https://broker:8080 --gpu on --features all",
        ],
    )
    add_guest_config_options(api)
    api.add_argument("--init-data", type=Path, help="init-data TOML sent with the evidence")
    api.add_argument("--listen", help="loopback HOST:PORT (default 127.0.0.1:8006)")
    api.add_argument(
        "--features",
        choices=["resource", "attestation", "all"],
        help="what to expose (default: resource)",
    )
    api.set_defaults(func=_api)


def _client(args: argparse.Namespace) -> KbsClient:
    from custodes.guest.attester.select import select_attester, select_device_attesters
    from custodes.guest.kbs_client import KbsClient

    return KbsClient(
        require_url(args),
        select_attester(args.tee, tcti=args.tcti),
        key_kind=args.key_type,
        init_data=read_init_data_text(args.init_data),
        ca_file=args.cacert,
        policy_selector=args.policy_selector,
        device_attesters=select_device_attesters(args.gpu),
    )


def _attest(args: argparse.Namespace) -> int:
    with _client(args) as client:
        print(client.attest().value)
    return 0


def _get_resource(args: argparse.Namespace) -> int:
    from custodes._internal.kbs_http import KbsRequestError
    from custodes.protocol.appraisal import appraisal_summary

    with _client(args) as client:
        try:
            data = client.get_resource(args.resource, via=args.via)
        except KbsRequestError as e:
            if e.error_type.endswith("/PolicyDeny"):
                # The guest's own token says how it was appraised; the broker says no more.
                print(
                    f"your token's appraisal: {appraisal_summary(client.token().claims())}",
                    file=sys.stderr,
                )
            raise
    write_output(data, args.output, report=True)
    return 0


def _api(args: argparse.Namespace) -> int:
    import dataclasses

    import uvicorn

    from custodes.guest.agent import AttestationAgent
    from custodes.guest.cdh import ConfidentialDataHub
    from custodes.guest.rest import check_listen, create_rest_app

    config = guest_config(args)
    changes: dict[str, object] = {}
    if args.listen:
        changes["rest_listen"] = args.listen
    if args.features:
        changes["rest_features"] = args.features
    config = dataclasses.replace(config, **changes)  # type: ignore[arg-type]
    host, port = check_listen(config.rest_listen)
    init_data = read_init_data_text(args.init_data)
    # The attesters custodes run would choose: the CPU TEE's and, per --gpu, the GPUs'.
    agent = AttestationAgent.from_config(config, init_data=init_data)
    app = create_rest_app(ConfidentialDataHub(agent), config.rest_features)
    print(f"custodes guest api on http://{host}:{port} ({config.rest_features})", file=sys.stderr)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        agent.close()
    return 0


def _tpm_enrol(args: argparse.Namespace) -> int:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from custodes.attestation.verifiers.tpm.ekcert import ek_fingerprint
    from custodes.guest.attester.select import default_tcti
    from custodes.guest.attester.tpm import AkAlgorithm, TpmAttester
    from custodes.guest.tpm_enrol import enrol

    attester = TpmAttester(args.tcti or default_tcti(), ak_algorithm=AkAlgorithm(args.ak_algorithm))
    ek = AkAlgorithm(args.ek)
    if args.show_ek:
        try:
            key = x509.load_der_x509_certificate(attester.ek_certificate(ek)).public_key()
        except ValueError as e:
            raise ConfigError("the TPM's EK certificate is not a DER certificate") from e
        if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise ConfigError("the TPM's EK certificate holds neither an RSA nor an ECC key")
        print(ek_fingerprint(key))
        return 0
    answer = enrol(require_url(args), attester, ek=ek, ca_file=args.cacert)
    state = "enrolled" if answer.get("added") else "already enrolled"
    print(
        f"{state}: AK {answer.get('ak_public')} of the TPM with EK {answer.get('ek_fingerprint')} "
        f"is in the tenant's {answer.get('reference_value')}"
    )
    return 0
