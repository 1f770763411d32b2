"""`custodes run` end to end: `custodes serve` on loopback, a guest whose TPM is a real swtpm
with its init-data bound in PCR 8, ten sealed environment variables and a sealed secret volume
(kubelet layout), one attestation for the whole start, then the unchanged workload runs with
the plaintext. The same start with different init-data is refused and the workload never runs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
from pathlib import Path

import httpx

from custodes.admin_client import AdminClient, load_admin_key
from custodes.guest.attester.tpm import TpmAttester
from custodes.protocol.resource import ResourcePath
from custodes.sealed.keys import generate_signing_key, public_jwk
from custodes.sealed.payload import VaultPayload
from custodes.sealed.seal import seal
from live_broker import ServedBroker, run_cli
from swtpm import running_swtpm

KID = "kbs:///default/sealing/key1"
WORKLOAD = """
import json, os, sys
from pathlib import Path
out = {k: v for k, v in os.environ.items() if k.startswith("SECRET_")}
out["volume"] = Path(sys.argv[1], "token").read_text()
Path(sys.argv[2]).write_text(json.dumps(out))
"""


def init_data(tag: str) -> str:
    return (
        'version = "0.1.0"\nalgorithm = "sha256"\n\n[data]\n'
        f"\"aa.toml\" = '''\n[token_configs.kbs]\nurl = \"{tag}\"\n'''\n"
    )


def pcr8_after(toml: str) -> str:
    digest = hashlib.sha256(toml.encode()).digest()
    return hashlib.sha256(b"\x00" * 32 + digest).hexdigest()


def policy_for(pcr8: str) -> str:
    return (
        "package policy\nimport rego.v1\n\ndefault allow := false\n\n"
        "allow if {\n"
        '    data.plugin == "resource"\n'
        '    input.submods.cpu0["ear.status"] == "affirming"\n'
        f'    input.submods.cpu0["ear.veraison.annotated-evidence"].init_data == "{pcr8}"\n'
        "}\n"
    )


def guest_config(url: str, tcti: str, volume: Path) -> str:
    return (
        f'[[brokers]]\nurl = "{url}"\n\n[attester]\ntee = "tpm"\ntcti = "{tcti}"\n\n'
        f'[run]\nsecret_mounts = ["{volume}"]\n'
    )


def kubelet_volume(root: Path, content: str) -> Path:
    """A Secret volume as kubelet lays it out: token -> ..data/token -> ..<ts>/token."""
    vol = root / "secret-volume"
    stamp = vol / "..2026_11_22_10_00_00.000000001"
    stamp.mkdir(parents=True)
    (stamp / "token").write_text(content)
    os.symlink(stamp.name, vol / "..data")
    os.symlink("..data/token", vol / "token")
    return vol


def attestations(url: str, tee: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("custodes_attestations_total{") and f'tee="{tee}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_custodes_run_unseals_and_execs(served: ServedBroker, tmp_path: Path) -> None:
    good = init_data("https://bank.example")
    signing = generate_signing_key()
    values = {f"SECRET_{i}": f"value-{i}-\N{SNOWMAN}" for i in range(10)}
    with AdminClient(served.url, load_admin_key(served.admin_key)) as admin, running_swtpm() as tpm:
        admin.put_resource(
            ResourcePath.parse("default/sealing/key1"),
            json.dumps(public_jwk(signing.public_key(), KID)).encode(),
        )
        sealed_env = {}
        for i, (name, value) in enumerate(values.items()):
            admin.put_resource(ResourcePath("default", "app", f"s{i}"), value.encode())
            sealed_env[name] = seal(VaultPayload(name=f"kbs:///default/app/s{i}"), signing, KID)
        admin.put_resource(ResourcePath("default", "app", "token"), b"volume-token")
        volume = kubelet_volume(
            tmp_path, seal(VaultPayload(name="kbs:///default/app/token"), signing, KID)
        )

        attester = TpmAttester(tpm.tcti)
        admin.register_reference_values(
            {
                "trusted_aks": [base64.b64encode(attester.ak_public_der()).decode()],
                "tpm_pcr11": [attester.read_pcrs()[11].hex()],
            }
        )
        # The only init-data this workload admin trusts is `good` (its PCR 8 value).
        policy = tmp_path / "policy.rego"
        policy.write_text(policy_for(pcr8_after(good)))
        admin.set_policy("resource", policy.read_text())

        config = tmp_path / "guest.toml"
        config.write_text(guest_config(served.url, tpm.tcti, volume))
        initdata_file = tmp_path / "initdata.toml"
        initdata_file.write_text(good)
        report = tmp_path / "report.json"
        result = run_cli(
            "run",
            "--config",
            str(config),
            "--initdata",
            str(initdata_file),
            "--",
            sys.executable,
            "-c",
            WORKLOAD,
            str(volume),
            str(report),
            env={**sealed_env, "PLAIN": "untouched"},
        )
        assert result.returncode == 0, result.stderr.decode()
        got = json.loads(report.read_text())
        assert {k: got[k] for k in values} == values
        assert got["volume"] == "volume-token"
        assert b"unsealed 10 environment variable(s) and 1 file(s) with 1 attestation(s)" in (
            result.stderr
        )
        # The kubelet symlink now points at the unsealed copy, written 0600 next to it.
        assert os.readlink(volume / "token").endswith("token.unsealed")
        unsealed = next(volume.glob("..2026*/token.unsealed"))
        assert unsealed.stat().st_mode & 0o777 == 0o600
        assert attestations(served.url, "tpm") == 1

    # A fresh TPM whose PCR 8 carries other init-data: refused, the workload never runs.
    with AdminClient(served.url, load_admin_key(served.admin_key)) as admin, running_swtpm() as tpm:
        attester = TpmAttester(tpm.tcti)
        admin.register_reference_values(
            {
                "trusted_aks": [base64.b64encode(attester.ak_public_der()).decode()],
                "tpm_pcr11": [attester.read_pcrs()[11].hex()],
            }
        )
        config.write_text(guest_config(served.url, tpm.tcti, volume))
        initdata_file.write_text(init_data("https://elsewhere.example"))
        report.unlink()
        result = run_cli(
            "run",
            "--config",
            str(config),
            "--initdata",
            str(initdata_file),
            "--",
            sys.executable,
            "-c",
            WORKLOAD,
            str(volume),
            str(report),
            env=sealed_env,
        )
        assert result.returncode == 1
        assert b"PolicyDeny" in result.stderr and b"SECRET_0" in result.stderr
        assert not report.exists()
