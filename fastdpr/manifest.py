"""Self-describing directories: JSON manifests, file hashes, and atomic directory publication."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastdpr.errors import FastDPRError

MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_table(root: Path, exclude: tuple[str, ...] = (MANIFEST_NAME,)) -> dict[str, dict[str, Any]]:
    """``{relative path: {"sha256", "bytes"}}`` for every file below ``root`` (POSIX paths, sorted)."""
    table: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in exclude:
            continue
        table[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return table


def verify_files(root: Path, table: dict[str, dict[str, Any]], error: type[FastDPRError],
                 check_hashes: bool = True) -> None:
    """Raise ``error`` naming every file of ``table`` that is missing, resized or (optionally) altered."""
    problems: list[str] = []
    for rel, entry in table.items():
        path = root / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif path.stat().st_size != entry["bytes"]:
            problems.append(f"{rel}: {path.stat().st_size} bytes, manifest says {entry['bytes']}")
        elif check_hashes and sha256_file(path) != entry["sha256"]:
            problems.append(f"{rel}: sha256 differs from the manifest (file altered or corrupted)")
    if problems:
        more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
        raise error(f"{root} failed its integrity check: {problems[0]}{more}",
                    details="files that differ from the manifest:\n  " + "\n  ".join(problems))


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
    """Write JSON atomically (temp file + rename), so a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_manifest(root: Path, expected_format: str, supported_versions: tuple[int, ...],
                  error: type[FastDPRError]) -> dict[str, Any]:
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
    return data


@contextmanager
def atomic_directory(target: Path, force: bool, error: type[FastDPRError]) -> Iterator[Path]:
    """Build a directory elsewhere and move it to ``target`` only when the block succeeds.

    The staging directory sits next to ``target`` (same filesystem, so the final rename is atomic)
    and is removed on any failure, Ctrl-C included. A killed process can leave a hidden
    ``.target.building-*`` directory behind, but never a ``target`` that loads.
    """
    target = Path(target)
    if target.exists() and not force:
        raise error(f"{target} already exists; pass --force to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
    try:
        yield staging
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "previous")
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
