"""efficiency.json and the readable efficiency.md made from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.common import log

KIND_LABELS = {"int8_gemm": "int8 GEMM (int8 weights)", "fp32_gemm": "fp32 GEMM (fp32 weights)",
               "fp32_attention": "fp32 attention (Q K^T, softmax V)"}


def write_report(report: dict[str, Any], out: Path) -> None:
    """Write ``efficiency.json`` and ``efficiency.md`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "efficiency.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "efficiency.md").write_text(markdown(report), encoding="utf-8")
    log(f"[efficiency] wrote {out}/efficiency.json, efficiency.md in {report['seconds']} s")


def markdown(report: dict[str, Any]) -> str:
    """The result as a page a person reads: machine, load, work, GOP/s against peak, the profile."""
    load, peak, workload = report["load_average"], report["peak"], report["workload"]
    deployed = report["artifact"]["encoding"]["context"]
    lines = [
        f"# Compute efficiency of passage encoding ({report['cpu_class']})", "",
        f"Measured {report['created_utc']} on {report['machine']['cpu']} ({report['machine']['cores']} CPUs), "
        f"int8 class **{report['cpu_class']}**; fastdpr {report['versions'].get('fastdpr')}, onnxruntime "
        f"{report['versions'].get('onnxruntime')}.", "",
        f"Load average (1/5/15 min) at start {load['start']}, at end {load['end']}. The machine is shared: "
        "**every GOP/s below is a lower bound**, and the 1- and 2-thread rows were measured side by side "
        "(rounds interleaved), so their ratio is fair even under load.", "",
        f"Rerun: `{report['command']}`, the artifact made by `fastdpr export --question-encoder "
        f"{report['artifact']['sources']['question']} --context-encoder {report['artifact']['sources']['context']} "
        f"--out ARTIFACT` (default recipe).", "",
        f"Recipe `{report['artifact']['recipe']}`; passages encoded "
        f"with the deployed context model ({deployed}), one passage per ONNX Runtime call. "
        f"{workload['passages']} SQuAD passages (tokens: {_tokens(workload['passage_tokens'])}), "
        f"{workload['rounds']} rounds, median; tokenizer threads {workload['tokenizer_threads']}.", "",
        "## Work per input (counted from the graphs)", "",
        "Operations = 2 x multiply-accumulates of the matrix products, each input its own call (batch 1, its own "
        "length), mean over the measured inputs:", "",
        "| model | " + " | ".join(KIND_LABELS.values()) + " | total |",
        "|---|" + "---:|" * (len(KIND_LABELS) + 1),
    ]
    for side, by_precision in report["work"].items():
        for precision, work in by_precision.items():
            ops = work["mean_ops_per_input"]
            lines.append(f"| {side} {precision} | " + " | ".join(f"{ops[k] / 1e9:.3f} G" for k in KIND_LABELS)
                         + f" | {sum(ops.values()) / 1e9:.3f} G |")
    not_counted = sorted({op for w in report["work"].values() for p in w.values() for op in p["not_counted_op_types"]})
    lines += ["", f"Not counted (elementwise, normalization, quantization arithmetic): {', '.join(not_counted)}.", ""]
    lines += ["## Achieved GOP/s against the peak", ""]
    if peak is None:
        lines += ["No int8 peak is known for this class: GOP/s only.", ""]
    else:
        lines += [
            f"Peak: {peak['macs_per_cycle_per_core']:.1f} int8 MACs/cycle/core ({peak['instruction']}: "
            f"{peak['derivation']}; source: {peak['source']}) x 2 ops x {peak['clock_ghz']:.3f} GHz "
            f"({peak['clock_source']}; {peak['clock_note']}) x threads (at most {peak['physical_cores']} "
            "physical cores).", ""]
    lines += ["| threads | passages/s | int8 GEMM GOP/s | fp32 GOP/s (GEMM + attention) | all GOP/s | int8 peak GOP/s "
              "| int8 GEMM % of peak | all ops % of int8 peak |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in report["efficiency"]:
        gops = row["gops"]
        peak_cells = (f"{row['peak_int8_gops']:.1f} | {row['int8_share_of_peak'] * 100:.1f}% | "
                      f"{row['all_ops_share_of_int8_peak'] * 100:.1f}%") if "peak_int8_gops" in row else "- | - | -"
        lines.append(f"| {row['threads']} | {row['passages_per_s']:.2f} | {gops['int8_gemm']:.1f} | "
                     f"{gops['fp32_gemm'] + gops['fp32_attention']:.1f} | {row['gops_all']:.1f} | {peak_cells} |")
    lines += ["", "\"all ops % of int8 peak\" counts the fp32 products against the int8 peak too: an upper bound "
              "on how busy the int8 units could have been.", ""]
    lines += ["With more than one thread, fastdpr encodes many passages as that many concurrent single-threaded "
              "calls (`fastdpr/model/encoder.py`): each call is the 1-thread call profiled below.", ""]
    for profile in report["profiles"]:
        lines += _profile_lines(profile)
    return "\n".join(lines) + "\n"


def _tokens(stats: dict[str, float]) -> str:
    return f"mean {stats['mean']}, median {stats['median']}, min {stats['min']}, max {stats['max']}"


def _profile_lines(profile: dict[str, Any]) -> list[str]:
    """One thread count's profile: outside ORT, kernel time by op type, ORT overhead, the GEMM kernels' rate."""
    if "error" in profile:
        return [f"Profile failed: {profile['error']}", ""]
    outside, overhead, wall = profile["outside_ort"], profile["ort_overhead_ms"], profile["profiled_wall_ms"]
    lines = [
        f"## Where the time goes: {profile['threads']} thread(s), one passage per call", "",
        f"The deployed call (`encode_passages`, {profile['passages']} passages): {profile['end_to_end_ms']} ms; "
        f"outside ONNX Runtime {outside['share'] * 100:.1f}% (tokenization {outside['tokenize_share'] * 100:.1f}%, "
        f"Python glue {outside['glue_share'] * 100:.1f}%).", "",
        f"Inside ONNX Runtime (profiled session: {wall} ms of `session.run`, {profile['profiled_run_ms']} ms of "
        f"`model_run`, {profile['kernel_ms']} ms of kernels), share of `session.run` time:", "",
        "| where | ms | share |", "|---|---:|---:|",
    ]
    for op in profile["op_types"]:
        lines.append(f"| {op['op_type']} kernels | {op['ms']} | {op['ms'] / wall * 100:.1f}% |")
    rest = profile["kernel_ms"] - sum(op["ms"] for op in profile["op_types"])
    if rest > 0.05:
        lines.append(f"| other kernels | {rest:.1f} | {rest / wall * 100:.1f}% |")
    lines += [f"| executor between kernels | {overhead['between_kernels']} | "
              f"{overhead['between_kernels'] / wall * 100:.1f}% |",
              f"| binding (inputs in, outputs out) | {overhead['binding']} | {overhead['binding'] / wall * 100:.1f}% |",
              ""]
    if profile.get("kernel_rates"):
        lines += ["The kernels that do the counted work, at their own rate (the file op type's ops over every "
                  "profiled call / the time of the kernels ORT runs it as; QAttention holds its int8 projection and "
                  "its fp32 attention products; the profiler adds a little time, so a "
                  "lower bound):", "",
                  "| file op type | runs as | kernel ms | GOP/s | % of int8 peak |", "|---|---|---:|---:|---:|"]
        for rate in profile["kernel_rates"]:
            share = f"{rate['share_of_int8_peak'] * 100:.1f}%" if "share_of_int8_peak" in rate else "-"
            lines.append(f"| {rate['op_type']} | {', '.join(rate['kernels'])} | {rate['ms']} | {rate['gops']} | "
                         f"{share} |")
        lines.append("")
    return lines
