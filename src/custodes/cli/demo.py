"""`custodes demo [spine|fraud]`: runnable scenarios on the embedded defaults (SQLite, sample TEE).

``spine`` (the default) is the spine end to end; ``fraud`` is the confidential AI workload of
the fraud-detection example (:mod:`custodes.cli.demo_fraud`).

The spine demo: a broker starts on a free loopback port; the workload admin stores a secret
and registers reference values; a sample-TEE guest attests and receives the secret encrypted
to its own key; the admin then tightens what is trusted and the same guest is refused, with
the reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import tempfile
from pathlib import Path

from custodes._internal.kbs_http import KbsRequestError
from custodes.admin_client import AdminClient, load_admin_key
from custodes.attestation.ear import EarClaims
from custodes.cli import demo_fraud
from custodes.errors import ConfigError
from custodes.guest.attester.sample import SampleAttester
from custodes.guest.kbs_client import KbsClient
from custodes.kbs.app import create_app
from custodes.kbs.broker import build_broker
from custodes.kbs.config import AttestationConfig, KbsConfig, ServerConfig
from custodes.kbs.server import serve_in_thread
from custodes.protocol.resource import ResourcePath

SCENARIOS = ("spine", "fraud")
FRAUD_OPTIONS = ("rows", "keep", "example_dir", "gpu")
SECRET_PATH = ResourcePath("default", "key", "db-password")
# A demo value, printed on purpose: the point is to show it arriving in the TEE.
DEMO_SECRET = b"correct horse battery staple"

# AR4SI values the default policy uses, for a readable refusal.
AR4SI_MEANING = {
    2: "approved",
    3: "approved",
    33: "unrecognized runtime",
    36: "configuration unavailable",
    96: "contraindicated",
    97: "unrecognized hardware",
    99: "cryptographic validation failed",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="run a demo: the spine (default) or `fraud` (encrypted dataset, confidential AI)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        examples=[
            "custodes demo",
            "custodes demo spine --data-dir demo-state",
            "custodes demo fraud",
            "custodes demo fraud --gpu",
        ],
    )
    p.add_argument(
        "scenario",
        nargs="?",
        choices=SCENARIOS,
        default="spine",
        help="spine: broker, admin and a sample-TEE guest (default); fraud: an encrypted "
        "dataset for a fraud-detection model, Kubernetes Secret versus custodes",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        help="spine scenario: keep the broker's state here (default: a temporary directory, "
        "removed after)",
    )
    demo_fraud.add_arguments(p)
    p.set_defaults(func=run)


def _say(step: str, text: str = "") -> None:
    print(f"\n== {step}" if not text else f"   {text}", flush=True)


def _appraisal(client: KbsClient) -> str:
    cpu0 = EarClaims.parse(client.token().claims()).submodules["cpu0"]
    parts = [
        f"{k}={v} ({AR4SI_MEANING.get(v, 'no claim' if v == 0 else '?')})"
        for k, v in sorted((cpu0.vector or {}).items())
        if v
    ]
    return f"ear.status={cpu0.status}; " + ", ".join(parts)


def run(args: argparse.Namespace) -> int:
    fraud_options = [f"--{n.replace('_', '-')}" for n in FRAUD_OPTIONS if getattr(args, n)]
    if args.scenario == "fraud":
        if args.data_dir is not None:
            raise ConfigError("--data-dir is for the spine scenario; the fraud one takes --keep")
        return demo_fraud.run(args)
    if fraud_options:
        raise ConfigError(f"{', '.join(fraud_options)}: only for `custodes demo fraud`")
    with tempfile.TemporaryDirectory(prefix="custodes-demo-") as tmp:
        data_dir = args.data_dir or Path(tmp)
        return _demo(data_dir)


def _demo(data_dir: Path) -> int:
    config = KbsConfig(
        server=ServerConfig(listen="127.0.0.1:0", data_dir=data_dir),
        attestation=AttestationConfig(unsafe_allow_sample_tee=True),
    ).validate()
    broker = build_broker(config)
    _say("1. The workload admin starts the broker (SQLite store, sample TEE allowed)")
    with serve_in_thread(create_app(broker), dataclasses.replace(config)) as url:
        _say("", f"broker at {url}, state in {config.sqlite_path}")
        for notice in config.insecure_notices():
            _say("", f"!!! INSECURE: {notice} (demo only; every token says so)")
        admin = AdminClient(url, load_admin_key(data_dir / "admin-key.pem"))

        _say("2. The workload admin stores a secret and the reference values it trusts")
        admin.put_resource(SECRET_PATH, DEMO_SECRET)
        _say("", f"stored kbs:///{SECRET_PATH} ({len(DEMO_SECRET)} bytes)")
        trusted = {
            "svn": ["1"],
            "launch_digest": ["abcde"],
            "major_version": 1,
            "minimum_minor_version": 0,
        }
        admin.register_reference_values(trusted)
        _say("", f"reference values: {trusted}")

        _say("3. A guest in a (sample) TEE attests and asks for the secret")
        with KbsClient(url, SampleAttester()) as guest:
            secret = guest.get_resource(SECRET_PATH)
            _say("", f"appraisal: {_appraisal(guest)}")
            _say("", f"received, decrypted inside the TEE: {secret.decode()!r}")

        _say("4. The workload admin tightens the policy: only firmware SVN >= 2 is trusted")
        admin.register_reference_values({"svn": ["2"]})
        with KbsClient(url, SampleAttester()) as guest:
            try:
                guest.get_resource(SECRET_PATH)
            except KbsRequestError as e:
                _say("", f"the guest is refused ({e.status}): {e.detail}")
                _say("", f"its own token's appraisal: {_appraisal(guest)}")
                found = re.search(r"correlation id ([0-9a-f]+)", e.detail)
                if found is None:
                    print(
                        "demo: the refusal carries no correlation id; this is a bug",
                        file=sys.stderr,
                    )
                    return 1
                _say("5. The workload admin looks up why, by the correlation id")
                why = admin.get_denial(found.group(1))
                for submod, claims in (why["attestation"] or {}).get("explanation", {}).items():
                    for claim, detail in claims.items():
                        for f in detail["failed"]:
                            _say(
                                "",
                                f"{submod} {claim}={detail['value']}: failed condition "
                                f"`{f['condition']}`",
                            )
                            for name, value in f["claims"].items():
                                _say("", f"  claim {name} = {value!r}")
                            for name, value in f["reference_values"].items():
                                _say("", f"  reference value {name} = {value!r}")
            else:
                print("demo: the guest was NOT refused; this is a bug", file=sys.stderr)
                return 1
        admin.close()
    broker.close()
    _say("Done. The secret reached the TEE only while its evidence met the admin's policy.")
    return 0
