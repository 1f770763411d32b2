"""Decryption throughput of an encrypted dataset, as ratios to floors and a peer in one run.

On a file of ``--size`` bytes (default 1 GiB, made in a temporary directory) this measures,
each ``--repeat`` times interleaved (best run kept):

* **custodes**: ``decrypt_stream`` from the ``.cdx`` file to ``/dev/null``, in process;
* **floor A, no I/O**: one-shot ``AESGCM.decrypt`` over the same number of 1 MiB chunks held
  in memory (64 distinct chunks, more than the L3 cache, cycled) — the raw cipher alone;
* **floor B, same I/O**: read the same ``.cdx`` file chunk by chunk, one-shot
  ``AESGCM.decrypt`` of each with its nonce and the header as AAD, write to ``/dev/null`` —
  raw AES-256-GCM doing the same reads and writes, without the format's checks;
* **read only**: the reads alone (the I/O share of the work);
* **age**: ``age -d -i IDENTITY -o /dev/null`` of the same plaintext encrypted to an X25519
  recipient (``age-keygen``; ``age -r``); wall time of the process, decryption only.

Every input is read once before timing, so all runs read from the page cache. Figures drift
on a shared machine; the ratios, taken in the same run, are what to compare.

Run: python bench/dataset.py [--size 1G] [--chunk-size 1M] [--repeat 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from custodes.datasets.files import encrypt_path
from custodes.datasets.format import (
    DEFAULT_CHUNK_SIZE,
    TAG_BYTES,
    chunk_nonce,
    decrypt_stream,
    read_header,
)
from custodes.datasets.keys import generate_key
from custodes.types.secret import Secret

KEY_ID = "kbs:///default/dataset/bench"
MiB = 1024 * 1024
FLOOR_CHUNKS = 64
UNITS = {"": 1, "K": 1024, "M": MiB, "G": 1024 * MiB}


def size_arg(text: str) -> int:
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = text[-1:] if text[-1:] in UNITS else ""
    return int(text[: len(text) - len(unit)]) * UNITS[unit]


@dataclass
class Row:
    what: str
    run: Callable[[], None]
    best: float = float("inf")


def make_plaintext(path: Path, size: int) -> None:
    block = os.urandom(16 * MiB)
    with path.open("wb") as f:
        written = 0
        while written < size:
            n = min(len(block), size - written)
            f.write(block[:n])
            written += n


def read_through(path: Path) -> None:
    buf = bytearray(MiB)
    with path.open("rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def custodes_run(sealed: Path, key: Secret[bytes]) -> Callable[[], None]:
    def run() -> None:
        with sealed.open("rb") as src, open(os.devnull, "wb") as dst:
            decrypt_stream(src, dst, key)

    return run


def floor_no_io(key: Secret[bytes], size: int, chunk: int) -> Callable[[], None]:
    aead = AESGCM(key.reveal())
    aad = b"\x00" * 50
    chunks = [
        aead.encrypt(i.to_bytes(12, "big"), os.urandom(chunk), aad) for i in range(FLOOR_CHUNKS)
    ]
    count = max(size // chunk, 1)

    def run() -> None:
        for i in range(count):
            j = i % FLOOR_CHUNKS
            aead.decrypt(j.to_bytes(12, "big"), chunks[j], aad)

    return run


def floor_same_io(sealed: Path, key: Secret[bytes]) -> Callable[[], None]:
    aead = AESGCM(key.reveal())

    def run() -> None:
        with sealed.open("rb") as src, open(os.devnull, "wb") as dst:
            header = read_header(src)
            aad = header.to_bytes()
            step = header.chunk_size + TAG_BYTES
            buf = bytearray(step)
            view = memoryview(buf)
            counter = 0
            while True:
                n = src.readinto(buf)
                final = n < step
                nonce = chunk_nonce(header.nonce_prefix, counter, final=final)
                dst.write(aead.decrypt(nonce, view[:n], aad))
                if final:
                    return
                counter += 1

    return run


def read_only(sealed: Path, chunk: int) -> Callable[[], None]:
    def run() -> None:
        buf = bytearray(chunk + TAG_BYTES)
        with sealed.open("rb") as src:
            while src.readinto(buf):
                pass

    return run


def age_run(age: str, identity: Path, sealed: Path) -> Callable[[], None]:
    def run() -> None:
        subprocess.run(
            [age, "-d", "-i", str(identity), "-o", os.devnull, str(sealed)],
            check=True,
            stdin=subprocess.DEVNULL,
        )

    return run


def age_setup(age: str, work: Path, plain: Path) -> tuple[Path, Path]:
    keygen = shutil.which("age-keygen") or str(Path(age).with_name("age-keygen"))
    identity = work / "age-identity.txt"
    subprocess.run([keygen, "-o", str(identity)], check=True, capture_output=True)
    recipient = subprocess.run(
        [keygen, "-y", str(identity)], check=True, capture_output=True, text=True
    ).stdout.strip()
    sealed = work / "data.age"
    subprocess.run([age, "-r", recipient, "-o", str(sealed), str(plain)], check=True)
    return identity, sealed


def age_version(age: str) -> str:
    out = subprocess.run([age, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size", type=size_arg, default=1024 * MiB, help="default 1G")
    parser.add_argument("--chunk-size", type=size_arg, default=DEFAULT_CHUNK_SIZE)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one)")
    parser.add_argument("--age", default=shutil.which("age") or "/usr/bin/age")
    args = parser.parse_args()
    size: int = args.size
    chunk: int = args.chunk_size

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="custodes-bench-") as tmp:
        work = Path(tmp)
        plain = work / "data.bin"
        print(f"preparing {size / MiB:,.0f} MiB in {work} ...", file=sys.stderr)
        make_plaintext(plain, size)
        key = generate_key()
        sealed = work / "data.cdx"
        encrypt_path(plain, sealed, key, KEY_ID, chunk_size=chunk)
        rows = [
            Row("custodes decrypt_stream (file -> /dev/null)", custodes_run(sealed, key)),
            Row("floor A: AESGCM.decrypt, 1 MiB, no I/O", floor_no_io(key, size, MiB)),
            Row("floor B: AESGCM.decrypt + the same I/O", floor_same_io(sealed, key)),
            Row("read only (the I/O share)", read_only(sealed, chunk)),
        ]
        have_age = Path(args.age).exists()
        if have_age:
            identity, age_sealed = age_setup(args.age, work, plain)
            read_through(age_sealed)
            rows.append(
                Row(
                    f"age {age_version(args.age)} -d, X25519 (file -> /dev/null)",
                    age_run(args.age, identity, age_sealed),
                )
            )
        plain.unlink()
        read_through(sealed)
        for _ in range(args.repeat):
            for row in rows:
                start = time.perf_counter()
                row.run()
                row.best = min(row.best, time.perf_counter() - start)

    def rate(row: Row) -> float:
        return size / MiB / row.best

    ours = rate(rows[0])
    print(
        f"\ndecrypting {size / MiB:,.0f} MiB, chunk {chunk // 1024} KiB, best of {args.repeat} "
        f"({os.cpu_count()} CPUs; absolute figures drift, ratios matter)\n"
    )
    print(f"| {'what':<48} | {'MiB/s':>7} | custodes / this |")
    print(f"|{'-' * 50}|{'-' * 9}|{'-' * 17}|")
    for row in rows:
        ratio = "" if row is rows[0] else f"{ours / rate(row):.2f}"
        print(f"| {row.what:<48} | {rate(row):>7,.0f} | {ratio:>15} |")
    if not have_age:
        print(f"\nage not found at {args.age}: no comparison", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
