"""Where fastdpr's passage encoding spends its time: tokenization vs ONNX Runtime, and ORT's profiler."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from fastdpr.model.artifact import Artifact
from fastdpr.model.encoder import OUTPUT_NAME, OnnxEncoder


def profile_passage_encoding(artifact: Artifact, precision: str, passages: Sequence[tuple[str, str]], threads: int,
                             batch_size: int, workdir: Path, top: int = 10) -> dict[str, Any]:
    """Where fastdpr's passage encoding spends its time.

    Three measurements: the deployed call, ``encode_passages`` (its wall time, ``end_to_end_ms``, and within
    that same call the time in ``session.run`` and in the tokenizer's ``encode``; the rest is Python glue:
    sorting, feeds, scattering rows, ``outside_ort``); tokenization vs ONNX Runtime for the same passages in
    ``batch_size`` calls (no profiler, ``split_ms``); then ORT's own profiler on a second
    session of the same model (same settings as :func:`fastdpr.model.session.make_session`, plus
    ``enable_profiling``): kernel time summed by operator type, the executor's time between kernels
    (``model_run`` minus kernels) and the Python binding's (``session.run`` wall minus ``model_run``).
    ``batch_size=1`` is the deployed int8 mode (one passage per call). Every call runs on one thread
    (``threads_per_call``): with ``threads`` > 1 fastdpr makes that many such calls at once.
    """
    import onnxruntime as ort

    # Every call of a many-input encode runs on one thread: with N threads, as N concurrent calls
    # (fastdpr/model/encoder.py). So each call is profiled on one thread, whatever ``threads`` is (a
    # 2-thread session here would time calls that fastdpr no longer makes, and its concurrent calls
    # would bypass the timed session).
    per_call_threads = 1
    # Calls of batch_size inputs, as the split below makes them (batch_size=1: the deployed int8 mode).
    encoder = OnnxEncoder(artifact.model_path("context", precision), artifact.tokenizer("context"), per_call_threads,
                          inputs_per_call=batch_size)
    tokenizer = encoder.tokenizer
    encoder.encode_passages(passages[:8], batch_size)  # warm-up: first calls allocate the arena
    # Time ORT and the tokenizer inside the deployed call itself: measured in separate loops instead, a
    # shared machine's drift between them made "outside ORT" come out negative (seen at load 12 on 2 cores).
    timed_session, timed_tokenizer = _Timed(encoder.session, "run"), _Timed(encoder.tokenizer, "encode")
    encoder.session, encoder.tokenizer = cast(Any, timed_session), cast(Any, timed_tokenizer)
    t0 = time.perf_counter()
    encoder.encode_passages(passages, batch_size)
    end_to_end_s = time.perf_counter() - t0
    encoder.session, encoder.tokenizer = timed_session.target, timed_tokenizer.target
    t0 = time.perf_counter()
    encodings = tokenizer.encode(passages)
    order = np.argsort([len(e.ids) for e in encodings], kind="stable")
    batches = [tokenizer.feeds([encodings[i] for i in order[s:s + batch_size]])
               for s in range(0, len(order), batch_size)]
    tokenize_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for feeds in batches:
        encoder.session.run([OUTPUT_NAME], feeds)
    session_s = time.perf_counter() - t0

    options = ort.SessionOptions()
    options.intra_op_num_threads = per_call_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.enable_profiling = True
    options.profile_file_prefix = str(workdir / f"ort-profile-{precision}")
    session = ort.InferenceSession(str(artifact.model_path("context", precision)), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    session.run([OUTPUT_NAME], batches[0])  # warm-up: its events are dropped below
    t0 = time.perf_counter()
    for feeds in batches:
        session.run([OUTPUT_NAME], feeds)
    profiled_wall_ms = (time.perf_counter() - t0) * 1000
    path = Path(session.end_profiling())
    events = json.loads(path.read_text(encoding="utf-8"))
    path.unlink()
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])[1:]
    cutoff = runs[0]["ts"]
    by_op: dict[str, float] = {}
    nodes: dict[str, float] = {}
    for event in events:
        name = str(event.get("name", ""))
        if event.get("cat") != "Node" or not name.endswith("_kernel_time") or event["ts"] < cutoff:
            continue
        op = event.get("args", {}).get("op_name", "?")
        by_op[op] = by_op.get(op, 0.0) + event["dur"] / 1000
        node = name[: -len("_kernel_time")]
        nodes[node] = nodes.get(node, 0.0) + event["dur"] / 1000
    kernel_ms = sum(by_op.values())
    run_ms = sum(e["dur"] for e in runs) / 1000
    ops = sorted(by_op.items(), key=lambda item: -item[1])
    return {
        "system": f"fastdpr-{precision}",
        "passages": len(passages),
        "batch_size": batch_size,
        "threads": threads,
        "threads_per_call": per_call_threads,
        "split_ms": {"tokenize_and_pad": round(tokenize_s * 1000, 1), "onnx_runtime": round(session_s * 1000, 1),
                     "tokenize_share": round(tokenize_s / (tokenize_s + session_s), 4)},
        "end_to_end_ms": round(end_to_end_s * 1000, 1),
        "outside_ort": {"ms": round((end_to_end_s - timed_session.seconds) * 1000, 1),
                        "share": round(1 - timed_session.seconds / end_to_end_s, 4),
                        "tokenize_share": round(timed_tokenizer.seconds / end_to_end_s, 4),
                        "glue_share": round((end_to_end_s - timed_session.seconds - timed_tokenizer.seconds)
                                            / end_to_end_s, 4),
                        "note": "end_to_end_ms minus the time the same call spent in session.run: tokenization "
                                "(the tokenizer's encode) and Python glue (feeds, sorting, scattering rows)"},
        "profiled_wall_ms": round(profiled_wall_ms, 1),
        "profiled_run_ms": round(run_ms, 1),
        "kernel_ms": round(kernel_ms, 1),
        "ort_overhead_ms": {"between_kernels": round(run_ms - kernel_ms, 1),
                            "binding": round(profiled_wall_ms - run_ms, 1),
                            "note": "between_kernels: model_run minus kernel time (the executor); binding: "
                                    "session.run wall minus model_run (inputs in, outputs out)"},
        "op_types": [{"op_type": op, "ms": round(ms, 1), "share": round(ms / kernel_ms, 4)} for op, ms in ops[:top]],
        "top_nodes": [{"node": n, "ms": round(ms, 1), "share": round(ms / kernel_ms, 4)}
                      for n, ms in sorted(nodes.items(), key=lambda item: -item[1])[:top]],
    }


class _Timed:
    """Stands in for ``target``, adding up the wall time of its ``method`` calls (everything else delegated)."""

    def __init__(self, target: Any, method: str) -> None:
        self.target = target
        self.method = method
        self.seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.target, name)
        if name != self.method:
            return attribute

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return attribute(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed
