"""`custodes secret`: keygen, seal (custodes and upstream option spellings), unseal, inspect,
and unseal against a real broker (the sample TEE, in-process uvicorn) with no fakes."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives import serialization

from custodes.cli import main
from custodes.protocol.resource import ResourcePath
from custodes.sealed.format import SealedSecret, legacy_unsigned
from custodes.sealed.keys import generate_signing_key, private_jwk
from custodes.sealed.payload import VaultPayload

if TYPE_CHECKING:
    from live_broker import LiveBroker

KID = "kbs:///default/signing-key/sealed"


@pytest.fixture
def keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    priv, pub = tmp_path / "signing.jwk", tmp_path / "signing.pub.jwk"
    assert main(["secret", "keygen", "--kid", KID, "--out-private", str(priv),
                 "--out-public", str(pub)]) == 0  # fmt: skip
    capsys.readouterr()
    return priv, pub


def _seal_vault(priv: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    code = main(["secret", "seal", "vault", "--resource", "kbs:///default/key/pw",
                 "--key", str(priv), "--kid", KID, *extra])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out.strip()


def test_keygen_writes_jwk_pair(keys: tuple[Path, Path]) -> None:
    priv, pub = keys
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    private, public = json.loads(priv.read_text()), json.loads(pub.read_text())
    assert private["kid"] == public["kid"] == KID
    assert "d" in private and "d" not in public
    assert public["alg"] == "ES256" and public["use"] == "sig" and public["crv"] == "P-256"


def test_keygen_upstream_default_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["secret", "keygen", "--output-dir", str(tmp_path)]) == 0
    assert (tmp_path / "sealed-signing-private.json").is_file()
    assert (tmp_path / "sealed-signing-public.json").is_file()
    # A second run refuses to overwrite the keys.
    assert main(["secret", "keygen", "--output-dir", str(tmp_path)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err


def test_seal_vault_then_unseal_verifies(
    keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    priv, pub = keys
    text = _seal_vault(priv, capsys)
    assert SealedSecret.parse(text).kid == KID
    assert main(["secret", "unseal", "--public-key", str(pub), text]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["signature"] == "verified"
    assert shown["payload"] == VaultPayload(name="kbs:///default/key/pw").to_json()


def test_seal_with_upstream_option_spelling_and_order(
    keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    priv, pub = keys
    code = main(["secret", "seal", "--signing-kid", KID, "--signing-jwk-path", str(priv),
                 "vault", "--resource-uri", "kbs:///default/key/pw",
                 "-a", '{"note":"x"}'])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    sealed_file = tmp_path / "s.txt"
    sealed_file.write_text(out.out)  # with its trailing newline, as a file would have it
    assert (
        main(["secret", "unseal", "--public-key", str(pub), "--file-path", str(sealed_file)]) == 0
    )
    assert json.loads(capsys.readouterr().out)["payload"]["annotations"] == {"note": "x"}


def test_seal_with_pem_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = generate_signing_key()
    pem = tmp_path / "k.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pub = tmp_path / "k.pub.pem"
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    text = _seal_vault(pem, capsys)
    assert main(["secret", "unseal", "--public-key", str(pub), text]) == 0


def test_seal_needs_kid_and_key(
    keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    priv, _ = keys
    assert main(["secret", "seal", "vault", "--resource", "kbs:///a/b/c", "--key", str(priv)]) == 1
    assert "--kid" in capsys.readouterr().err


def test_unseal_with_wrong_key_fails(
    keys: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    priv, _ = keys
    text = _seal_vault(priv, capsys)
    other = tmp_path / "other.pub.jwk"
    other_key = generate_signing_key()
    other.write_text(json.dumps({k: v for k, v in private_jwk(other_key, "o").items() if k != "d"}))
    assert main(["secret", "unseal", "--public-key", str(other), text]) == 1
    assert "does not verify" in capsys.readouterr().err


def test_unseal_without_a_key_fails(
    keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    text = _seal_vault(keys[0], capsys)
    assert main(["secret", "unseal", text]) == 1
    assert "--public-key" in capsys.readouterr().err


def test_envelope_seal_and_local_unseal(
    keys: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    priv, pub = keys
    kek = tmp_path / "kek.bin"
    kek.write_bytes(bytes(range(32)))
    plain = tmp_path / "p.txt"
    plain.write_bytes(b"\x00binary\xff")
    code = main(["secret", "seal", "envelope", "--kek", "kbs:///default/kek/app",
                 "--kek-file", str(kek), "--plaintext-file", str(plain),
                 "--key", str(priv), "--kid", KID])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    text = out.out.strip()
    result = tmp_path / "out.bin"
    assert main(["secret", "unseal", "--public-key", str(pub), "--kek-file", str(kek),
                 "--output", str(result), text]) == 0  # fmt: skip
    assert result.read_bytes() == b"\x00binary\xff"
    # Without the KEK: the verified payload, not the plaintext.
    assert main(["secret", "unseal", "--public-key", str(pub), text]) == 0
    assert json.loads(capsys.readouterr().out)["payload"]["type"] == "envelope"


def test_envelope_kek_file_must_be_32_bytes(
    keys: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kek = tmp_path / "kek.txt"
    kek.write_text("password\n")
    code = main(["secret", "seal", "envelope", "--kek", "kbs:///default/kek/app",
                 "--kek-file", str(kek), "--plaintext-file", str(kek),
                 "--key", str(keys[0]), "--kid", KID])  # fmt: skip
    assert code == 1
    assert "32 raw bytes" in capsys.readouterr().err


def test_inspect_is_labelled_unverified(
    keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    text = _seal_vault(keys[0], capsys)
    assert main(["secret", "inspect", text]) == 0
    out = capsys.readouterr()
    shown = json.loads(out.out)
    assert "UNVERIFIED" in out.err and "UNVERIFIED" in shown["warning"]
    assert shown["signature"] == "NOT VERIFIED" and shown["kid"] == KID


def test_legacy_needs_allow_unsigned(capsys: pytest.CaptureFixture[str]) -> None:
    text = legacy_unsigned(VaultPayload(name="kbs:///default/key/pw").to_json())
    assert main(["secret", "unseal", text]) == 1
    assert "unsigned" in capsys.readouterr().err
    assert main(["secret", "unseal", "--skip-verification", text]) == 0
    assert json.loads(capsys.readouterr().out)["signature"].startswith("UNSIGNED")


def test_upstream_secret_verifies_from_the_cli(
    vectors: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = vectors / "guest-components" / "sealed-secret"
    assert main(["secret", "unseal", "--public-key",
                 str(folder / "kata-signing-public.jwk.json"),
                 "--file", str(folder / "kata-precreated-test.sealed.txt")]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["payload"]["name"] == (
        "kbs:///default/sealed-secret/test"
    )


def test_unseal_against_a_live_broker(
    broker: LiveBroker, keys: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real path: the guest attests (sample TEE), fetches the public key named by the kid
    and the value (vault) or the KEK (envelope) from the broker, and unseals."""
    priv, pub = keys
    kek = tmp_path / "kek.bin"
    kek.write_bytes(b"\x42" * 32)
    plain = tmp_path / "p.txt"
    plain.write_bytes(b"envelope value")
    with broker.admin() as admin:
        admin.put_resource(ResourcePath.parse("default/signing-key/sealed"), pub.read_bytes())
        admin.put_resource(ResourcePath.parse("default/key/pw"), b"vault value")
        admin.put_resource(ResourcePath.parse("default/kek/app"), kek.read_bytes())
    vault = _seal_vault(priv, capsys)
    code = main(["secret", "seal", "envelope", "--kek", "kbs:///default/kek/app",
                 "--kek-file", str(kek), "--plaintext-file", str(plain),
                 "--key", str(priv), "--kid", KID])  # fmt: skip
    envelope = capsys.readouterr().out.strip()
    assert code == 0
    for text, expected in ((vault, b"vault value"), (envelope, b"envelope value")):
        out = tmp_path / "out"
        out.unlink(missing_ok=True)
        code = main(["secret", "unseal", "--url", broker.url, "--tee", "sample",
                     "--output", str(out), text])  # fmt: skip
        assert code == 0, capsys.readouterr().err
        assert out.read_bytes() == expected
    # A secret signed by another key is refused even though the broker serves everything.
    stranger = tmp_path / "stranger.jwk"
    stranger.write_text(json.dumps(private_jwk(generate_signing_key(), KID)))
    forged = _seal_vault(stranger, capsys)
    assert main(["secret", "unseal", "--url", broker.url, "--tee", "sample", forged]) == 1
    assert "does not verify" in capsys.readouterr().err


def test_unseal_with_key_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    private, public = str(tmp_path / "a.jwk"), str(key_dir / "team-a")
    assert main(["secret", "keygen", "--kid", "team-a", "--out-private", private,
                 "--out-public", public]) == 0  # fmt: skip
    code = main(["secret", "seal", "vault", "--resource", "kbs:///default/key/pw",
                 "--key", str(tmp_path / "a.jwk"), "--kid", "team-a"])  # fmt: skip
    text = capsys.readouterr().out.strip()
    assert code == 0
    assert main(["secret", "unseal", "--key-dir", str(key_dir), text]) == 0
    assert json.loads(capsys.readouterr().out)["signature"] == "verified"


def test_uri_kid_needs_a_broker_with_key_directory(
    keys: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _seal_vault(keys[0], capsys)
    assert main(["secret", "unseal", "--key-dir", str(tmp_path), text]) == 1
    assert "needs a broker" in capsys.readouterr().err


def test_admin_environment_does_not_trigger_attestation(
    keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An admin shell has CUSTODES_URL set for `custodes admin`; unseal still verifies locally.
    monkeypatch.setenv("CUSTODES_URL", "http://127.0.0.1:9")
    text = _seal_vault(keys[0], capsys)
    assert main(["secret", "unseal", "--public-key", str(keys[1]), text]) == 0
    assert json.loads(capsys.readouterr().out)["signature"] == "verified"


def test_tee_without_url_refused(
    keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    text = _seal_vault(keys[0], capsys)
    assert main(["secret", "unseal", "--tee", "sample", text]) == 1
    assert "--url" in capsys.readouterr().err
