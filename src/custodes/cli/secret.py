"""`custodes secret`: make signing keys, seal secrets, and check or unseal them.

Options follow upstream's ``secret`` tool where they make sense; its option names are
accepted as aliases (``--signing-kid``, ``--signing-jwk-path``, ``--resource-uri``,
``--key-id``, ``--file-path``, ``--skip-verification``), and the signing options may come
before or after ``vault``/``envelope`` as in upstream's ``seal --signing-kid … vault …``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

from custodes.cli._common import add_fetch_in_tee, resource_uri_arg, write_output
from custodes.cli._output import add_out, add_output_format, emit
from custodes.errors import ConfigError
from custodes.protocol.resource import ResourceUri
from custodes.types.json import JsonObject
from custodes.types.secret import Secret

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

    from custodes.sealed.kids import KidResolver

# custodes.sealed (and with it cryptography) is imported by the handlers: `--help` stays light.
# The default key id, upstream's; custodes.sealed.keys.DEFAULT_KID (a test keeps them equal).
DEFAULT_KID: Final = "sealed-signing"

EPILOG = """\
Examples (workload admin, outside the cluster):
  custodes secret keygen --kid kbs:///default/signing-key/sealed \\
      --out-private signing.jwk --out-public signing.pub.jwk
  custodes admin resource put default/signing-key/sealed --file signing.pub.jwk
  custodes secret seal vault --resource kbs:///default/key/db-password \\
      --key signing.jwk --kid kbs:///default/signing-key/sealed
  head -c 32 /dev/urandom > kek.bin && custodes admin resource put default/kek/app --file kek.bin
  custodes secret seal envelope --kek kbs:///default/kek/app --kek-file kek.bin \\
      --plaintext-file token.txt --key signing.jwk --kid kbs:///default/signing-key/sealed
  custodes secret unseal --public-key signing.pub.jwk sealed.eyJ...
  custodes secret inspect sealed.eyJ...
"""

_SAFE_STEM: Final = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")
_UNVERIFIED: Final = "UNVERIFIED: the signature was not checked; do not trust this content"


def _json_object_arg(text: str) -> JsonObject:
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from e
    if not isinstance(obj, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return obj


def _add_signing(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: given on `seal` or on `seal vault`, whichever is set wins, neither resets it.
    p.add_argument(
        "--kid",
        "--signing-kid",
        dest="kid",
        default=argparse.SUPPRESS,
        help="key id written in the header: a kbs:/// URI where the guest fetches the public "
        "key, or a file name in the guest's key directory",
    )
    p.add_argument(
        "--key",
        "--signing-jwk-path",
        dest="key",
        type=Path,
        default=argparse.SUPPRESS,
        help="private signing key: P-256 JWK (as upstream) or PEM",
    )


def _add_sealed_input(p: argparse.ArgumentParser) -> None:
    p.add_argument("sealed", nargs="?", help="the sealed.… string, or - for stdin")
    p.add_argument("--file", "--file-path", dest="file", type=Path, help="read it from FILE")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "secret",
        help="sealed secrets: signing keys, seal, unseal, inspect (workload admin)",
        description=(
            "Sealed secrets are ES256-signed sealed.… strings that a Kubernetes Secret can "
            "hold in place of the value. Only a guest that attested to your broker can "
            "unseal them. See docs/sealed-secrets.md."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    kg = actions.add_parser(
        "keygen",
        help="make a P-256 signing key pair (JWK files)",
        examples=[
            "custodes secret keygen --kid kbs:///default/signing-key/sealed "
            "--out-private signing.jwk --out-public signing.pub.jwk",
            "custodes secret keygen --output-dir keys/",
        ],
    )
    kg.add_argument("--kid", default=DEFAULT_KID, help=f"key id (default {DEFAULT_KID})")
    kg.add_argument("--out-private", type=Path, help="private JWK file (mode 0600)")
    kg.add_argument("--out-public", type=Path, help="public JWK file")
    kg.add_argument(
        "--output-dir",
        type=Path,
        default=Path(),
        help="where <name>-private.json and <name>-public.json go when --out-* are not given",
    )
    kg.set_defaults(func=_keygen)

    se = actions.add_parser("seal", help="seal a vault or envelope secret (prints it)")
    _add_signing(se)
    kinds = se.add_subparsers(dest="kind", metavar="KIND", required=True)
    va = kinds.add_parser(
        "vault",
        help="a pointer to a broker resource that holds the value",
        examples=[
            "custodes secret seal vault --resource kbs:///default/key/db-password "
            "--key signing.jwk --kid kbs:///default/signing-key/sealed",
        ],
    )
    _add_signing(va)
    va.add_argument(
        "--resource",
        "--resource-uri",
        dest="resource",
        required=True,
        help="kbs:///repo/type/tag of the value (or a provider-specific name)",
    )
    va.add_argument(
        "--provider",
        default="kbs",
        choices=["kbs", "aliyun", "aws"],
        help="who holds the value (default kbs; custodes guests unseal kbs only)",
    )
    va.add_argument("--provider-settings", type=_json_object_arg, default={})
    va.add_argument("-a", "--annotations", type=_json_object_arg, default={})
    va.set_defaults(func=_seal_vault)
    en = kinds.add_parser(
        "envelope",
        help="the value itself, encrypted under a broker-held KEK",
        examples=[
            "custodes secret seal envelope --kek kbs:///default/kek/app --kek-file kek.bin "
            "--plaintext-file token.txt --key signing.jwk --kid kbs:///default/signing-key/sealed",
        ],
    )
    _add_signing(en)
    en.add_argument(
        "--kek",
        "--key-id",
        dest="kek",
        type=resource_uri_arg,
        required=True,
        help="kbs:///repo/type/tag where the broker holds the 32-byte key-encryption key",
    )
    en.add_argument(
        "--kek-file", type=Path, required=True, help="the same KEK, raw 32 bytes, read locally"
    )
    en.add_argument(
        "--plaintext-file", "--file-path", dest="plaintext_file", type=Path, required=True
    )
    en.set_defaults(func=_seal_envelope)

    un = actions.add_parser(
        "unseal",
        help="verify a sealed secret (and, with --url inside a TEE, fetch its value)",
        description=(
            "Without --url: verify the signature and print the payload, or with --kek-file "
            "open an envelope locally. With --url (inside a TEE): attest to the broker and "
            "print the plaintext, as the guest does."
        ),
        examples=[
            "custodes secret unseal --public-key signing.pub.jwk sealed.eyJ...",
            "custodes secret unseal --public-key signing.pub.jwk --kek-file kek.bin "
            "--file api-token.sealed --out token.txt",
            "custodes secret unseal --url https://broker:8080 --tee tpm --file db.sealed",
        ],
    )
    _add_sealed_input(un)
    un.add_argument("--public-key", type=Path, help="verification key: public JWK or PEM")
    un.add_argument(
        "--key-dir", type=Path, help="directory of public JWK files named by kid (as the guest)"
    )
    un.add_argument(
        "--allow-unsigned",
        "--skip-verification",
        dest="allow_unsigned",
        action="store_true",
        help="INSECURE: accept the legacy unsigned form (signed secrets are still verified)",
    )
    un.add_argument("--kek-file", type=Path, help="open an envelope with this local raw KEK")
    add_out(un, text="write the plaintext to FILE (mode 0600)")
    add_fetch_in_tee(un, what="the value")
    un.set_defaults(func=_unseal)

    ins = actions.add_parser(
        "inspect",
        help="show header and payload WITHOUT verifying",
        examples=[
            "custodes secret inspect sealed.eyJ...",
            "kubectl get secret db -o jsonpath='{.data.password}' | base64 -d | "
            "custodes secret inspect - -o yaml",
        ],
    )
    _add_sealed_input(ins)
    # A nested document: JSON by default (as before), YAML on request.
    add_output_format(ins, formats=("json", "yaml"), default="json")
    ins.set_defaults(func=_inspect)


# --- keygen ------------------------------------------------------------------------------


def _default_stem(kid: str) -> str:
    stem = kid.rsplit("/", 1)[-1]
    if not _SAFE_STEM.fullmatch(stem):
        raise ConfigError(f"cannot name key files after kid {kid!r}; pass --out-private/public")
    return stem


def _keygen(args: argparse.Namespace) -> int:
    out_private: Path | None = args.out_private
    out_public: Path | None = args.out_public
    if out_private is None or out_public is None:
        stem = _default_stem(args.kid)
        out_private = out_private or args.output_dir / f"{stem}-private.json"
        out_public = out_public or args.output_dir / f"{stem}-public.json"
    if out_private.resolve() == out_public.resolve():
        raise ConfigError("--out-private and --out-public must be different files")
    from custodes._internal.atomic import check_target

    # Both checked first: a refused public key file must not leave a lone private key.
    check_target(out_private, overwrite=False)
    check_target(out_public, overwrite=False)
    from custodes.sealed.keys import generate_signing_key, private_jwk, public_jwk, write_jwk

    key = generate_signing_key()
    write_jwk(out_private, private_jwk(key, args.kid), private=True)
    try:
        write_jwk(out_public, public_jwk(key.public_key(), args.kid), private=False)
    except BaseException:
        out_private.unlink(missing_ok=True)
        raise
    print(f"private key: {out_private} (keep it off the cluster)", file=sys.stderr)
    print(f"public key:  {out_public}", file=sys.stderr)
    if args.kid.startswith("kbs://"):
        print(
            f"next: store the public key in the broker at {args.kid}, e.g. "
            f"custodes admin resource put {args.kid} --file {out_public}",
            file=sys.stderr,
        )
    else:
        print(
            f"next: install the public key in the guest's key directory as {args.kid!r}",
            file=sys.stderr,
        )
    return 0


# --- seal --------------------------------------------------------------------------------


def _signing(args: argparse.Namespace) -> tuple[ec.EllipticCurvePrivateKey, str]:
    from custodes.sealed.keys import load_signing_key

    kid = getattr(args, "kid", None)
    key_path = getattr(args, "key", None)
    if not kid or key_path is None:
        raise ConfigError("sealing needs --kid and --key (signing is mandatory)")
    return load_signing_key(key_path), kid


def _seal_vault(args: argparse.Namespace) -> int:
    from custodes.sealed.payload import VaultPayload
    from custodes.sealed.seal import seal

    key, kid = _signing(args)
    if args.provider == "kbs":
        uri = ResourceUri.parse(args.resource)  # InvalidResourcePath: a clear error
        name = str(uri)
    else:
        name = args.resource
        print(
            f"warning: custodes guests unseal provider 'kbs' only, not {args.provider!r}",
            file=sys.stderr,
        )
    payload = VaultPayload(
        name=name,
        provider=args.provider,
        provider_settings=args.provider_settings,
        annotations=args.annotations,
    )
    print(seal(payload, key, kid))
    print(
        f"the value is not in the sealed secret: store it at {name} "
        f"(custodes admin resource put {name} --file VALUE)",
        file=sys.stderr,
    )
    return 0


def _read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from e


def _read_kek(path: Path) -> Secret[bytes]:
    from custodes.sealed.envelope import KEK_BYTES

    kek = Secret(_read_file(path, "KEK"))
    if len(kek) != KEK_BYTES:
        raise ConfigError(f"{path}: a KEK is exactly {KEK_BYTES} raw bytes, not {len(kek)}")
    return kek


def _seal_envelope(args: argparse.Namespace) -> int:
    from custodes.sealed.envelope import seal_envelope
    from custodes.sealed.seal import seal

    key, kid = _signing(args)
    kek = _read_kek(args.kek_file)
    plaintext = _read_file(args.plaintext_file, "plaintext")
    payload = seal_envelope(plaintext, kek=kek.reveal(), kek_uri=args.kek)
    print(seal(payload, key, kid))
    print(f"the broker must hold the same KEK at {args.kek}", file=sys.stderr)
    return 0


# --- unseal / inspect --------------------------------------------------------------------


def _sealed_text(args: argparse.Namespace) -> str:
    if (args.sealed is None) == (args.file is None):
        raise ConfigError("give the sealed secret as an argument, - for stdin, or --file")
    if args.file is not None:
        raw = _read_file(args.file, "sealed secret")
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{args.file}: a sealed secret is ASCII text") from e
    elif args.sealed == "-":
        text = sys.stdin.read()
    else:
        text = args.sealed
    # Files and shells add a trailing newline; the format itself has no whitespace.
    return str(text).strip()


def _kids(args: argparse.Namespace, broker: KidResolver | None) -> KidResolver | None:
    """--public-key for every kid; else, as the guest, URI kids to the broker (if any) and
    other kids to --key-dir (if given)."""
    from custodes.sealed.kids import DirectoryKidResolver, RoutingKidResolver

    if args.public_key is not None and args.key_dir is not None:
        raise ConfigError("give --public-key or --key-dir, not both")
    if args.public_key is not None:
        return _FixedKey(args.public_key)
    directory = DirectoryKidResolver(args.key_dir) if args.key_dir is not None else None
    if broker is None and directory is None:
        return None
    return RoutingKidResolver(broker=broker, directory=directory)


class _FixedKey:
    """One verification key given on the command line, whatever the kid says."""

    def __init__(self, path: Path) -> None:
        from custodes.sealed.keys import load_verification_key

        self._key = load_verification_key(path)

    def public_key(self, kid: str) -> ec.EllipticCurvePublicKey:
        return self._key


def _unseal(args: argparse.Namespace) -> int:
    from custodes.sealed.envelope import open_envelope
    from custodes.sealed.format import SealedSecret
    from custodes.sealed.payload import EnvelopePayload
    from custodes.sealed.unseal import verified_payload

    text = _sealed_text(args)
    if args.url is not None or args.tee is not None:
        return _unseal_with_broker(args, text)
    kids = _kids(args, broker=None)
    secret = SealedSecret.parse(text)
    if kids is None and secret.is_signed:
        raise ConfigError("pass --public-key or --key-dir to verify (or --url inside a TEE)")
    payload = verified_payload(secret, kids, allow_unsigned=args.allow_unsigned)
    if args.kek_file is not None:
        if not isinstance(payload, EnvelopePayload):
            raise ConfigError("--kek-file opens envelope secrets; this is a vault secret")
        kek = _read_kek(args.kek_file)
        write_output(open_envelope(payload, kek.reveal()), args.output, report=True)
        return 0
    print(
        json.dumps(
            {
                "signature": "verified" if secret.is_signed else "UNSIGNED (legacy form)",
                "header": secret.header,
                "payload": payload.to_json(),
            },
            indent=2,
            ensure_ascii=False,
        )
    )
    return 0


def _unseal_with_broker(args: argparse.Namespace, text: str) -> int:
    # Imported here: only this path needs the guest stack (attesters, HTTP client).
    from custodes.guest.attester.select import select_attester
    from custodes.guest.kbs_client import KbsClient
    from custodes.sealed.kids import BrokerKidResolver
    from custodes.sealed.unseal import unseal

    url: str | None = args.url
    if not url or not url.startswith(("http://", "https://")):
        raise ConfigError("unsealing through a broker needs --url http(s)://…")
    with KbsClient(url, select_attester(args.tee, tcti=args.tcti), ca_file=args.cacert) as client:

        def fetch(uri: ResourceUri) -> bytes:
            return client.get_resource(uri.path)

        kids = _kids(args, broker=BrokerKidResolver(fetch))
        plaintext = unseal(text, fetch=fetch, kids=kids, allow_unsigned=args.allow_unsigned)
    write_output(plaintext.reveal(), args.output, report=True)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from custodes.sealed.format import SealedSecret

    secret = SealedSecret.parse(_sealed_text(args))
    print(_UNVERIFIED, file=sys.stderr)
    emit(
        args,
        {
            "warning": _UNVERIFIED,
            "signature": "NOT VERIFIED" if secret.is_signed else "UNSIGNED (legacy form)",
            "kid": secret.kid,
            "header": secret.header,
            "payload": secret.payload,
        },
    )
    return 0
