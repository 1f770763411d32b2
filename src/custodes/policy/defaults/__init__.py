"""The Rego policies custodes ships, read from package data.

* ``default_cpu``: the attestation policy for CPU-class evidence (stored as ``default_cpu``).
* ``default_gpu``: the attestation policy for GPU-class evidence (stored as ``default_gpu``).
* ``resource_policy``: the resource policy (release only to all-affirming appraisals).
"""

from __future__ import annotations

from importlib import resources
from typing import Final

from custodes.errors import NotFound

DEFAULT_POLICY_NAMES: Final = ("default_cpu", "default_gpu", "resource_policy")


def default_policy(name: str) -> str:
    """The text of the shipped policy ``name``; ``NotFound`` for any other name."""
    if name not in DEFAULT_POLICY_NAMES:
        raise NotFound(f"no shipped policy named {name!r}")
    return resources.files(__package__).joinpath(f"{name}.rego").read_text(encoding="utf-8")
