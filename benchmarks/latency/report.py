"""Measurements -> latency.json / latency.md / latency.png (the one report writer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import median, percentiles
from benchmarks.latency.agreement import summary_line
from benchmarks.latency.systems import REGISTRY
from benchmarks.latency.timing import REPORTED_PARTS, Measurements

RANDOM_WEIGHTS_LINE = "RANDOM WEIGHTS: speed only"


def summarize(measured: Measurements, count: int) -> dict[str, dict[str, Any]]:
    """Per-system numbers for latency.json: passages/s (median of rounds), query percentiles of the one
    measured call per question, per-part p50s, and the warm-up calls (reported, never mixed in)."""
    out: dict[str, dict[str, Any]] = {}
    for name, seconds in measured.round_seconds.items():
        parts = measured.parts_ms[name]
        warmup = measured.warmup_ms.get(name, [])
        out[name] = {
            "description": REGISTRY[name].description,
            "kind": REGISTRY[name].kind,
            "passages_per_s": round(median([count / s for s in seconds]), 2),
            "passages_per_s_rounds": [round(count / s, 2) for s in seconds],
            "query_ms": percentiles(measured.totals_ms[name]),
            **({"query_cpu_ms": percentiles(measured.cpu_ms[name])} if measured.cpu_ms.get(name) else {}),
            "breakdown_ms": {part: percentiles(parts[part])["p50"] for part in REPORTED_PARTS},
            "breakdown_mean_ms": {part: round(float(np.mean(parts[part])), 3) for part in REPORTED_PARTS},
            "warmup": {
                "passages_s": round(measured.warmup_passages_seconds.get(name, 0.0), 3),
                "questions": len(warmup),
                "first_ms": round(warmup[0], 3) if warmup else None,
                "max_ms": round(max(warmup), 3) if warmup else None,
                "p50_ms": round(float(np.median(warmup)), 3) if warmup else None,
            },
        }
    return out


def ratio_pairs(names: list[str]) -> list[tuple[str, str]]:
    """Which comparisons are published: every fastdpr system and peer against every PyTorch baseline,
    then fastdpr-int8 against fastdpr-fp32 and against every peer."""
    kinds = {n: REGISTRY[n].kind for n in names}
    targets = [n for n in names if kinds[n] == "fastdpr"][::-1] + [n for n in names if kinds[n] == "peer"]
    baselines = [n for n in names if kinds[n] == "baseline"]
    pairs = [(a, b) for a in targets for b in baselines]
    if "fastdpr-int8" in names:
        pairs += [("fastdpr-int8", b) for b in names if b != "fastdpr-int8" and kinds[b] in ("fastdpr", "peer")]
    if "fastdpr-int8-memory" in names:  # the opt-in variant against the peers too
        pairs += [("fastdpr-int8-memory", b) for b in names if kinds[b] == "peer"]
    return pairs


def ratios(systems: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Speedups (> 1: the first system is faster): passages/s ratio and query-latency ratios (p50, p95),
    all from the same run."""
    ok = [n for n, s in systems.items() if "error" not in s]
    out: dict[str, dict[str, float]] = {}
    for a, b in ratio_pairs(ok):
        sa, sb = systems[a], systems[b]
        out[f"{a} vs {b}"] = {
            "passages_per_s": round(sa["passages_per_s"] / sb["passages_per_s"], 2),
            "query_p50": round(sb["query_ms"]["p50"] / sa["query_ms"]["p50"], 2),
            "query_p95": round(sb["query_ms"]["p95"] / sa["query_ms"]["p95"], 2),
        }
        if "query_cpu_ms" in sa and "query_cpu_ms" in sb:
            out[f"{a} vs {b}"]["query_cpu_p50"] = round(sb["query_cpu_ms"]["p50"] / sa["query_cpu_ms"]["p50"], 2)
    return out


def format_figure(value: float | None) -> str:
    """A latency figure as every table prints it: 1 decimal from 100, 2 from 1, else 3."""
    if value is None:
        return "-"
    return f"{value:,.1f}" if value >= 100 else f"{value:,.2f}" if value >= 1 else f"{value:.3f}"


def write_markdown(report: dict[str, Any], path: Path) -> None:
    """latency.md: header, the systems table, ratios, profile."""
    model = report["model"]
    lines = ["# fastdpr latency and throughput", ""]
    if model["random_weights"]:
        lines += [f"**{RANDOM_WEIGHTS_LINE}** (shape `{model['shape']['name']}`: random-weight DPR models; "
                  "no retrieval quality can be read from this run)", ""]
    workload = report["workload"]
    lines += [
        f"- date: {report['created_utc']}",
        f"- machine: {report['machine']['cpu']}, int8 class {report['machine']['int8_class'].get('int8_class', '?')}, "
        f"{report['machine']['cores']} cores, {report['machine']['os']}",
        f"- model: {model['label']}" + (" (RANDOM WEIGHTS)" if model["random_weights"] else ""),
        f"- threads: {report['threads']} (torch.set_num_threads, ORT intra-op, OpenVINO, hnswlib, tokenizers); "
        f"PyTorch's OMP_WAIT_POLICY {report.get('omp_wait_policy', 'default')}",
        f"- load average (1 min) at start / end: {report['load_average']['start'][0]} / "
        f"{report['load_average']['end'][0]} on {report['machine']['cores']} cores"
        + (" - the machine was shared and busy: absolute numbers are pessimistic, and PyTorch's OpenMP "
           "threads suffer most from oversubscription" if max(report['load_average']['start'][0],
                                                             report['load_average']['end'][0])
           > (report['machine']['cores'] or 1) else ""),
        f"- passages: {workload['passages']['count']} ({workload['passages']['note']}), max length "
        f"{workload['passages']['max_length']}, tokens mean {workload['passages']['tokens']['mean']} / "
        f"max {workload['passages']['tokens']['max']}; batch size {workload['batch_size']}; "
        f"median of {workload['rounds']} interleaved rounds",
        f"- questions: {workload['questions']['count']} ({workload['questions']['note']}), tokens "
        f"{workload['questions']['tokens']['min']}..{workload['questions']['tokens']['max']}, top-{workload['k']}",
        *_background_lines(workload, report.get("search_recall_at_k") or {}),
        f"- timing: {report['procedure']['latency']}",
        f"- warm-up (every system, same inputs, interleaved; timed and shown below, never in the measured "
        f"numbers): {workload['warmup']['passages']} passages spread over the length range, then "
        f"{workload['warmup']['questions']['questions']} questions ({workload['warmup']['questions']['per_length']}"
        f" per question length, lengths {workload['warmup']['questions']['lengths'][0]}.."
        f"{workload['warmup']['questions']['lengths'][1]}; "
        f"{workload['warmup']['questions']['taken_from_measured']} of them from the measured set)",
        f"- command: `{report['command']}`",
        "",
        "| system | passages/s | query p50 ms | p95 ms | p99 ms | tokenize | encode | search | fetch | other "
        "| warm-up: first / max / p50 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, data in report["systems"].items():
        if "error" in data:
            lines.append(f"| {name} | error: {data['error'][:120]} | | | | | | | | | |")
            continue
        q, b, w = data["query_ms"], data["breakdown_ms"], data["warmup"]
        f = format_figure
        lines.append(f"| {name} | {f(data['passages_per_s'])} | {f(q['p50'])} | {f(q['p95'])} | {f(q['p99'])} | "
                     f"{f(b['tokenize'])} | {f(b['encode'])} | {f(b['search'])} | {f(b['fetch'])} | {f(b['other'])} | "
                     f"{f(w['first_ms'])} / {f(w['max_ms'])} / {f(w['p50_ms'])} |")
    lines += ["", "Query: one end-to-end call per question, timed around the call the same way for every system "
              "(fastdpr: `Retriever.search(q, k=100)`; the others: tokenize -> model -> exact numpy top-100 -> "
              "list). Breakdown columns are per-part p50 ms measured inside that same call; `other` is the rest "
              "of the call (Python glue, result objects). Per-part p50s need not add up to the p50 of the total.",
              ""]
    notes = report.get("system_notes") or {}
    for name, note in notes.items():
        lines.append(f"- {name}: " + ", ".join(f"{k} {v}" for k, v in note.items()))
    cpu = {name: data["query_cpu_ms"]["p50"] for name, data in report["systems"].items() if "query_cpu_ms" in data}
    if cpu:
        lines += ["", "Query CPU time (the process's CPU time over the same calls; not the time spent waiting for "
                  "a core on a loaded machine), p50 ms: "
                  + ", ".join(f"{n} {format_figure(v)}" for n, v in cpu.items())]
    lines += ["",
              "## Ratios (same run; > 1 means the first system is faster)", "",
              "| comparison | passages/s | query p50 | query p95 | query CPU p50 |", "|---|---:|---:|---:|---:|"]
    for name, r in report["ratios"].items():
        cpu_ratio = f"{r['query_cpu_p50']:.2f}x" if "query_cpu_p50" in r else "-"
        lines.append(f"| {name} | {r['passages_per_s']:.2f}x | {r['query_p50']:.2f}x | {r['query_p95']:.2f}x | "
                     f"{cpu_ratio} |")
    if report.get("agreement", {}).get("systems"):
        lines += ["", summary_line(report["agreement"])]
    profile = report.get("profile")
    if profile and "error" not in profile:
        split = profile["split_ms"]
        lines += ["", f"## Where {profile['system']} passage encoding spends its time", "",
                  f"Tokenize + pad {split['tokenize_and_pad']} ms vs ONNX Runtime {split['onnx_runtime']} ms "
                  f"({split['tokenize_share'] * 100:.1f}% tokenization) for {profile['passages']} passages. "
                  f"ORT profiler, kernel time by operator type ({profile['kernel_ms']} ms of kernels in "
                  f"{profile['profiled_run_ms']} ms of runs):", "",
                  "| op type | ms | share |", "|---|---:|---:|"]
        for op in profile["op_types"]:
            lines.append(f"| {op['op_type']} | {op['ms']} | {op['share'] * 100:.1f}% |")
    elif profile:
        lines += ["", f"Profile failed: {profile['error']}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _background_lines(workload: dict[str, Any], recall: dict[str, float]) -> list[str]:
    """The searched corpus (measured + SYNTHETIC background) and each system's search recall."""
    lines = []
    background = workload.get("background")
    if background:
        lines.append(f"- searched corpus: **{workload['searched_passages']:,} passages** = the measured passages + "
                     f"{background['passages']:,} SYNTHETIC background passages ({background['text']}; vectors: "
                     f"{background['vectors']}), the same passages in the same order for every system")
    if recall:
        lines.append("- recall@k of each system's search against exact search over its own vectors (its own "
                     "question vectors): " + ", ".join(f"{name} {value:.4f}" for name, value in recall.items()))
    return lines


def write_plot(report: dict[str, Any], path: Path) -> None:
    """latency.png: passages/s and query p50 per system, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, d in report["systems"].items() if "error" not in d]
    palette = {"baseline": "#999999", "peer": "#d08c2e", "fastdpr": "#2e7dd0"}
    colors = [palette.get(report["systems"][n].get("kind", ""), "#555555") for n in names]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    throughput = [report["systems"][n]["passages_per_s"] for n in names]
    latency = [report["systems"][n]["query_ms"]["p50"] for n in names]
    for axis, values, label in ((left, throughput, "passages/s (higher is better)"),
                                (right, latency, "query p50 ms, top-100 (lower is better)")):
        bars = axis.barh(names, values, color=colors)
        axis.invert_yaxis()
        axis.set_xlabel(label)
        for bar, value in zip(bars, values, strict=True):
            axis.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {format_figure(value)}", va="center",
                      fontsize=8)
        if min(values) > 0 and max(values) / min(values) > 50:
            axis.set_xscale("log")
            axis.set_xlabel(label + ", log scale")
        axis.margins(x=0.2)
    right.set_yticklabels([])
    model = report["model"]
    title = f"{model['label']} - {report['threads']} threads - {report['machine']['cpu']}"
    if model["random_weights"]:
        title = f"{RANDOM_WEIGHTS_LINE.upper()}\n{title}"
    fig.suptitle(title, fontsize=10, color="#b00020" if model["random_weights"] else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


