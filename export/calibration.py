"""What a data-driven INT8 recipe calibrates on, at export and when an artifact's int8 decisions are replayed.

Its own module because both the quantization stage and the benchmarks (which quantize peers exactly as
an artifact was quantized) need it, and neither should have to import the export pipeline for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fastdpr.model.artifact import Artifact
from fastdpr.model.batching import INPUTS_PER_CALL
from fastdpr.model.spec import Side
from fastdpr.model.tokenization import SpecTokenizer


def calibration_batches(tokenizers: dict[Side, SpecTokenizer], inputs: dict[Side, Any]) -> list[dict[str, np.ndarray]]:
    """The model feeds a data-driven INT8 recipe calibrates on: every probe (or ``--calibration``
    sample) of each side the model serves, fed as the runtime feeds them: one input per ONNX Runtime
    call (:data:`~fastdpr.model.batching.INPUTS_PER_CALL`), so dynamic int8 takes each activation scale from
    one input's own tokens, never from padding or batch companions. Calibrating on padded batches would
    tune the recipe for inputs the runtime never runs."""
    return [feeds for side, tokenizer in tokenizers.items()
            for _, feeds in tokenizer.sorted_batches(inputs[side], INPUTS_PER_CALL)]


def artifact_calibration_batches(artifact: Artifact, sides: Sequence[Side]) -> list[dict[str, np.ndarray]]:
    """The calibration batches ``artifact``'s export quantized ``sides`` with (its probes' calibration
    rows, batched as at export): replaying its int8 decisions needs exactly these."""
    probes = artifact.probes()
    inputs: dict[Side, Any] = {"question": list(probes.questions)[probes.calibration_rows("question")],
                               "context": probes.passage_pairs()[probes.calibration_rows("context")]}
    return calibration_batches({side: artifact.tokenizer(side) for side in sides}, inputs)
