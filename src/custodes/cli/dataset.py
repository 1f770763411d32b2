"""`custodes dataset`: data keys, and encrypting, decrypting and inspecting datasets.

The workload admin makes a data key and stores it in the broker in one step (``keygen
--store``), encrypts a file or tree under it (``encrypt``); inside the TEE, ``decrypt --url``
attests to the broker, fetches the key the file's header names and decrypts. The key is never
printed. See docs/datasets.md.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

from custodes.cli._common import (
    add_fetch_in_tee,
    add_url,
    admin_client,
    cacert_given,
    require_url,
    resource_uri_arg,
)
from custodes.cli._output import add_output_format, emit
from custodes.cli.admin_identity import add_credentials
from custodes.errors import ConfigError
from custodes.protocol.resource import ResourceUri
from custodes.types.json import Json
from custodes.types.secret import Secret

if TYPE_CHECKING:
    from custodes.datasets.files import Job
    from custodes.datasets.format import Header

# custodes.datasets (and with it cryptography) is imported by the handlers: `--help` stays
# light. The default chunk size, custodes.datasets.format.DEFAULT_CHUNK_SIZE (a test keeps
# them equal).
DEFAULT_CHUNK_SIZE: Final = 1024 * 1024

EPILOG = """\
Examples (workload admin, outside the cluster):
  custodes dataset keygen --out data.key --store kbs:///default/dataset/fraud \\
      --url https://broker:8080 --key admin-key.pem
  custodes dataset encrypt --key-file data.key --key-id kbs:///default/dataset/fraud \\
      transactions.csv transactions.csv.cdx
  custodes dataset inspect transactions.csv.cdx
inside the TEE (the key comes from the broker after attestation):
  custodes dataset decrypt --url https://broker:8080 --tee tpm \\
      transactions.csv.cdx /run/data/transactions.csv
"""

_SIZE: Final = re.compile(r"(?P<n>[0-9]+)\s*(?P<unit>|K|KiB|M|MiB)", re.IGNORECASE)
_UNITS: Final = {"": 1, "k": 1024, "kib": 1024, "m": 1024 * 1024, "mib": 1024 * 1024}
_REDRAW_SECONDS: Final = 0.1


def _chunk_size_arg(text: str) -> int:
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(f"{text!r}: a size such as 65536, 64K or 1MiB")
    return int(m["n"]) * _UNITS[m["unit"].lower()]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "dataset",
        help="encrypted datasets: data keys, encrypt, decrypt, inspect",
        description=(
            "Encrypt datasets of any size (AES-256-GCM, streamed in chunks) under a data key "
            "that only your broker holds; a TEE gets the key after attestation. "
            "See docs/datasets.md."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    kg = actions.add_parser(
        "keygen",
        help="make a data key: write it to a file and/or store it in the broker",
        description="Make a random 32-byte data key. The key is never printed.",
        examples=[
            "custodes dataset keygen --out data.key",
            "custodes dataset keygen --out data.key --store kbs:///default/dataset/fraud "
            "--url https://broker:8080 --key admin-key.pem",
        ],
    )
    kg.add_argument("--out", type=Path, help="key file to create (mode 0600; never overwritten)")
    kg.add_argument(
        "--text", action="store_true", help="write the key file in the base64 text form"
    )
    kg.add_argument(
        "--store",
        type=resource_uri_arg,
        help="also store the key in the broker at kbs:///repo/type/tag",
    )
    add_url(kg)
    add_credentials(kg, role="admin", needed_for="--store")
    kg.add_argument(
        "--replace",
        action="store_true",
        help="replace an existing resource at --store (data encrypted under it is lost)",
    )
    kg.set_defaults(func=_keygen)

    en = actions.add_parser(
        "encrypt",
        help="encrypt a file, or each file of a directory",
        examples=[
            "custodes dataset encrypt --key-file data.key --key-id kbs:///default/dataset/fraud "
            "transactions.csv transactions.csv.cdx",
            "custodes dataset encrypt --key-file data.key --key-id kbs:///default/dataset/fraud "
            "--chunk-size 4MiB data/ sealed/",
        ],
    )
    en.add_argument("--key-file", type=Path, required=True, help="the data key (raw or text)")
    en.add_argument(
        "--key-id",
        type=resource_uri_arg,
        required=True,
        help="kbs:///repo/type/tag where the broker holds the key (written in the header)",
    )
    en.add_argument(
        "--chunk-size",
        type=_chunk_size_arg,
        default=DEFAULT_CHUNK_SIZE,
        help="plaintext bytes per chunk, 4K to 64M (default 1M)",
    )
    en.add_argument("--force", action="store_true", help="replace existing output files")
    en.add_argument("input", type=Path, help="file or directory to encrypt")
    en.add_argument("output", type=Path, help="output file, or directory (<name>.cdx files)")
    en.set_defaults(func=_encrypt)

    de = actions.add_parser(
        "decrypt",
        help="decrypt with a key file (admin) or a key from the broker (inside a TEE)",
        description=(
            "Decrypt a dataset file, or a directory of .cdx files. With --url (inside a TEE) "
            "attest to the broker and fetch the key that the header's key id names; the "
            "output must then be on tmpfs/ramfs (e.g. /dev/shm), as for `custodes run "
            "--dataset`. On any failure nothing is left under the output name."
        ),
        examples=[
            "custodes dataset decrypt --key-file data.key transactions.csv.cdx transactions.csv",
            "custodes dataset decrypt --url https://broker:8080 --tee tpm "
            "transactions.csv.cdx /dev/shm/transactions.csv",
        ],
    )
    source = de.add_mutually_exclusive_group(required=True)
    source.add_argument("--key-file", type=Path, help="the data key (raw or text)")
    add_fetch_in_tee(de, what="the key", url_in=source)
    de.add_argument(
        "--key-id", type=resource_uri_arg, help="refuse files whose header names another key id"
    )
    de.add_argument("--force", action="store_true", help="replace existing output files")
    de.add_argument(
        "--allow-persistent",
        action="store_true",
        help="INSECURE, with --url: let the plaintext go to a filesystem that is not "
        "tmpfs/ramfs (by default it is refused, as `custodes run --dataset` refuses it)",
    )
    de.add_argument("input", type=Path, help="dataset file or directory of .cdx files")
    de.add_argument("output", type=Path, help="output file or directory")
    de.set_defaults(func=_decrypt)

    ins = actions.add_parser(
        "inspect",
        help="show a dataset's header and size (never decrypts, verifies nothing)",
        examples=[
            "custodes dataset inspect transactions.csv.cdx",
            "custodes dataset inspect sealed-dir/ -o json",
        ],
    )
    ins.add_argument("file", type=Path, help="dataset file, or a directory of .cdx files")
    add_output_format(ins)
    ins.set_defaults(func=_inspect)


# --- progress ----------------------------------------------------------------------------


class ProgressBar:
    """A one-line progress bar on a terminal (redrawn at most 10 times a second)."""

    def __init__(self, label: str, total: int, stream: TextIO, width: int = 30) -> None:
        self.label, self.total, self.stream, self.width = label, total, stream, width
        self.done = 0
        self.started = time.monotonic()
        self._drawn = 0.0

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._drawn >= _REDRAW_SECONDS:
            self._drawn = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        fraction = min(self.done / self.total, 1.0) if self.total else 1.0
        filled = int(fraction * self.width)
        rate = self.done / max(now - self.started, 1e-9) / 2**20
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
            f"{fraction * 100:5.1f}% {self.done / 2**20:,.1f}/{self.total / 2**20:,.1f} MiB "
            f"{rate:,.0f} MiB/s"
        )
        self.stream.flush()

    def close(self) -> None:
        self._draw(time.monotonic())
        self.stream.write("\n")
        self.stream.flush()


@contextmanager
def _progress(label: str, total: int) -> Iterator[ProgressBar | None]:
    """A bar when stderr is a terminal (else ``None``), drawn a last time however the work
    ends: a failed run shows how far it got."""
    bar = ProgressBar(label, total, sys.stderr) if sys.stderr.isatty() else None
    try:
        yield bar
    finally:
        if bar is not None:
            bar.close()


# --- keygen ------------------------------------------------------------------------------


def _keygen(args: argparse.Namespace) -> int:
    if args.out is None and args.store is None:
        raise ConfigError("say where the key goes: --out FILE, --store kbs:///…, or both")
    if args.text and args.out is None:
        raise ConfigError("--text is the form of the --out file")
    from custodes.datasets.keys import generate_key

    key = generate_key()
    if args.store is None:
        _write_key(args, key)
    else:
        _store_key(args, key)
    if args.out is None:
        print(
            "no key file was written: only the broker holds this key, so nothing can be "
            "encrypted under it here (pass --out to keep a copy for encrypting)",
            file=sys.stderr,
        )
        return 0
    key_id = args.store or "kbs:///<repo>/<type>/<tag>"
    print(
        f"next: custodes dataset encrypt --key-file {args.out} --key-id {key_id} IN OUT",
        file=sys.stderr,
    )
    return 0


def _write_key(args: argparse.Namespace, key: Secret[bytes]) -> None:
    from custodes.datasets.keys import write_key_file

    write_key_file(args.out, key, text=args.text)
    print(f"wrote the data key to {args.out} (mode 0600)", file=sys.stderr)


def _store_key(args: argparse.Namespace, key: Secret[bytes]) -> None:
    """Check the broker first (reachable, admin key accepted, resource free), then write
    the key file, then store: a failure before the store leaves no key file behind."""
    # Imported here: only --store talks to the broker.
    from custodes._internal.kbs_http import ResourceNotFound

    with admin_client(args, needed_for="--store") as client:
        try:
            client.resource_info(args.store.path)
        except ResourceNotFound:
            pass
        else:
            if not args.replace:
                raise ConfigError(
                    f"the broker already holds {args.store}; data encrypted under it would "
                    "be lost (pass --replace to replace it anyway)"
                )
        if args.out is not None:
            _write_key(args, key)
        try:
            client.put_resource(args.store.path, key.reveal())
        except BaseException:
            if args.out is not None:
                print(
                    f"the key file {args.out} was written but the key is NOT in the broker",
                    file=sys.stderr,
                )
            raise
    print(f"stored the data key in the broker at {args.store}", file=sys.stderr)


# --- encrypt / decrypt -------------------------------------------------------------------


def _file_size(path: Path) -> int:
    from custodes.datasets.errors import DatasetPathError

    try:
        return path.stat().st_size
    except OSError as e:
        raise DatasetPathError(f"{path}: {e.strerror}") from e


def _encrypt(args: argparse.Namespace) -> int:
    from custodes.datasets.files import encrypt_path, encrypt_plan
    from custodes.datasets.keys import read_key_file

    key = read_key_file(args.key_file)
    jobs = encrypt_plan(args.input, args.output)
    total = sum(_file_size(job.source) for job in jobs)
    with _progress("encrypting", total) as bar:
        written = encrypt_path(
            args.input,
            args.output,
            key,
            str(args.key_id),
            chunk_size=args.chunk_size,
            progress=bar,
            overwrite=args.force,
        )
    print(f"encrypted {len(written)} file(s), {total} bytes, under {args.key_id}", file=sys.stderr)
    return 0


def _headers(jobs: list[Job]) -> list[tuple[Header, int]]:
    """Each input's header and plaintext size (from its layout; not authenticated)."""
    from custodes.datasets.errors import DatasetPathError
    from custodes.datasets.format import plaintext_size, read_header

    out = []
    for job in jobs:
        try:
            with job.source.open("rb") as f:
                header = read_header(f)
        except OSError as e:
            raise DatasetPathError(f"{job.source}: {e.strerror}") from e
        out.append((header, plaintext_size(header, _file_size(job.source))))
    return out


def _broker_key(args: argparse.Namespace, key_id: str) -> Secret[bytes]:
    from custodes.datasets.keys import check_key
    from custodes.guest.attester.select import select_attester
    from custodes.guest.kbs_client import KbsClient

    url = require_url(args)  # given: --url chose this path
    resource = ResourceUri.parse(key_id).path
    attester = select_attester(args.tee, tcti=args.tcti)
    with KbsClient(url, attester, ca_file=args.cacert) as client:
        key = Secret(client.get_resource(resource))
    return check_key(key, what=f"the broker's resource {resource}")


def _check_memory_backed(args: argparse.Namespace) -> None:
    """Inside the TEE the plaintext goes to memory only, as for `custodes run --dataset`."""
    from custodes.datasets.errors import DatasetPathError
    from custodes.guest.dataset_launch import check_memory_backed

    output: Path = args.output
    if not output.parent.is_dir():
        raise DatasetPathError(
            f"cannot write {output}: directory {output.parent} does not exist (create it first)"
        )
    # With the override it warns (logged at WARNING, shown by default) and names the flag.
    check_memory_backed(
        output, allow_persistent=args.allow_persistent, override_flag="--allow-persistent"
    )


def _decrypt(args: argparse.Namespace) -> int:
    from custodes.datasets.errors import DatasetError, DatasetPathError
    from custodes.datasets.files import decrypt_path, decrypt_plan
    from custodes.datasets.keys import read_key_file

    given = args.tee or args.tcti or cacert_given(args) or args.allow_persistent
    if args.url is None and given:
        raise ConfigError("--tee, --tcti, --cacert and --allow-persistent go with --url")
    jobs = decrypt_plan(args.input, args.output)
    if not jobs:
        raise DatasetPathError(f"{args.input}: no .cdx files to decrypt")
    headers = _headers(jobs)
    key_ids = sorted({header.key_id for header, _ in headers})
    expected: str | None = str(args.key_id) if args.key_id is not None else None
    if args.url is not None:
        if len(key_ids) != 1:
            raise DatasetError(f"the files name {len(key_ids)} key ids; decrypt them one by one")
        if expected is not None and key_ids[0] != expected:
            raise DatasetError(f"the files are encrypted under {key_ids[0]}, not {expected}")
        expected = key_ids[0]
        _check_memory_backed(args)  # before attesting: no key leaves the broker for nothing
        key = _broker_key(args, expected)
    else:
        key = read_key_file(args.key_file)
    with _progress("decrypting", sum(size for _, size in headers)) as bar:
        written = decrypt_path(
            args.input,
            args.output,
            key,
            expected_key_id=expected,
            progress=bar,
            overwrite=args.force,
        )
    print(f"decrypted {len(written)} file(s) to {args.output}", file=sys.stderr)
    return 0


# --- inspect -----------------------------------------------------------------------------


def _describe(path: Path) -> dict[str, Json]:
    from custodes.datasets.errors import DatasetError, DatasetPathError
    from custodes.datasets.format import plaintext_size, read_header

    try:
        with path.open("rb") as f:
            header = read_header(f)
        size = _file_size(path)
    except OSError as e:
        raise DatasetPathError(f"{path}: {e.strerror}") from e
    info: dict[str, Json] = {
        "file": str(path),
        "format_version": header.version,
        "key_id": header.key_id,
        "chunk_size": header.chunk_size,
        "nonce_prefix": header.nonce_prefix.hex(),
        "header_size": header.encoded_size,
        "file_size": size,
    }
    try:
        plain = plaintext_size(header, size)
    except DatasetError as e:
        info["plaintext_size"] = None
        info["layout"] = f"INVALID: {e}"
    else:
        info["plaintext_size"] = plain
        info["chunks"] = plain // header.chunk_size + 1
        info["layout"] = "consistent (sizes only; nothing was authenticated)"
    return info


def _inspect(args: argparse.Namespace) -> int:
    from custodes.datasets.files import dataset_files

    path: Path = args.file
    described: Json
    if path.is_dir() and not path.is_symlink():
        described = [_describe(source) for source in dataset_files(path)]
    else:
        described = _describe(path)
    emit(args, described)
    return 0
