"""What every benchmark shares: machine description, versions, timing helpers, exporting a source."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fastdpr.common.cpu import this_cpu
from fastdpr.common.integrity import library_versions


def machine() -> dict[str, Any]:
    """The machine the numbers were measured on."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
            handle.seek(0)
            flags = next((line for line in handle if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "avx512_vnni": "avx512_vnni" in flags,
        # The int8 kernel class decides int8 numbers, not only speed (fastdpr/common/cpu.py): every result names it.
        "int8_class": this_cpu().to_dict(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    """Library versions that decide the numbers."""
    return library_versions(("fastdpr", "onnxruntime", "torch", "transformers", "optimum-onnx", "tokenizers",
                             "hnswlib", "numpy"))


def percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / p99 of a list of milliseconds."""
    array = np.asarray(samples_ms, dtype=np.float64)
    return {f"p{p}": round(float(np.percentile(array, p)), 3) for p in (50, 95, 99)}


def median(values: Sequence[float]) -> float:
    """The median (robust to the odd slow round on a shared machine)."""
    return float(statistics.median(values))


def timed(func: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds a call took, and its result."""
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result


def export_source(out: Path, question_encoder: str | None, context_encoder: str | None, encoder: str | None,
                  recipe: str, force: bool = True, enforce_int8_gate: bool = True) -> Path:
    """Export with fastdpr's own pipeline (the export extra is needed)."""
    from fastdpr_export.pipeline import ExportOptions, export_artifact

    return export_artifact(
        ExportOptions(out=out, question_encoder=question_encoder, context_encoder=context_encoder, encoder=encoder,
                      quantize=recipe, force=force, enforce_int8_gate=enforce_int8_gate),
        log=lambda line: print(f"    {line}", flush=True),
    )


def log(message: str) -> None:
    """Progress on stdout, flushed (benchmarks run for minutes)."""
    print(message, flush=True)
