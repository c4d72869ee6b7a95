"""What a process holds in memory (Linux ``/proc/self``): RSS split into anonymous and file-backed pages,
and the resident pages of each mapped file. Used by ``scale-vectors`` and by tests/test_resident.py."""

from __future__ import annotations

from pathlib import Path

#: ``/proc/self/status`` fields reported (bytes).
STATUS_FIELDS = ("VmHWM", "VmRSS", "RssAnon", "RssFile")


def process_memory() -> dict[str, int]:
    """Peak and current RSS, and its anonymous and file-backed parts, in bytes."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in STATUS_FIELDS:
            fields[key] = int(value.split()[0]) * 1024
    return fields


def resident_by_file() -> dict[str, int]:
    """``{path: resident bytes}`` of every file mapped into this process (summed over its mappings)."""
    resident: dict[str, int] = {}
    path = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        if not fields[0].endswith(":"):  # a mapping's header: "start-end perms offset dev inode [path]"
            path = fields[5] if len(fields) > 5 and fields[5].startswith("/") else None
        elif fields[0] == "Rss:" and path is not None:
            resident[path] = resident.get(path, 0) + int(fields[1]) * 1024
    return resident


def resident_bytes(path: Path) -> int:
    """Resident bytes of ``path``'s mappings in this process (0 when it is not mapped)."""
    return resident_by_file().get(str(path.resolve()), 0)
