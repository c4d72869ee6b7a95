"""INT8 recipes: named, frozen descriptions of how a fused fp32 graph is quantized.

Quantization always runs on the *fused* graph, so attention becomes QAttention. Which recipe is the
default is decided by measured recall (see README, "INT8 recipes"), not by habit.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from fastdpr.errors import ExportError


@dataclass(frozen=True)
class QuantRecipe:
    """How to quantize. ``method=dynamic`` uses ORT's ``quantize_dynamic`` (weights int8, activation
    scales computed per batch at run time, always U8 activations)."""

    name: str
    description: str
    method: Literal["dynamic"] = "dynamic"
    per_channel: bool = True
    reduce_range: bool = False

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
    )
}
DEFAULT_RECIPE = "dynamic-per-channel"


def get_recipe(name: str) -> QuantRecipe:
    """The recipe called ``name``; a clear error listing the known ones otherwise."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ExportError(f"unknown quantization recipe {name!r}; known: {', '.join(RECIPES)}, none") from None


def quantize(fused: Path, target: Path, recipe: QuantRecipe) -> dict[str, int]:
    """Quantize ``fused`` into ``target`` with ``recipe``; return the quantized-operator counts."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        fused,
        target,
        per_channel=recipe.per_channel,
        reduce_range=recipe.reduce_range,
        weight_type=QuantType.QInt8,
        # The fused contrib ops (Attention, SkipLayerNormalization...) have no type inference in the
        # quantizer; without a default type it refuses them.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    counts = Counter(node.op_type for node in onnx.load(str(target), load_external_data=False).graph.node)
    if counts.get("QAttention", 0) == 0:
        raise ExportError(f"quantizing {fused} produced no QAttention node; was the graph fused?")
    return {op: counts[op] for op in ("QAttention", "MatMulInteger", "DynamicQuantizeLinear") if counts.get(op)}
