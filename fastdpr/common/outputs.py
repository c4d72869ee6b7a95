"""Checks of output locations, made before any long work.

A results file that cannot be written should fail the command in its first second, not after an hour
of searching; an index that cannot be published should fail before its corpus is encoded. Writability
is proven by creating (and removing) a temporary file: permission bits alone say nothing for root or
for read-only filesystems such as ``/sys``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from fastdpr.common.errors import FastDPRError


class OutputError(FastDPRError):
    """An output path cannot be written (missing or unwritable directory, a directory where a file goes)."""


def _probe_writable(directory: Path, what: str, target: Path) -> None:
    try:
        with tempfile.TemporaryFile(dir=directory, prefix=".fastdpr-write-check-"):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write {what} {target}: {directory} is not writable ({exc.strerror})") from exc


def check_output_file(path: Path, what: str) -> Path:
    """Make sure ``path`` can be created (or replaced) as a file; raise :class:`OutputError` otherwise.

    Its directory must exist already: a mistyped directory is reported, never silently created.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a directory; give a file name")
    parent = path.parent
    if not parent.exists():
        raise OutputError(f"cannot write {what} {path}: directory {parent} does not exist")
    if not parent.is_dir():
        raise OutputError(f"cannot write {what} {path}: {parent} is not a directory")
    _probe_writable(parent, what, path)
    return path


def check_output_dir(path: Path, what: str, force: bool = False) -> Path:
    """Make sure the directory ``path`` can be created (missing parents included) or, with ``force``,
    replaced; raise :class:`OutputError` otherwise. Nothing is created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} exists and is not a directory")
    if path.exists() and not force:
        raise OutputError(f"{what} {path} already exists; pass --force to overwrite it")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"cannot create {what} {path}: {ancestor} is not a directory")
    _probe_writable(ancestor, what, path)
    return path
