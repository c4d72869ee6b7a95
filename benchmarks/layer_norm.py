"""``python -m benchmarks layer-norm``: ORT's fused ``SkipLayerNormalization`` against the ``Add`` + ``Add``
+ ``LayerNormalization`` that fastdpr exports instead (export/layer_norm.py), and the per-row activation
quantization as fastdpr writes it now (ReduceMax/ReduceMin + one per-axis ``QuantizeLinear``) against the
earlier chain (Abs, ReduceMax, Max, Mul, Div, Round, Add, Cast).

Kernel-level and CPU-dependent: whether the split pays off is a property of ONNX Runtime's kernels on this
CPU class, so the result names the class and can be rerun on each. Each variant is one small ONNX graph at a
passage's shape ([1, tokens, hidden]), timed over many calls on one thread, variants interleaved per round,
median round; the two variants of a pair are also checked to compute the same output.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from benchmarks.common import machine, versions

#: (label, tokens, hidden): MiniLM and BERT-base at the mean SQuAD passage length (161 tokens), and
#: BERT-base at DPR's 256-token cap.
SHAPES = (("minilm", 161, 384), ("bert-base", 161, 768), ("bert-base-256", 256, 768))


def _model(nodes: list[Any], inputs: list[str], tokens: int, width: int, inits: list[Any],
           output_type: int = 1) -> Any:
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, tokens, width])
                                           for n in inputs],
                              [helper.make_tensor_value_info("y", output_type, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    return model


def _session(model: Any) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _normalization_pair(tokens: int, hidden: int) -> dict[str, Any]:
    """ORT's fused node, and what the export writes instead (export/layer_norm.py, applied to it)."""
    from onnx import ModelProto, helper, numpy_helper

    from fastdpr_export.layer_norm import unfuse_skip_layer_norm

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(hidden).astype(np.float32), n) for n in ("g", "b", "bias")]
    fused = _model([helper.make_node("SkipLayerNormalization", ["x", "s", "g", "b", "bias"], ["y"],
                                     domain="com.microsoft", epsilon=1e-12)], ["x", "s"], tokens, hidden, inits)
    split = ModelProto()
    split.CopyFrom(fused)
    unfuse_skip_layer_norm(split)
    return {"SkipLayerNormalization": _session(fused), "Add + Add + LayerNormalization": _session(split)}


def _quantization_pair(tokens: int, width: int) -> dict[str, Any]:
    """The previous per-row chain (written out here: it is the baseline) and what the export writes now
    (export/row_scales.py's own nodes)."""
    from onnx import TensorProto, helper, numpy_helper

    from fastdpr_export.row_scales import row_quantization_nodes, shared_initializers

    inits = [numpy_helper.from_array(np.array(v, dtype=t), n) for n, v, t in (
        ("zp", 128, np.uint8), ("offset", 128.0, np.float32), ("inv127", 1.0 / 127.0, np.float32),
        ("floor", 1e-12, np.float32))]
    chain = [helper.make_node("Abs", ["x"], ["abs"]),
             helper.make_node("ReduceMax", ["abs"], ["max"], axes=[-1], keepdims=1),
             helper.make_node("Max", ["max", "floor"], ["safe"]),
             helper.make_node("Mul", ["safe", "inv127"], ["scale"]),
             helper.make_node("Div", ["x", "scale"], ["div"]), helper.make_node("Round", ["div"], ["round"]),
             helper.make_node("Add", ["round", "offset"], ["shift"]),
             helper.make_node("Cast", ["shift"], ["y"], to=TensorProto.UINT8)]
    uint8 = TensorProto.UINT8
    return {"Abs ... Cast (8 ops)": _session(_model(chain, ["x"], tokens, width, inits, uint8)),
            "ReduceMax/ReduceMin + QuantizeLinear": _session(_model(
                row_quantization_nodes("x", "y", "scale", "rows"), ["x"], tokens, width, shared_initializers(),
                uint8))}


def _time_pair(sessions: dict[str, Any], feeds: dict[str, np.ndarray], calls: int, rounds: int) -> dict[str, Any]:
    outputs = {name: s.run(None, feeds)[0] for name, s in sessions.items()}
    first, second = outputs.values()
    agree = (bool(np.array_equal(first, second)) if first.dtype == np.uint8
             else float(np.abs(first.astype(np.float64) - second).max()))
    seconds: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, session in sessions.items():
            for _ in range(10):
                session.run(None, feeds)
            start = time.perf_counter()
            for _ in range(calls):
                session.run(None, feeds)
            seconds[name].append((time.perf_counter() - start) / calls)
    ms = {name: round(float(np.median(s)) * 1e3, 4) for name, s in seconds.items()}
    before, after = ms.values()
    return {"ms_per_call": ms, "speedup": round(before / after, 2),
            ("bitwise_equal" if isinstance(agree, bool) else "max_abs_diff"): agree}


def run(calls: int, rounds: int, shapes: tuple[tuple[str, int, int], ...] = SHAPES) -> dict[str, Any]:
    """Time both pairs at every shape; return the result (JSON-ready)."""
    rng = np.random.default_rng(1)
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(),
                              "versions": versions(), "load_average": {"start": list(os.getloadavg())},
                              "calls": calls, "rounds": rounds, "threads": 1, "shapes": []}
    pairs: tuple[tuple[str, Callable[[int, int], dict[str, Any]], Callable[[int], int], int], ...] = (
        ("normalization", _normalization_pair, lambda hidden: hidden, 2),
        # what a MatMul input looks like: hidden wide (attention out, FFN in) or 4 x hidden (FFN out)
        ("quantization, hidden wide", _quantization_pair, lambda hidden: hidden, 1),
        ("quantization, 4 x hidden wide", _quantization_pair, lambda hidden: 4 * hidden, 1))
    for label, tokens, hidden in shapes:
        for what, make, width_of, n_inputs in pairs:
            width = width_of(hidden)
            feeds = {name: (rng.standard_normal((1, tokens, width)) * 3).astype(np.float32)
                     for name in ("x", "s")[:n_inputs]}
            timed = _time_pair(make(tokens, width), feeds, calls, rounds)
            result["shapes"].append({"model": label, "tokens": tokens, "width": width, "what": what, **timed})
            click.echo(f"{label:14} {what:32} " + "  ".join(f"{k}: {v} ms" for k, v in timed["ms_per_call"].items())
                       + f"  -> {timed['speedup']}x", err=True)
    result["load_average"]["end"] = list(os.getloadavg())
    return result


def report(result: dict[str, Any]) -> str:
    """The readable table of a result."""
    cpu = result["machine"]["int8_class"]
    lines = [f"# Normalization and activation quantization kernels ({cpu['int8_class']})", "",
             f"Measured {result['date']} on {result['machine']['cpu']} ({result['machine']['cores']} CPUs), "
             "int8 class "
             f"**{cpu['int8_class']}**; onnxruntime {result['versions'].get('onnxruntime')}. One thread, "
             f"{result['calls']} calls per round, {result['rounds']} interleaved rounds, median round. Load average "
             f"(1 min) {result['load_average']['start'][0]:.2f} at start, "
             f"{result['load_average']['end'][0]:.2f} at end.",
             "",
             "| model shape | tokens x width | what | before (ms) | after (ms) | after is faster by | same output |",
             "|---|---|---|---:|---:|---:|---|"]
    for row in result["shapes"]:
        before, after = row["ms_per_call"].items()
        same = (("bitwise" if row["bitwise_equal"] else "NO") if "bitwise_equal" in row
                else f"max abs diff {row['max_abs_diff']:.1e}")
        lines.append(f"| {row['model']} | {row['tokens']} x {row['width']} | {row['what']}: {before[0]} -> {after[0]} "
                     f"| {before[1]:.4f} | {after[1]:.4f} | {row['speedup']:.2f}x | {same} |")
    lines += ["", "Rerun: `python -m benchmarks layer-norm --out DIR` (`--calls`, `--rounds`).", ""]
    return "\n".join(lines)


@click.command("layer-norm")
@click.option("--calls", type=click.IntRange(1), default=500, show_default=True, help="Calls per variant per round.")
@click.option("--rounds", type=click.IntRange(1), default=5, show_default=True, help="Interleaved rounds (median).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Directory for layer-norm.json/.md.")
def layer_norm_command(calls: int, rounds: int, out: Path) -> None:
    """ORT's SkipLayerNormalization vs Add + LayerNormalization, and the per-row quantization before and
    after, at MiniLM and BERT-base passage shapes, one thread, on this CPU class."""
    result = run(calls, rounds)
    out.mkdir(parents=True, exist_ok=True)
    (out / "layer-norm.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "layer-norm.md").write_text(report(result))
    click.echo(f"wrote {out / 'layer-norm.md'}")
