"""Which runtime encodes an index's passages: ONNX Runtime, or the artifact's OpenVINO graph (issue #21).

``auto`` (the default of ``fastdpr index``) takes OpenVINO only where the export proved it: the artifact
carries an OpenVINO passage graph (``fastdpr export --openvino``) that passed the same gates as the ONNX
int8 graph and was measurably faster on *this* CPU class, the passages run int8, and the ``openvino``
runtime is installed. Anything else is ONNX Runtime, and the index records which ran and why. Questions
always run on ONNX Runtime (a lone question is faster there: docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fastdpr.common.cpu import this_cpu
from fastdpr.common.errors import ArtifactError
from fastdpr.model.spec import Side

PassageBackendName = Literal["onnxruntime", "openvino"]
#: What ``--passage-backend`` accepts.
PASSAGE_BACKENDS = ("auto", "onnxruntime", "openvino")


@dataclass(frozen=True)
class OpenVinoEntry:
    """The manifest's ``backends.openvino``: the passage graph, how inputs are padded, what the export found."""

    model: str  # file-table path of the .xml (its .bin beside it)
    bucket_tokens: int
    passed: bool
    preferred_on: tuple[str, ...]
    speedup: float | None
    measured_on: str | None

    @classmethod
    def parse(cls, entry: Any, require: Any) -> OpenVinoEntry:
        """``entry`` is the manifest's ``backends.openvino`` (a checked-fields object); ``require`` checks
        that a path is in the artifact's file table and returns it."""
        passages = entry.obj("passages")
        model = require(passages.string("model"), "backends.openvino.passages.model")
        require(passages.string("weights"), "backends.openvino.passages.weights")
        validation = entry.obj("validation")
        speed = entry.raw("speed") or {}
        return cls(model=model, bucket_tokens=entry.integer("bucket_tokens", minimum=1),
                   passed=bool(validation.raw("passed")),
                   preferred_on=tuple(str(c) for c in (entry.raw("preferred_on") or [])),
                   speedup=speed.get("speedup") if isinstance(speed, dict) else None,
                   measured_on=validation.optional_string("cpu_class"))


@dataclass(frozen=True)
class PassageBackend:
    """The runtime chosen for an index's passages, and why (what the index manifest records)."""

    name: PassageBackendName
    reason: str

    def to_dict(self) -> dict[str, str]:
        """The index manifest's ``build.passage_backend``."""
        return {"name": self.name, "reason": self.reason}


#: ONNX Runtime, for builds that do not choose (Ray workers, indexes written before the choice existed).
ONNX_RUNTIME = PassageBackend("onnxruntime", "the build's encoder runs ONNX Runtime")


def choose_passage_backend(entry: OpenVinoEntry | None, precision: str, requested: str,
                           side: Side = "context") -> PassageBackend:
    """The backend for ``requested`` (one of :data:`PASSAGE_BACKENDS`); ``entry`` is the artifact's OpenVINO
    graph (None without one). ``openvino`` asked for and not usable is an :class:`ArtifactError` (or
    ``MissingDependencyError``) that says why; ``auto`` falls back to ONNX Runtime and says why."""
    from fastdpr.model.openvino_encoder import openvino_available, require_openvino

    if requested not in PASSAGE_BACKENDS:
        raise ArtifactError(f"unknown passage backend {requested!r} (choose from {', '.join(PASSAGE_BACKENDS)})")
    if requested == "onnxruntime":
        return PassageBackend("onnxruntime", "asked for (--passage-backend onnxruntime)")
    cpu = this_cpu().int8_class
    unusable = None
    if side != "context":
        unusable = "the OpenVINO graph encodes passages only"
    elif precision != "int8":
        unusable = f"passages run {precision}; the OpenVINO graph is int8"
    elif entry is None:
        unusable = "the artifact has no OpenVINO graph (export with --openvino)"
    elif not entry.passed:
        unusable = "the artifact's OpenVINO graph failed the export's checks (see its manifest)"
    if requested == "openvino":
        if unusable is not None:
            raise ArtifactError(f"--passage-backend openvino: {unusable}")
        require_openvino()
        return PassageBackend("openvino", f"asked for (--passage-backend openvino), on {cpu}")
    if unusable is not None:
        return PassageBackend("onnxruntime", unusable)
    assert entry is not None
    if cpu not in entry.preferred_on:
        return PassageBackend("onnxruntime", f"OpenVINO was not measured faster on {cpu} (export: "
                                             f"{entry.speedup}x on {entry.measured_on})")
    if not openvino_available():
        return PassageBackend("onnxruntime", "the openvino runtime is not installed (pip install 'fastdpr[openvino]')")
    return PassageBackend("openvino", f"passed the export's checks and ran {entry.speedup}x ONNX Runtime's "
                                      f"passages/s on {cpu}")
