"""Self-describing directories: JSON manifests, their file tables (confined to the directory, checked
by size, fingerprint or sha256), and atomic JSON writes.

Publishing whole directories (staging, locks, the swap) is :mod:`fastdpr.common.publish`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from fastdpr.common.errors import FastDPRError
from fastdpr.common.fields import Fields
from fastdpr.common.publish import file_mode, fsync_directory

__all__ = [
    "MANIFEST_NAME",
    "FileEntry",
    "FileTable",
    "Integrity",
    "file_table",
    "fingerprint_file",
    "library_versions",
    "read_manifest",
    "sha256_file",
    "verify_files",
    "write_json",
]

MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


#: Bytes hashed at each end of a file for its fingerprint.
FINGERPRINT_SPAN = 64 * 1024

#: How much of a directory's file table is checked: ``sizes`` (a stat per file), ``fingerprint`` (sizes,
#: and sha256 of each file's first and last 64 KiB: what every load does, a few milliseconds whatever
#: the index size), ``sha256`` (every byte: ``fastdpr info --verify`` and the end of every build).
Integrity = Literal["sizes", "fingerprint", "sha256"]
INTEGRITY_LEVELS: tuple[str, ...] = ("sizes", "fingerprint", "sha256")


def fingerprint_file(path: Path) -> str:
    """The hex sha256 of a file's size and its first and last 64 KiB.

    Cheap on a 15 GB passage store (two reads), and it changes when a file is truncated, extended,
    replaced, or rewritten in place by SQLite (whose header counts every write) or numpy/hnswlib (whose
    headers hold shapes). A flipped byte in the middle of a large file is only caught by the full
    sha256 (``fastdpr info --verify``).
    """
    size = path.stat().st_size
    digest = hashlib.sha256(size.to_bytes(8, "little"))
    with open(path, "rb") as handle:
        digest.update(handle.read(FINGERPRINT_SPAN))
        if size > FINGERPRINT_SPAN:
            handle.seek(max(FINGERPRINT_SPAN, size - FINGERPRINT_SPAN))
            digest.update(handle.read(FINGERPRINT_SPAN))
    return digest.hexdigest()


def file_table(root: Path, exclude: tuple[str, ...] = (MANIFEST_NAME,)) -> dict[str, dict[str, Any]]:
    """``{relative path: {"sha256", "bytes", "fingerprint"}}`` for every file below ``root`` (POSIX
    paths, sorted)."""
    table: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in exclude:
            continue
        table[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size,
                      "fingerprint": fingerprint_file(path)}
    return table


def confined_name(rel: Any) -> str | None:
    """Why ``rel`` may not name a file inside a manifest's directory (None: it may).

    Only plain relative POSIX paths are accepted: no absolute path, no ``..``, no ``.`` or empty part,
    no backslash (a Windows separator), no NUL. Symlinks are judged when the file is opened
    (:meth:`FileTable.check` resolves every path against the root).
    """
    if not isinstance(rel, str) or not rel:
        return "is not a file name"
    if "\\" in rel or "\x00" in rel:
        return "holds a backslash or NUL"
    path = PurePosixPath(rel)
    if path.is_absolute():
        return "is an absolute path"
    if any(part in ("..", ".", "") for part in rel.split("/")):
        return "leaves the directory (..) or is not a plain relative path"
    return None


@dataclass(frozen=True)
class FileEntry:
    """One file of a manifest's file table."""

    sha256: str
    bytes: int
    fingerprint: str | None  # None in manifests written before fingerprints: loads hash the whole file

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of the entry, as :func:`file_table` writes it."""
        entry: dict[str, Any] = {"sha256": self.sha256, "bytes": self.bytes}
        if self.fingerprint is not None:
            entry["fingerprint"] = self.fingerprint
        return entry


@dataclass(frozen=True)
class FileTable:
    """The files a manifest vouches for: the only files the runtime opens in its directory.

    Every name is a plain relative path (checked when parsed), every path is resolved against the root
    when checked (a symlink leading out of the root is refused), and :meth:`path` refuses a name the
    table does not list, so a manifest can neither point outside its directory nor around its checksums.
    """

    root: Path
    source: Path
    entries: Mapping[str, FileEntry]
    error: type[FastDPRError]

    @classmethod
    def parse(cls, fields: Fields, root: Path) -> FileTable:
        """Read the ``files`` object of a manifest."""
        table = fields.obj("files")
        entries: dict[str, FileEntry] = {}
        for rel in table.data:
            problem = confined_name(rel)
            if problem:
                fields.fail(f"files: {rel!r} {problem}")
            entry = table.obj(rel)
            sha = entry.string("sha256")
            if len(sha) != 64:
                fields.fail(f"files.{rel}.sha256 is not a sha256")
            entries[rel] = FileEntry(sha256=sha, bytes=entry.integer("bytes"),
                                     fingerprint=entry.optional_string("fingerprint"))
        return cls(root=root, source=fields.source, entries=entries, error=fields.error)

    @classmethod
    def scan(cls, root: Path, error: type[FastDPRError], under: str | None = None) -> FileTable:
        """The table of the files now on disk below ``root`` (only below ``root/under`` when given; the
        manifest itself excluded): what a writer records after its last write."""
        base = root / under if under else root
        prefix = f"{under}/" if under else ""
        entries = {prefix + rel: FileEntry(sha256=entry["sha256"], bytes=entry["bytes"],
                                           fingerprint=entry["fingerprint"])
                   for rel, entry in file_table(base).items()}
        return cls(root=root, source=root / MANIFEST_NAME, entries=entries, error=error)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The manifest's ``files`` object."""
        return {rel: entry.to_dict() for rel, entry in self.entries.items()}

    def require(self, rel: str, what: str) -> str:
        """``rel`` when the table lists it; else the manifest is refused (``what`` names the reference)."""
        if rel not in self.entries:
            problem = confined_name(rel)
            raise self.error(f"{self.source}: {what} {rel!r} "
                             + (problem if problem else "is not in the file table (no checksum vouches for it)"))
        return rel

    def path(self, rel: str) -> Path:
        """The path of a listed file (a name the table does not list is refused)."""
        return self.root / self.require(rel, "file")

    def check(self, level: Integrity) -> None:
        """Raise naming every listed file that is missing, outside the root, resized or altered.

        ``fingerprint`` falls back to the whole file's sha256 for entries written without a fingerprint
        (older manifests): slower, never weaker.
        """
        problems: list[str] = []
        root = self.root.resolve()
        for rel, entry in self.entries.items():
            problem = _file_problem(self.root / rel, root, entry, level)
            if problem:
                problems.append(f"{rel}: {problem}")
        if problems:
            more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
            raise self.error(f"{self.root} failed its integrity check: {problems[0]}{more}",
                             details="\n".join(problems) if len(problems) > 1 else None)


def _file_problem(path: Path, root: Path, entry: FileEntry, level: Integrity) -> str | None:
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        return f"resolves to {resolved}, outside the directory (symlink?)"
    if not resolved.exists():
        return "missing"
    if not resolved.is_file():
        return "not a regular file"
    size = resolved.stat().st_size
    if size != entry.bytes:
        return f"{size} bytes, manifest says {entry.bytes}"
    if level == "fingerprint" and entry.fingerprint is not None:
        if fingerprint_file(resolved) != entry.fingerprint:
            return "fingerprint differs from the manifest (file altered or replaced)"
    elif level != "sizes" and sha256_file(resolved) != entry.sha256:
        return "sha256 differs from the manifest (file altered or corrupted)"
    return None


def verify_files(root: Path, table: dict[str, dict[str, Any]], error: type[FastDPRError],
                 check_hashes: bool = True) -> None:
    """Check a raw file table (kept for callers of the old API; loaders use :class:`FileTable`)."""
    fields = Fields({"files": table}, root / MANIFEST_NAME, error)
    FileTable.parse(fields, root).check("sha256" if check_hashes else "sizes")


def library_versions(packages: tuple[str, ...]) -> dict[str, str]:
    """Python's and the installed ``packages``' versions, for manifests and reports."""
    import platform
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically and durably (temp file, fsync, rename, fsync of the directory), readable by
    everyone the umask allows: a reader never sees half a file, and a crash never leaves an empty one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
            handle.flush()
            os.fchmod(handle.fileno(), file_mode())  # mkstemp creates 0600
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_directory(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_manifest(root: Path, expected_format: str, supported_versions: tuple[int, ...],
                  error: type[FastDPRError]) -> Fields:
    """Load ``root/manifest.json`` and check its ``format`` and ``format_version``."""
    path = root / MANIFEST_NAME
    if not root.exists():
        raise error(f"{root} does not exist")
    if not root.is_dir():
        raise error(f"{root} is not a directory")
    if not path.is_file():
        raise error(f"{root} has no {MANIFEST_NAME}: not a {expected_format} (or an unfinished build)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise error(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != expected_format:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise error(f"{root} is not a {expected_format} (manifest format: {found!r})")
    if data.get("format_version") not in supported_versions:
        raise error(
            f"{root}: {expected_format} format version {data.get('format_version')!r} is not supported "
            f"by this fastdpr (supports {list(supported_versions)})"
        )
    return Fields(data, path, error)
