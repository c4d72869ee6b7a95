"""One export, resolved: what every stage reads, in one object instead of a long argument list.

:func:`~fastdpr_export.pipeline.export_artifact` builds an :class:`ExportJob` once the sources are
resolved and the spec decided; each stage (:mod:`.stages`) then takes the job and one
:class:`ModelSource` and returns a report. Nothing here runs a model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from fastdpr.model.probes import Probes
from fastdpr.model.spec import EncoderSpec, Side

from .quantize import QuantRecipe
from .sources import ResolvedSource

Log = Callable[[str], None]

#: Probes per PyTorch / ONNX Runtime call when a stage embeds them (the manifest records it).
PROBE_BATCH_SIZE = 16


@dataclass(frozen=True)
class ModelSource:
    """One model directory of the artifact and the source it is exported from.

    ``name`` is the directory (``question`` and ``context`` for a pair, ``encoder`` for one shared
    model); ``sides`` the sides it serves.
    """

    name: str
    sides: tuple[Side, ...]
    resolved: ResolvedSource
    hf_tokenizer: Any = field(repr=False)  # transformers' fast tokenizer: the parity reference


@dataclass(frozen=True)
class ExportJob:
    """Everything the stages of one export share.

    ``staging`` is the artifact directory being built (moved into place only when every stage
    passed); ``workdir`` holds what the artifact does not keep (raw ONNX graphs, converted checkpoints).
    ``recipe`` is None for ``--quantize none``.
    """

    models: tuple[ModelSource, ...]
    spec: EncoderSpec
    spec_decisions: dict[str, str]
    recipe: QuantRecipe | None
    opset: int
    probes: Probes = field(repr=False)
    staging: Path
    workdir: Path
    log: Log = field(repr=False)
    #: Also build the OpenVINO passage backend (``--openvino``; :mod:`.openvino_backend`).
    openvino: bool = False

    @cached_property
    def inputs(self) -> dict[Side, Any]:
        """The probe inputs per side, as the runtime takes them: questions, and (title, text) passages."""
        return {"question": list(self.probes.questions), "context": self.probes.passage_pairs()}

    def model_dir(self, model: ModelSource) -> Path:
        """Where ``model``'s files go in the staged artifact."""
        return self.staging / model.name
