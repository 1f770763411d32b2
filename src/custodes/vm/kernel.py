"""The guest kernel: Debian's ``linux-image-amd64``, unpacked (``apt-get download`` then
``dpkg-deb -x``, no root and no initramfs hooks) into a cache directory that is not committed.

``scripts/setup-vm`` fills the cache; :func:`find_kernel` finds what it unpacked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from custodes.errors import ConfigError

CACHE_ENV = "CUSTODES_VM_CACHE"
_PACKAGE = "linux-image-amd64"


def cache_dir() -> Path:
    """``$CUSTODES_VM_CACHE``, else ``~/.cache/custodes/vm``."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "custodes" / "vm"


@dataclass(frozen=True, slots=True)
class Kernel:
    version: str
    vmlinuz: Path
    modules: Path  # lib/modules/<version>


def find_kernel(cache: Path | None = None) -> Kernel:
    """The unpacked kernel in ``cache``; a :class:`ConfigError` saying how to fetch it."""
    root = (cache or cache_dir()) / "kernel"
    images = sorted((root / "boot").glob("vmlinuz-*"))
    if not images:
        raise ConfigError(
            f"no guest kernel under {root}: run scripts/setup-vm (or custodes vm fetch-kernel)"
        )
    image = images[-1]
    version = image.name.removeprefix("vmlinuz-")
    modules = root / "lib" / "modules" / version
    if not (modules / "kernel").is_dir():
        raise ConfigError(f"the kernel {version} under {root} has no modules")
    return Kernel(version=version, vmlinuz=image, modules=modules)


def fetch_kernel(cache: Path | None = None) -> Kernel:
    """Download the current ``linux-image-amd64`` package and unpack it into the cache."""
    target = (cache or cache_dir()) / "kernel"
    for tool in ("apt-get", "apt-cache", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise ConfigError(f"fetching the kernel needs {tool} (a Debian or Ubuntu host)")
    depends = subprocess.run(
        ["apt-cache", "depends", _PACKAGE], capture_output=True, text=True, check=False
    ).stdout
    names = [
        line.split(":", 1)[1].strip()
        for line in depends.splitlines()
        if line.strip().startswith("Depends: linux-image-")
    ]
    if not names:
        raise ConfigError(f"apt-cache knows no {_PACKAGE} (run apt-get update)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        done = subprocess.run(
            ["apt-get", "download", names[0]], cwd=work, capture_output=True, text=True
        )
        debs = list(Path(work).glob("*.deb"))
        if done.returncode != 0 or not debs:
            raise ConfigError(f"apt-get download {names[0]} failed: {done.stderr.strip()}")
        unpacked = Path(work) / "kernel"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], check=True)
        if target.exists():
            shutil.rmtree(target)
        unpacked.rename(target)  # complete or absent: never half-unpacked
    return find_kernel(cache)
