"""Whether an update may rely on an int8 check an index already records instead of running it again.

A build checks its artifact's int8 graphs on the CPU that encodes (:func:`fastdpr.model.verify.verify_int8_here`,
seconds of probe encoding) and records the result in the manifest (``int8_verification``), with the
CPU and the library versions. An update (``fastdpr index --append``) encodes with the same artifact; it
needs the same check, and the recorded one proves it when nothing the result depends on has changed:

- the artifact: its identity (sha256 of its manifest, which holds every model file's sha256), which
  the update requires to equal the index's in any case;
- the int8 kernels: the CPU description (int8 class and the deciding flags, :mod:`fastdpr.common.cpu`)
  and the onnxruntime version, both compared whole;
- the verdict: only a *passed* check is relied on; a failed one (an index built with
  ``--allow-unverified-int8``) is run again, so the update refuses or records it as a build would.

An update records the check it ran or relied on in its ``version.changes.int8_check``, with the
onnxruntime version, so the next update on that CPU can rely on it in turn (:func:`recorded_checks`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastdpr.common.cpu import this_cpu
from fastdpr.common.integrity import library_versions
from fastdpr.model.verify import Int8Verification

__all__ = ["RecordedCheck", "recorded_checks", "reusable_check", "runtime_version"]


@dataclass(frozen=True)
class RecordedCheck:
    """An int8 check a manifest records: where it was recorded, the check, and the onnxruntime that ran it."""

    source: str  # "build" or "version N"
    check: Int8Verification
    onnxruntime: str | None


def runtime_version() -> str:
    """The installed onnxruntime version (whose kernels decide int8 numbers)."""
    return library_versions(("onnxruntime",))["onnxruntime"]


def _verification(data: Any) -> Int8Verification | None:
    # A manifest is data from disk: a record that does not parse as a check is not relied on.
    if not isinstance(data, dict):
        return None
    try:
        return Int8Verification(**data)
    except TypeError:
        return None


def recorded_checks(raw: dict[str, Any]) -> Iterator[RecordedCheck]:
    """The int8 checks the manifest ``raw`` records: the latest update's (if it ran one), then the build's."""
    version = raw.get("version")
    changes = (version.get("changes") or {}) if isinstance(version, dict) else {}
    entry = changes.get("int8_check") if isinstance(changes, dict) else None
    # An update that relied on an earlier record copies it here, so a chain of updates keeps the last one.
    if isinstance(entry, dict) and (check := _verification(entry.get("verification"))) is not None:
        assert isinstance(version, dict)
        yield RecordedCheck(f"version {version.get('number')}", check, entry.get("onnxruntime"))
    if (check := _verification(raw.get("int8_verification"))) is not None:
        versions = raw.get("versions")
        yield RecordedCheck("build", check, versions.get("onnxruntime") if isinstance(versions, dict) else None)


def reusable_check(raw: dict[str, Any]) -> RecordedCheck | None:
    """A passed int8 check the manifest ``raw`` records for this CPU and this onnxruntime, if any.

    The caller has already required the artifact to be the one the index records (same identity).
    """
    cpu, runtime = this_cpu().to_dict(), runtime_version()
    for recorded in recorded_checks(raw):
        if recorded.check.passed and recorded.check.cpu == cpu and recorded.onnxruntime == runtime:
            return recorded
    return None
