"""INT8 recipes: named, frozen descriptions of how a fused fp32 graph is quantized.

Quantization always runs on the *fused* graph, so attention becomes QAttention. Which recipe is the
default is decided by measured recall (docs/benchmarks.md, "INT8 recipes: the frontier"), not by habit. Recipes
that need data (smoothing, the sensitivity pass) take calibration batches: the probe passages and
questions, or a sample of ``--calibration FILE``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from fastdpr.common.errors import ExportError

Feeds = dict[str, np.ndarray]

# The sensitivity pass re-runs the calibration set once per MatMul/Attention node (~24 for a 6-layer
# BERT), so it reads an evenly strided subset: 8 batches ranked the same top nodes as all 20 probe
# batches on MiniLM-DPR at a fraction of the export time.
SENSITIVITY_MAX_BATCHES = 8


@dataclass(frozen=True)
class QuantRecipe:
    """How to quantize with ORT's ``quantize_dynamic`` (int8 weights; activation scales computed per
    batch tensor at run time; U8 activations).

    ``smooth_alphas``: SmoothQuant-style smoothing before quantizing (see ``smoothquant.py``). One
    value is applied as is; with several, each is tried and the one whose int8 embeddings are closest
    to fp32 on the calibration inputs (mean ``1 - cosine``) is kept, per model.
    ``keep_fp32``: how many of the most sensitive MatMul/Attention nodes stay fp32, found by a
    per-node sensitivity pass (quantize one node at a time, measure embedding error on calibration
    inputs).
    ``quantize_embeddings``: also quantize the embedding tables (QEmbedLayerNormalization). A lookup
    gains no speed from int8, only a smaller file, and costs recall (measured: docs/benchmarks.md, the frontier).
    ``row_scales``: in a model that encodes passages, every MatMul input is quantized with one scale per
    token row instead of one per call (:mod:`.row_scales`; attention inputs keep ORT's per-call scale).
    A question-only model keeps per-call scales: per-row ops cost a short question ~12% of its latency
    (measured, x86-avx2) and bought no measurable recall there. Needs 7-bit weights to stay exact on
    AVX2 (``reduce_range``).
    ``question_keep_fp32``: in a question-only model, how many of the most sensitive nodes stay fp32
    instead of ``keep_fp32`` (None: the same). A question is short, so a few fp32 MatMuls cost it little
    latency, and its int8 error is what moves the ranking most (measured: docs/benchmarks.md, "The
    question side"). :meth:`for_model` gives the recipe one model is quantized with.
    ``row_products_fp32``: the products of a first-token final layer that multiply one row per input
    (:func:`~.first_token.row_product_nodes`) stay fp32. In a passage model they cost nothing measurable and
    the query product was the most sensitive node by far once it ran on one row; in a question-only model
    (``for_model``: False) the four fp32 GEMVs cost a short question ~8% of its latency (measured,
    x86-avx512-vnni), so there they are ranked by the sensitivity pass like any other node.
    """

    name: str
    description: str
    per_channel: bool = True
    reduce_range: bool = False
    smooth_alphas: tuple[float, ...] = ()
    keep_fp32: int = 0
    quantize_embeddings: bool = True
    row_scales: bool = False
    question_keep_fp32: int | None = None
    row_products_fp32: bool = True

    def __post_init__(self) -> None:
        if self.row_scales and not self.reduce_range:
            # u8 rows span [1, 255]: with 8-bit weights AVX2's saturating int16 pair sums would change
            # the integers; the signed kernel that avoids it ran 7x slower than U8S8 there (measured).
            raise ExportError(f"recipe {self.name}: row_scales needs reduce_range (7-bit weights)")

    @property
    def needs_calibration(self) -> bool:
        """Whether the recipe reads calibration inputs."""
        return bool(self.smooth_alphas) or self.keep_fp32 > 0 or bool(self.question_keep_fp32)

    def for_model(self, encodes_passages: bool) -> QuantRecipe:
        """The recipe one model is quantized with: a model that encodes passages (a context encoder or
        a shared one) takes the recipe as it is; a question-only model keeps per-call activation scales
        and keeps ``question_keep_fp32`` nodes fp32 when that is set."""
        if encodes_passages:
            return self
        keep = self.keep_fp32 if self.question_keep_fp32 is None else self.question_keep_fp32
        return replace(self, row_scales=False, keep_fp32=keep, question_keep_fp32=None, row_products_fp32=False)

    def settings(self) -> dict[str, Any]:
        """What the manifest records (JSON types: tuples become lists)."""
        settings = asdict(self)
        settings["smooth_alphas"] = list(self.smooth_alphas)
        return settings


#: The alphas the auto-smoothing recipe tries. SmoothQuant's paper uses 0.5 for most models and up to
#: 0.75-0.85 for models with strong outliers; on MiniLM-DPR the passage-side error kept falling up to
#: ~0.8 (docs/benchmarks.md, the frontier), so the grid leans high.
AUTO_SMOOTH_ALPHAS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9)

RECIPES: dict[str, QuantRecipe] = {
    r.name: r
    for r in (
        QuantRecipe("dynamic-per-tensor", "ORT dynamic int8 defaults: one weight scale per tensor",
                    per_channel=False),
        QuantRecipe("dynamic-per-channel", "dynamic int8 with one weight scale per output channel"),
        QuantRecipe("dynamic-per-channel-fp32-embeddings", "per-channel dynamic int8; embedding tables stay fp32",
                    quantize_embeddings=False),
        QuantRecipe("dynamic-per-channel-reduce-range", "per-channel dynamic int8 with 7-bit weights "
                    "(avoids U8S8 saturation on CPUs without VNNI)", reduce_range=True),
        QuantRecipe("dynamic-per-channel-smooth", "per-channel dynamic int8 after SmoothQuant-style "
                    "activation smoothing (alpha 0.5, calibrated)", smooth_alphas=(0.5,)),
        QuantRecipe("dynamic-per-channel-keep2", "per-channel dynamic int8; the 2 most sensitive "
                    "MatMuls (per-node sensitivity pass on calibration data) stay fp32", keep_fp32=2),
        QuantRecipe("dynamic-per-channel-keep4", "per-channel dynamic int8; the 4 most sensitive "
                    "MatMuls (per-node sensitivity pass on calibration data) stay fp32", keep_fp32=4),
        QuantRecipe("dynamic-per-channel-smooth-auto", "per-channel dynamic int8 after SmoothQuant-style "
                    "smoothing, alpha searched per model on calibration data; embedding tables stay fp32",
                    smooth_alphas=AUTO_SMOOTH_ALPHAS, quantize_embeddings=False),
        QuantRecipe("dynamic-per-channel-smooth-auto-7bit", "as dynamic-per-channel-smooth-auto, with 7-bit "
                    "weights: integer arithmetic exact on every x86 int8 kernel (AVX2 U8S8 never saturates)",
                    smooth_alphas=AUTO_SMOOTH_ALPHAS, quantize_embeddings=False, reduce_range=True),
        QuantRecipe("dynamic-per-channel-smooth-auto-7bit-rows", "as dynamic-per-channel-smooth-auto-7bit, with "
                    "one activation scale per token row for every MatMul of the passage encoder (attention "
                    "inputs and a question-only encoder: one per call)",
                    smooth_alphas=AUTO_SMOOTH_ALPHAS, quantize_embeddings=False, reduce_range=True, row_scales=True),
        QuantRecipe("dynamic-per-channel-smooth-auto-7bit-rows-qkeep2", "as dynamic-per-channel-smooth-auto-7bit-rows; "
                    "the question encoder's 2 most sensitive MatMuls (per-node sensitivity pass on calibration "
                    "questions) stay fp32", smooth_alphas=AUTO_SMOOTH_ALPHAS, quantize_embeddings=False,
                    reduce_range=True, row_scales=True, question_keep_fp32=2),
        # Passage side (issue #19): the 4 most sensitive nodes of the passage encoder (per-node sensitivity
        # pass on the calibration passages, not the evaluation set) stay fp32; the question encoder keeps 2
        # as in -qkeep2. keep_fp32 is the passage encoder's count here, question_keep_fp32 the question's.
        QuantRecipe("dynamic-per-channel-smooth-auto-7bit-rows-qkeep2-pkeep4", "as "
                    "dynamic-per-channel-smooth-auto-7bit-rows-qkeep2; the passage encoder's 4 most sensitive "
                    "MatMul/Attention nodes (per-node sensitivity pass on calibration passages) stay fp32 too",
                    smooth_alphas=AUTO_SMOOTH_ALPHAS, quantize_embeddings=False, reduce_range=True, row_scales=True,
                    keep_fp32=4, question_keep_fp32=2),
    )
}
# The default since the graphs run LayerNormalization and one QuantizeLinear per quantized activation
# (export/layer_norm.py, export/row_scales.py): int8 + HNSW within 0.25 points of PyTorch at Top-1/5/20/50/100
# on all of SQuAD dev (x86-avx512-vnni), and its passages still ~2x fused fp32 and faster than the previous
# default (-qkeep2) was (docs/benchmarks.md, "Faster graphs, and four passage nodes fp32").
DEFAULT_RECIPE = "dynamic-per-channel-smooth-auto-7bit-rows-qkeep2-pkeep4"
#: The precision questions run at by default (the artifact manifest's ``encoding`` plan; passages run
#: int8). Chosen by the side-by-side frontiers of issue #19 (docs/benchmarks.md, "Same input, same vector"
#: and "The question side"): on x86-avx2 fp32 questions changed answer recall by no more than the
#: measurement's noise; on x86-avx512-vnni the default's int8 questions (2 MatMuls fp32) lost less than fp32
#: questions at Top-5 (-0.65 vs -0.72 points, exact search) for a third of fp32's latency. So int8.
DEFAULT_QUESTION_PRECISION = "int8"


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

    from .row_scales import per_row_activation_scales

    quantized = target.with_name(f"{target.stem}.per-call.onnx") if recipe.row_scales else target
    quantize_dynamic(
        source,
        quantized,
        per_channel=recipe.per_channel,
        reduce_range=recipe.reduce_range,
        weight_type=QuantType.QInt8,
        # None: every op type the dynamic quantizer knows, EmbedLayerNormalization included.
        op_types_to_quantize=None if recipe.quantize_embeddings else ["MatMul", "Attention"],
        nodes_to_quantize=nodes_to_quantize,
        nodes_to_exclude=nodes_to_exclude,
        # The fused contrib ops (Attention, SkipLayerNormalization...) have no type inference in the
        # quantizer; without a default type it refuses them.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    if recipe.row_scales:
        per_row_activation_scales(quantized, target)
        quantized.unlink()


def _embed(path: Path, calibration: Sequence[Feeds]) -> np.ndarray:
    from fastdpr.model.encoder import OUTPUT_NAME
    from fastdpr.model.session import make_session

    session = make_session(path)
    return np.concatenate([session.run([OUTPUT_NAME], feeds)[0] for feeds in calibration])


def _mean_cosine_error(test: np.ndarray, reference: np.ndarray) -> float:
    cosine = np.sum(test * reference, 1) / (np.linalg.norm(test, axis=1) * np.linalg.norm(reference, axis=1))
    return float(1.0 - cosine.mean())


def sensitivity(fused: Path, calibration: Sequence[Feeds], recipe: QuantRecipe, workdir: Path,
                skip: Sequence[str] = ()) -> dict[str, float]:
    """Mean ``1 - cosine`` to fp32 when only that node is quantized, for each MatMul/Attention node (but
    ``skip``: nodes that stay fp32 anyway)."""
    import onnx

    graph = onnx.load(str(fused), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    candidates = [n.name for n in graph.node if n.op_type in ("MatMul", "Attention") and len(n.input) > 1
                  and n.input[1] in weights and n.name not in skip]
    reference = _embed(fused, calibration)
    errors: dict[str, float] = {}
    # Minutes on a real model: show progress on a terminal (tqdm stays quiet when stderr is piped).
    for name in tqdm(candidates, desc="      sensitivity", unit="node", leave=False, disable=None):
        one = workdir / "one-node.onnx"
        _quantize_dynamic(fused, one, recipe, nodes_to_quantize=[name])
        errors[name] = _mean_cosine_error(_embed(one, calibration), reference)
    return dict(sorted(errors.items(), key=lambda item: -item[1]))


def _smooth(fused: Path, recipe: QuantRecipe, calibration: Sequence[Feeds], workdir: Path,
            alpha: float | None, exclude: Sequence[str] = ()) -> tuple[Path, Path | None, dict[str, Any]]:
    """Smooth ``fused`` with the given ``alpha``, or with the recipe's alpha that, once quantized, is
    closest to fp32 on the calibration inputs. Returns the smoothed graph, its int8 graph when the
    search already made it (else None), and what was decided."""
    from .smoothquant import activation_maxima, smooth_model

    act_max = activation_maxima(fused, calibration)
    alphas = (alpha,) if alpha is not None else recipe.smooth_alphas
    best_smoothed, best_int8 = workdir / "smoothed.onnx", workdir / "smoothed.int8.onnx"
    if len(alphas) == 1:
        return best_smoothed, None, smooth_model(fused, best_smoothed, act_max, alphas[0])
    reference = _embed(fused, calibration)
    search: dict[str, float] = {}
    best: tuple[float, dict[str, Any]] | None = None
    smoothed, quantized = workdir / "candidate.onnx", workdir / "candidate.int8.onnx"
    for candidate in tqdm(alphas, desc="      smoothing alpha", unit="alpha", leave=False, disable=None):
        decided = smooth_model(fused, smoothed, act_max, candidate)
        _quantize_dynamic(smoothed, quantized, recipe, nodes_to_exclude=list(exclude) or None)
        error = _mean_cosine_error(_embed(quantized, calibration), reference)
        search[str(candidate)] = round(error, 8)
        if best is None or error < best[0]:
            best = (error, decided)
            # Keep only the best so far: a BERT-base candidate pair is ~0.6 GB of temporary files.
            smoothed.replace(best_smoothed)
            quantized.replace(best_int8)
    assert best is not None  # alphas is never empty here
    return best_smoothed, best_int8, {**best[1], "search_mean_cosine_error": search}


def replayed_nodes(graph: Any, names: list[str], fused: Path) -> tuple[list[str], list[str]]:
    """``(nodes of graph to keep fp32, names left int8)`` for ``names``, nodes an earlier quantization kept fp32.

    A name missing here but inside a fused ``Attention``'s self-attention (its output's name prefix, e.g.
    ``/backbone/encoder/layer.5/attention/self/``) is left int8: an artifact whose last layer runs for the
    first token only (:class:`~.torch_model.FirstTokenLayer`) has that layer's query, key and value as
    separate MatMuls, which a full export of the same model (the benchmarks' optimum peer) fuses into one
    node. Keeping the whole ``Attention`` fp32 for one of them would slow the peer beyond what the artifact
    keeps; leaving it int8 keeps the peer at most as fp32 as the artifact. Anything else missing is an
    :class:`ExportError`.
    """
    present = {node.name for node in graph.node}
    attention_scopes = [node.output[0].rsplit("/", 1)[0] + "/" for node in graph.node if node.op_type == "Attention"]
    replayed, left_int8, missing = [], [], []
    for name in names:
        if name in present:
            replayed.append(name)
        elif any(name.startswith(scope) for scope in attention_scopes):
            left_int8.append(name)
        else:
            missing.append(name)
    if missing:
        raise ExportError(f"{fused}: cannot replay kept fp32 nodes {missing}: not in this graph")
    return replayed, left_int8


def quantize(fused: Path, target: Path, recipe: QuantRecipe, calibration: Sequence[Feeds] | None = None,
             decisions: dict[str, Any] | None = None, row_products: Sequence[str] = ()) -> dict[str, Any]:
    """Quantize ``fused`` into ``target`` with ``recipe``; return operator counts and what the
    calibration-driven steps decided (for the manifest).

    ``decisions`` (the dict an earlier ``quantize`` returned) replays that run's choices (smoothing
    alpha, nodes kept fp32) instead of searching again: the benchmarks quantize an unpooled copy of a
    model exactly as its artifact was quantized.
    ``row_products``: nodes that multiply one row per input (a first-token final layer's,
    :func:`~.first_token.row_product_nodes`): always fp32, outside the recipe's ``keep_fp32`` count, and
    recorded as ``row_products_fp32``.
    """
    import onnx

    decisions = decisions or {}
    # Node names and Attention outputs are what the checks below read; smoothing changes neither, so the
    # fused graph is read once for them (an empty graph when nothing reads it).
    graph = (onnx.load(str(fused), load_external_data=False).graph if row_products or "kept_fp32" in decisions
             else onnx.GraphProto())
    if row_products:
        present = {node.name for node in graph.node}
        if missing := [name for name in row_products if name not in present]:
            raise ExportError(f"{fused}: the one-row products {missing} are not in this graph")
    if recipe.needs_calibration and not calibration:
        raise ExportError(f"recipe {recipe.name} needs calibration inputs")
    details: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fastdpr-quant-") as tmp:
        source, searched_int8 = fused, None
        if recipe.smooth_alphas:
            chosen = decisions.get("smoothing", {}).get("alpha")
            source, searched_int8, details["smoothing"] = _smooth(fused, recipe, calibration or [], Path(tmp), chosen,
                                                                  exclude=row_products)
            details["smoothing"]["calibration_batches"] = len(calibration or [])
        exclude: list[str] = []
        if "kept_fp32" in decisions:
            exclude, left_int8 = replayed_nodes(graph, list(decisions["kept_fp32"]), fused)
            details["kept_fp32"] = {name: error for name, error in decisions["kept_fp32"].items() if name in exclude}
            if left_int8:
                details["kept_fp32_left_int8"] = left_int8
        elif recipe.keep_fp32:
            batches = list(calibration or [])
            stride = max(1, -(-len(batches) // SENSITIVITY_MAX_BATCHES))
            ranked = sensitivity(source, batches[::stride], recipe, Path(tmp), skip=row_products)
            exclude = list(ranked)[: recipe.keep_fp32]
            details["kept_fp32"] = {name: round(ranked[name], 8) for name in exclude}
        if row_products:
            details["row_products_fp32"] = list(row_products)
            exclude = [*exclude, *(name for name in row_products if name not in exclude)]
        if searched_int8 is not None and set(exclude) == set(row_products):
            # The alpha search already quantized the winner, with exactly these nodes left fp32.
            shutil.move(searched_int8, target)
        else:
            _quantize_dynamic(source, target, recipe, nodes_to_exclude=exclude or None)
    counts = Counter(node.op_type for node in onnx.load(str(target), load_external_data=False).graph.node)
    # Every fused Attention must come out as QAttention, unless the sensitivity pass kept it fp32 on
    # purpose (which nodes it keeps depends on the CPU's int8 kernels: on a tiny model it may keep all).
    kept_attention = counts.get("Attention", 0) if exclude else 0
    if counts.get("QAttention", 0) == 0 and kept_attention == 0:
        raise ExportError(f"quantizing {fused} produced no QAttention node; was the graph fused?")
    details["operators"] = {op: counts[op] for op in ("QAttention", "MatMulInteger", "DynamicQuantizeLinear", "MatMul",
                                                      "QEmbedLayerNormalization", "EmbedLayerNormalization")
                            if counts.get(op)}
    return details
