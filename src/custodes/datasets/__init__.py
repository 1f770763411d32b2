"""Encrypted datasets: files of any size, encrypted with a data key the broker holds.

The workload admin makes a data key (:func:`generate_key`), stores it in the broker and
encrypts files or trees (:func:`encrypt_path`); inside the TEE, the key is fetched after
attestation and the data decrypted (:func:`decrypt_path`), streaming in bounded memory.
The format (AES-256-GCM in a STREAM construction) is in :mod:`custodes.datasets.format` and
``docs/datasets.md``.
"""

from __future__ import annotations

from custodes.datasets.errors import DatasetError
from custodes.datasets.files import decrypt_path, encrypt_path
from custodes.datasets.format import Header, decrypt_stream, encrypt_stream, read_header
from custodes.datasets.keys import generate_key, read_key_file, write_key_file

__all__ = [
    "DatasetError",
    "Header",
    "decrypt_path",
    "decrypt_stream",
    "encrypt_path",
    "encrypt_stream",
    "generate_key",
    "read_header",
    "read_key_file",
    "write_key_file",
]
