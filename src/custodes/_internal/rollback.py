"""Undo what a failed start created, and nothing else.

A first ``custodes serve`` creates its data directory, keys, a master key and a database
before it can know that, say, its port is taken. If the start then fails, those files are
left behind: a later start would silently reuse keys nobody was told about. ``Created``
records, before the start, which of the watched paths exist (for a directory, every path
under it); :meth:`Created.undo` removes only the paths that appeared since, deepest first,
then the watched directories (and their missing ancestors) if the start created them.
What existed before is never touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path


def _nearest_existing(path: Path) -> Path:
    current = path.absolute()
    while not os.path.lexists(current) and current.parent != current:
        current = current.parent
    return current


def _tree(root: Path) -> set[Path]:
    found = {root}
    for top, dirs, files in os.walk(root, followlinks=False):
        base = Path(top)
        found.update(base / name for name in (*dirs, *files))
    return found


class Created:
    """A snapshot of watched directories and files; :meth:`undo` removes what is new."""

    def __init__(self, dirs: Iterable[Path], files: Iterable[Path] = ()) -> None:
        self._dirs = [d.absolute() for d in dirs]
        self._files = [f.absolute() for f in files]
        self._existing: set[Path] = set()
        self._anchors: dict[Path, Path] = {}
        for d in self._dirs:
            if d.is_dir() and not d.is_symlink():
                self._existing |= _tree(d)
            else:
                self._anchors[d] = _nearest_existing(d)
        for f in self._files:
            if os.path.lexists(f):
                self._existing.add(f)
            self._anchors.setdefault(f.parent, _nearest_existing(f.parent))

    def new_paths(self) -> list[Path]:
        """What appeared under the watched paths since the snapshot, deepest first."""
        now: set[Path] = set()
        for d in self._dirs:
            if d.is_dir() and not d.is_symlink():
                now |= _tree(d)
        now.update(f for f in self._files if os.path.lexists(f))
        return sorted(now - self._existing, key=lambda p: len(p.parts), reverse=True)

    def undo(self) -> list[Path]:
        """Remove the new paths (best effort); returns those removed."""
        removed = []
        for path in self.new_paths():
            with contextlib.suppress(OSError):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed.append(path)
        # Directories created on the way to a watched one (mkdir parents=True), if now empty.
        for start, anchor in self._anchors.items():
            current = start
            while current != anchor and anchor in current.parents:
                with contextlib.suppress(OSError):
                    current.rmdir()
                    removed.append(current)
                current = current.parent
        return removed
