"""INT8 recipes: named, frozen descriptions of how a fused fp32 graph is quantized.

Quantization always runs on the *fused* graph, so attention becomes QAttention. Which recipe is the
default is decided by measured recall (README, "INT8 recipes: the frontier"), not by habit. Recipes
that need data (smoothing, the sensitivity pass) take calibration batches: the probe passages and
questions, or a sample of ``--calibration FILE``.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastdpr.errors import ExportError

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class QuantRecipe:
    """How to quantize with ORT's ``quantize_dynamic`` (int8 weights; activation scales computed per
    batch tensor at run time; U8 activations).

    ``smooth_alpha``: SmoothQuant-style smoothing before quantizing (see ``smoothquant.py``).
    ``keep_fp32``: how many of the most sensitive MatMul/Attention nodes stay fp32, found by a
    per-node sensitivity pass (quantize one node at a time, measure embedding error on calibration
    inputs).
    """

    name: str
    description: str
    per_channel: bool = True
    reduce_range: bool = False
    smooth_alpha: float | None = None
    keep_fp32: int = 0

    @property
    def needs_calibration(self) -> bool:
        """Whether the recipe reads calibration inputs."""
        return self.smooth_alpha is not None or self.keep_fp32 > 0

    def settings(self) -> dict[str, Any]:
        """What the manifest records."""
        return asdict(self)


RECIPES: dict[str, QuantRecipe] = {
    r.name: r
    for r in (
        QuantRecipe("dynamic-per-tensor", "ORT dynamic int8 defaults: one weight scale per tensor",
                    per_channel=False),
        QuantRecipe("dynamic-per-channel", "dynamic int8 with one weight scale per output channel"),
        QuantRecipe("dynamic-per-channel-reduce-range", "per-channel dynamic int8 with 7-bit weights "
                    "(avoids U8S8 saturation on CPUs without VNNI)", reduce_range=True),
        QuantRecipe("dynamic-per-channel-smooth", "per-channel dynamic int8 after SmoothQuant-style "
                    "activation smoothing (alpha 0.5, calibrated)", smooth_alpha=0.5),
        QuantRecipe("dynamic-per-channel-keep2", "per-channel dynamic int8; the 2 most sensitive "
                    "MatMuls (per-node sensitivity pass on calibration data) stay fp32", keep_fp32=2),
        QuantRecipe("dynamic-per-channel-keep4", "per-channel dynamic int8; the 4 most sensitive "
                    "MatMuls (per-node sensitivity pass on calibration data) stay fp32", keep_fp32=4),
    )
}
DEFAULT_RECIPE = "dynamic-per-channel"


def get_recipe(name: str) -> QuantRecipe:
    """The recipe called ``name``; a clear error listing the known ones otherwise."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ExportError(f"unknown quantization recipe {name!r}; known: {', '.join(RECIPES)}, none") from None


def _quantize_dynamic(source: Path, target: Path, recipe: QuantRecipe, nodes_to_quantize: list[str] | None = None,
                      nodes_to_exclude: list[str] | None = None) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        source,
        target,
        per_channel=recipe.per_channel,
        reduce_range=recipe.reduce_range,
        weight_type=QuantType.QInt8,
        nodes_to_quantize=nodes_to_quantize,
        nodes_to_exclude=nodes_to_exclude,
        # The fused contrib ops (Attention, SkipLayerNormalization...) have no type inference in the
        # quantizer; without a default type it refuses them.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def _embed(path: Path, calibration: Sequence[Feeds]) -> np.ndarray:
    from fastdpr.encoder import OUTPUT_NAME
    from fastdpr.session import make_session

    session = make_session(path)
    return np.concatenate([session.run([OUTPUT_NAME], feeds)[0] for feeds in calibration])


def sensitivity(fused: Path, calibration: Sequence[Feeds], recipe: QuantRecipe, workdir: Path) -> dict[str, float]:
    """Mean ``1 - cosine`` to fp32 when only that node is quantized, for each MatMul/Attention node."""
    import onnx

    graph = onnx.load(str(fused), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    candidates = [n.name for n in graph.node
                  if n.op_type in ("MatMul", "Attention") and len(n.input) > 1 and n.input[1] in weights]
    reference = _embed(fused, calibration)
    errors: dict[str, float] = {}
    for name in candidates:
        one = workdir / "one-node.onnx"
        _quantize_dynamic(fused, one, recipe, nodes_to_quantize=[name])
        test = _embed(one, calibration)
        cosine = np.sum(test * reference, 1) / (np.linalg.norm(test, axis=1) * np.linalg.norm(reference, axis=1))
        errors[name] = float(1.0 - cosine.mean())
    return dict(sorted(errors.items(), key=lambda item: -item[1]))


def quantize(fused: Path, target: Path, recipe: QuantRecipe,
             calibration: Sequence[Feeds] | None = None) -> dict[str, Any]:
    """Quantize ``fused`` into ``target`` with ``recipe``; return operator counts and what the
    calibration-driven steps decided (for the manifest)."""
    import onnx

    if recipe.needs_calibration and not calibration:
        raise ExportError(f"recipe {recipe.name} needs calibration inputs")
    details: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fastdpr-quant-") as tmp:
        source = fused
        if recipe.smooth_alpha is not None:
            from .smoothquant import smooth_model

            source = Path(tmp) / "smoothed.onnx"
            details["smoothing"] = smooth_model(fused, source, calibration or [], recipe.smooth_alpha)
        exclude: list[str] = []
        if recipe.keep_fp32:
            ranked = sensitivity(source, calibration or [], recipe, Path(tmp))
            exclude = list(ranked)[: recipe.keep_fp32]
            details["kept_fp32"] = {name: round(ranked[name], 8) for name in exclude}
        _quantize_dynamic(source, target, recipe, nodes_to_exclude=exclude or None)
    counts = Counter(node.op_type for node in onnx.load(str(target), load_external_data=False).graph.node)
    if counts.get("QAttention", 0) == 0:
        raise ExportError(f"quantizing {fused} produced no QAttention node; was the graph fused?")
    details["operators"] = {op: counts[op] for op in ("QAttention", "MatMulInteger", "DynamicQuantizeLinear", "MatMul")
                            if counts.get(op)}
    return details
