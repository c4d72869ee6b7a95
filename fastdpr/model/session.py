"""The one place ONNX Runtime sessions are configured (threads, optimization level, providers)."""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort

from fastdpr.common.errors import ArtifactError


def default_threads() -> int:
    """Intra-op threads when the caller does not say: every core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def make_session(model_path: Path, threads: int | None = None) -> ort.InferenceSession:
    """An ``InferenceSession`` on the CPU with pinned threads.

    ``inter_op`` is 1 and execution sequential: encoder graphs are a chain, and a second pool would
    only oversubscribe the cores (the classic CPU deployment bug when several processes run).
    """
    if not Path(model_path).is_file():
        raise ArtifactError(f"model file {model_path} is missing")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # warnings about unused initializers are noise to users
    try:
        return ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own non-exported exception types
        raise ArtifactError(f"ONNX Runtime cannot load {model_path}: {exc}") from exc
