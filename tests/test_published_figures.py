"""Issue #21: every benchmark figure README.md and docs/ publish is checked against the result file it came
from (benchmarks/results/). A figure is a phrase of a page with ``{}`` where the numbers stand, the result
file, the value's path inside it (``/``-separated keys, or a function of the file for derived figures such
as a sum of parts or a ratio) and the format the page prints it with. When a page's number and its file
disagree, the phrase is not found and the test names the page, the phrase it expected and the file.

Tables are checked cell by cell against their files the same way (``TABLES``). A figure that no committed
result file holds is not listed here: the pages either drop it or say in words that it has no result file.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))  # benchmarks/ runs from a checkout; it is not installed

from benchmarks.latency.report import format_figure

RESULTS = REPO_ROOT / "benchmarks" / "results"
KS = ("1", "5", "20", "50", "100")

#: A value: a ``/``-separated path of keys into the result file, or a function of the whole file.
Value = str | Callable[[Any], float]


# ---------------------------------------------------------------------------------------------------------
# Reading pages and result files


def normalize(text: str) -> str:
    """Page text as the checks read it: bold marks dropped, every run of whitespace one space (so a
    phrase may wrap anywhere in the Markdown source)."""
    return re.sub(r"\s+", " ", text.replace("**", "")).strip()


@cache
def page(name: str) -> str:
    return normalize((REPO_ROOT / name).read_text(encoding="utf-8"))


@cache
def result(source: str) -> Any:
    """A result file: JSON, or a ``.log`` of the invariance scripts parsed into ``{"q=X p=Y": [deltas]}``
    and ``{"X passages": passages/s}``."""
    text = (RESULTS / source).read_text(encoding="utf-8")
    if source.endswith(".json"):
        return json.loads(text)
    if source.endswith(".md"):
        return text
    rows = {}
    for line in text.splitlines():
        match = re.match(r"^(q=\S+)\s+(p=\S+)\s+((?:[+-]\d+\.\d+\s*){5})$", line.strip())
        if match:
            rows[f"{match[1]} {match[2]}"] = [float(x) for x in match[3].split()]
        speed = re.match(r"^(\S+ passages) (\d+\.\d+) p/s$", line.strip())
        if speed:
            rows[speed[1]] = float(speed[2])
    return rows


def lookup(data: Any, value: Value) -> Any:
    if callable(value):
        return value(data)
    for key in value.split("/"):
        data = data[int(key)] if isinstance(data, list) else data[key]
    return data


@dataclass(frozen=True)
class Figure:
    """``phrase`` on ``page`` with ``{}`` for each of ``values`` (read from ``source``, printed with ``fmt``)."""

    page: str
    phrase: str
    source: str
    values: tuple[Value, ...]
    fmt: str | Callable[[float], str] = "{:.2f}"

    def expected(self) -> str:
        data = result(self.source)
        render = self.fmt if callable(self.fmt) else self.fmt.format
        return normalize(self.phrase.format(*(render(lookup(data, v)) for v in self.values)))

    def problem(self, text: str | None = None) -> str | None:
        """None when the page says what the file says; otherwise what is wrong, in one line."""
        expected = self.expected()
        if expected in (page(self.page) if text is None else normalize(text)):
            return None
        return f"{self.page} should say {expected!r} (from benchmarks/results/{self.source})"


def points(value: float) -> str:
    """A recall delta (a fraction) as the pages print it: signed points, two decimals."""
    return f"{value * 100:+.2f}"


def percent(value: float) -> str:
    return f"{value * 100:.2f}"


def signed(value: float) -> str:
    return f"{value:+.2f}"


def thousands(value: float) -> str:
    return f"{value:,.0f}"


def net_hnsw_loss(exact: str, hnsw: str) -> Callable[[Any], float]:
    """Questions that HNSW lost against exact search over the same vectors, net, at the worst k."""
    def worst(data: Any) -> float:
        n, recall = data["dataset"]["questions"], data["answer_recall"]
        return max(round((recall[exact][k] - recall[hnsw][k]) * n) for k in KS)
    return worst


def part_sum(system: str, parts: Sequence[str]) -> Callable[[Any], float]:
    return lambda data: sum(data["systems"][system]["breakdown_ms"][p] for p in parts)


def rps_ratio(batched: str, unbatched: str, clients: int) -> Callable[[Any], float]:
    summary = lambda data: data["levels"]["summary"]  # noqa: E731
    return lambda data: (summary(data)[batched][str(clients)]["throughput_rps"]
                         / summary(data)[unbatched][str(clients)]["throughput_rps"])


def rows_minus_per_call(k: int) -> Callable[[Any], float]:
    """With fp32 questions: per-row passage scales (as exported) minus one-per-call per-tensor scales, k-th k."""
    return lambda rows: rows["q=fp32 p=final"][k] - rows["q=fp32 p=int8-b1"][k]


def ray_over_local(phase: str, key: str) -> Callable[[Any], float]:
    """A scale run's Ray figure over its local one (``systems/{ray,local}/phase/key``)."""
    return lambda data: data["systems"]["ray"][phase][key] / data["systems"]["local"][phase][key]


def ray_p50_over_local(data: Any) -> float:
    """A scale run's query p50 through Ray actors over its local one."""
    serve = {system: data["systems"][system]["serve"]["query_ms"]["p50"] for system in ("ray", "local")}
    return float(serve["ray"] / serve["local"])


def raw_result(source: str) -> str:
    return (RESULTS / source).read_text(encoding="utf-8")


def embedding_cost(k: str) -> Callable[[Any], float]:
    """Points of answer recall that quantizing the embedding tables cost at Top-k (per-channel with fp32
    tables minus per-channel with int8 ones, HNSW)."""
    return lambda d: (d["frontier"]["dynamic-per-channel-fp32-embeddings"]["delta_points"][k]
                      - d["frontier"]["dynamic-per-channel"]["delta_points"][k])


def op_share(op_type: str) -> Callable[[Any], float]:
    return lambda data: next(op["share"] for op in data["profile"]["op_types"] if op["op_type"] == op_type) * 100


LATENCY = "latency-minilm/latency.json"
PARITY_VNNI = "parity/parity.json"  # 2026-11-23, x86-avx512-vnni, recipe dynamic-per-channel-smooth-auto (8-bit)
PARITY_AMX = "parity-x86-amx/parity.json"  # 2026-11-30, x86-amx, recipe -7bit
PARITY_QKEEP2_VNNI = "parity-x86-avx512-vnni/parity.json"  # 2026-12-04, x86-avx512-vnni, recipe -7bit-rows-qkeep2
OPENVINO = "parity-openvino-x86-amx/parity.json"
RANKED = "parity-ranked-ids-x86-amx/parity.json"
SERVE = "serve-x86-amx-quiet/serve.json"
SCALE_L2 = "scale-x86-amx/l2-h128-1m.json"
SCALE_MINILM = "scale-x86-amx/minilm-200k.json"
PROJECTION = "scale-x86-amx/projection-21m.json"
VECTORS = "vectors-x86-avx512-vnni"
#: Issue #24: appending 1% to a 1M index, against the fresh build it was appended to.
APPEND_1M = "append-1m-x86-avx512-vnni/l2-h128-1m.json"
APPEND_AB = "append-1m-x86-avx512-vnni/before-after-1m.json"
MINILM_AS_DPR = "all-MiniLM-L6-v2 as DPR (int8)"
L2_RANDOM = "l2-h128 (RANDOM WEIGHTS, int8)"
RSS = "rss-x86-avx512-vnni"  # 2026-12-04, x86-avx512-vnni, re-ranking with pread against through the map
DEFAULT_AVX2 = "invariance-x86-avx2/recall-default.log"
PREVIOUS_AVX2 = "invariance-x86-avx2/frontier-previous-default.log"
ROWS_AVX2 = "invariance-x86-avx2/recall-rows-exported.log"
SPEED_AVX2 = "speed-default-x86-avx2/speed.json"  # 2026-12-04, x86-avx2, today's default, loaded
FASTDPR_PARTS = ("search", "fetch", "other")
PEER_PARTS = ("search", "fetch", "other")

# ---------------------------------------------------------------------------------------------------------
# The figures in prose (the issue's list first)

FIGURES: tuple[Figure, ...] = (
    # "the profile split" (issue #21): the MiniLM run's ORT profile, not the replaced loaded run's
    Figure("docs/benchmarks.md", "on MiniLM QAttention {}%, SkipLayerNormalization {}%, DynamicQuantizeMatMul {}%, "
           "BiasGelu {}%, the smoothing `Mul` {}%", LATENCY,
           tuple(op_share(op) for op in ("QAttention", "SkipLayerNormalization", "DynamicQuantizeMatMul",
                                         "BiasGelu", "Mul")), "{:.1f}"),
    Figure("docs/benchmarks.md", "tokenization is {}% of passage encoding", LATENCY,
           ("profile/split_ms/tokenize_share",), lambda v: f"{v * 100:.1f}"),
    Figure("docs/benchmarks.md", "which the profile shows are {}% of the kernel time on MiniLM", LATENCY,
           (lambda d: sum(op_share(op)(d) for op in ("SkipLayerNormalization", "BiasGelu", "Mul")),), "{:.0f}"),
    Figure("docs/benchmarks.md", "SkipLayerNormalization is {}% of MiniLM's int8 kernel time", LATENCY,
           (op_share("SkipLayerNormalization"),), "{:.0f}"),
    # "~1.7 ms against ~0.35 ms" (issue #21): per-part p50s of the same run
    Figure("docs/benchmarks.md", "cost {} ms against {} ms (per-part p50s)", LATENCY,
           (part_sum("fastdpr-int8", FASTDPR_PARTS), part_sum("optimum-ort-int8", PEER_PARTS))),
    Figure("docs/benchmarks.md", "(encode {} vs {} ms on MiniLM)", LATENCY,
           ("systems/fastdpr-int8/breakdown_ms/encode", "systems/optimum-ort-int8/breakdown_ms/encode")),
    # "1.2-2.2x optimum" (issue #21): only MiniLM's run is a speed result
    Figure("docs/benchmarks.md", "{}x optimum's passages/s", LATENCY,
           ("ratios/fastdpr-int8 vs optimum-ort-int8/passages_per_s",)),
    Figure("docs/benchmarks.md", "fastdpr-int8 is {}x the best PyTorch setup on MiniLM", LATENCY,
           ("ratios/fastdpr-int8 vs pytorch-fp32-sorted/passages_per_s",), "{:.1f}"),
    Figure("docs/benchmarks.md", "fastdpr-int8 answers in {} ms p50, {}x faster than the best PyTorch setup "
           "(sorted) and {}x faster than padded PyTorch", LATENCY,
           ("systems/fastdpr-int8/query_ms/p50", "ratios/fastdpr-int8 vs pytorch-fp32-sorted/query_p50",
            "ratios/fastdpr-int8 vs pytorch-fp32-padded/query_p50"), "{:.1f}"),
    Figure("docs/benchmarks.md", "(fastdpr-int8 vs optimum-ort-int8: {}x on MiniLM)", LATENCY,
           ("ratios/fastdpr-int8 vs optimum-ort-int8/query_p50",)),
    # "16-20 ms even on the tiny l2-h128" (issue #21): replaced by MiniLM's quiet-run model time
    Figure("docs/benchmarks.md", "MiniLM {} passages/s against fastdpr-int8's {}", LATENCY,
           ("systems/openvino-int8/passages_per_s", "systems/fastdpr-int8/passages_per_s"), "{:.1f}"),
    Figure("docs/benchmarks.md", "(fastdpr-int8 vs openvino-int8: {}x)", LATENCY,
           ("ratios/fastdpr-int8 vs openvino-int8/passages_per_s",)),
    Figure("docs/benchmarks.md", "fastdpr is faster per question ({}x on MiniLM)", LATENCY,
           ("ratios/fastdpr-int8 vs openvino-int8/query_p50",)),
    Figure("docs/benchmarks.md", "OpenVINO's single-question call cost {} ms of model time on MiniLM (fastdpr {} ms)",
           LATENCY, ("systems/openvino-int8/breakdown_ms/encode", "systems/fastdpr-int8/breakdown_ms/encode"),
           "{:.1f}"),
    Figure("docs/benchmarks.md", "load average {} / {}; warm-up 32 passages + 42 questions per system", LATENCY,
           ("load_average/start/0", "load_average/end/0")),
    # The contended runs: their load, so that nobody reads them as speed
    Figure("docs/benchmarks.md", "l2-h128 at a 1-minute load average of {} / {} (start / end)",
           "latency-l2-h128/latency.json", ("load_average/start/0", "load_average/end/0"), "{}"),
    Figure("docs/benchmarks.md", "l12-h128 at {} / {}", "latency-l12-h128/latency.json",
           ("load_average/start/0", "load_average/end/0"), "{}"),
    # "HNSW costs at most 3 of 10,570" (issue #21): true for fp32 in one run only
    Figure("docs/benchmarks.md", "fp32 lost at most {} of 10,570 questions at any k in this run", PARITY_VNNI,
           (net_hnsw_loss("onnx-fp32-exact", "onnx-fp32-hnsw"),), "{:.0f}"),
    Figure("docs/benchmarks.md", "and int8 at most {}", PARITY_VNNI,
           (net_hnsw_loss("onnx-int8-exact", "onnx-int8-hnsw"),), "{:.0f}"),
    Figure("docs/benchmarks.md", "the x86-amx run of the 7-bit recipe: fp32 {}, int8 {}", PARITY_AMX,
           (net_hnsw_loss("onnx-fp32-exact", "onnx-fp32-hnsw"), net_hnsw_loss("onnx-int8-exact", "onnx-int8-hnsw")),
           "{:.0f}"),
    Figure("README.md", "fp32 loses at most {} of 10,570 questions at any k, int8 at most {}", PARITY_VNNI,
           (net_hnsw_loss("onnx-fp32-exact", "onnx-fp32-hnsw"), net_hnsw_loss("onnx-int8-exact", "onnx-int8-hnsw")),
           "{:.0f}"),
    # Recall parity prose
    Figure("docs/benchmarks.md", "INT8 moves ~300 questions at Top-1 in each direction ({} hit->miss, {} miss->hit)",
           PARITY_VNNI, ("flips/onnx-int8-hnsw/1/hit_to_miss", "flips/onnx-int8-hnsw/1/miss_to_hit"), "{:.0f}"),
    Figure("docs/benchmarks.md", "nets {} points", PARITY_VNNI, ("delta_vs_pytorch/onnx-int8-hnsw/1",), points),
    Figure("docs/benchmarks.md", "(Top-20 {} -> {})", PARITY_VNNI,
           ("gold_recall/pytorch-fp32-exact/20", "gold_recall/onnx-int8-hnsw/20"), percent),
    Figure("docs/benchmarks.md", "ranked top-1 / top-5 / top-20 / top-100 id list for {} / {} / {} / {}% of the "
           "questions", RANKED,
           tuple(f"ranked_id_agreement/systems/onnx-fp32-exact/{k}/identical_ranked" for k in ("1", "5", "20", "100")),
           lambda v: f"{v / 10570 * 100:.2f}"),
    Figure("docs/benchmarks.md", "({} / {} / {} / {}; the same top-100 set for {})", RANKED,
           (*(f"ranked_id_agreement/systems/onnx-fp32-exact/{k}/identical_ranked" for k in ("1", "5", "20", "100")),
            "ranked_id_agreement/systems/onnx-fp32-exact/100/same_set"), thousands),
    Figure("docs/benchmarks.md", "with HNSW for {} / {} / {} / {}%", RANKED,
           tuple(f"ranked_id_agreement/systems/onnx-fp32-hnsw/{k}/identical_ranked" for k in ("1", "5", "20", "100")),
           lambda v: f"{v / 10570 * 100:.2f}"),
    # Same input, same vector (x86-avx2 logs)
    Figure("docs/benchmarks.md", "per-row passage scales moved Top-1 by {} and Top-5 by {} points", ROWS_AVX2,
           (rows_minus_per_call(0), rows_minus_per_call(1)), signed),
    Figure("docs/benchmarks.md", "fp32 {} passages/s, int8 `-7bit` in batched calls {}, int8 `-7bit` one passage "
           "per call {}", PREVIOUS_AVX2, ("fp32 passages", "int8-b8 passages", "int8-b1 passages"), "{:.1f}"),
    Figure("docs/benchmarks.md", "`-7bit-rows` one per call {} (`recall-rows-exported.log`)", ROWS_AVX2,
           ("final passages",), "{:.1f}"),
    Figure("docs/benchmarks.md", "max abs difference {} over all 10,570 SQuAD questions", PREVIOUS_AVX2,
           (lambda _: float(re.search(r"fp32 b1 vs b32 max abs diff (\S+)", raw_result(PREVIOUS_AVX2))[1]),), "{}"),
    Figure("docs/benchmarks.md", "(150x384x1536, 1 thread, x86-avx2: {} ms vs {} ms", "invariance-x86-avx2/README.md",
           (lambda text: float(re.search(r"s8s8 (\d+\.\d+) ms", text)[1]),
            lambda text: float(re.search(r"u8s8 (\d+\.\d+) ms", text)[1]))),
    Figure("docs/benchmarks.md", "at a load average of {} / {} on 2 cores, so a ratio and not a speed result",
           SPEED_AVX2, ("load_average/start/0", "load_average/end/0"), "{}"),
    Figure("docs/benchmarks.md", "today's default encodes passages at {}x fused fp32 with one passage per call and "
           "{}x with 8 per call", SPEED_AVX2,
           ("speedup_vs_onnx_fp32/onnx-int8", "speedup_vs_onnx_fp32/onnx-int8@batched-calls")),
    Figure("README.md", "passage encoding {}x fused fp32 (interleaved, at load {} on 2 cores", SPEED_AVX2,
           ("speedup_vs_onnx_fp32/onnx-int8", "load_average/start/0"), lambda v: f"{v:.2f}" if v < 2 else f"{v}"),
    # The frontier's prose (2026-11-23, x86-avx512-vnni)
    Figure("docs/benchmarks.md", "brings Top-1 from {} (per-channel) to {} and Top-20 from {} to {}, for {}% of the "
           "speed", "frontier/parity.json",
           ("frontier/dynamic-per-channel/delta_points/1", "frontier/dynamic-per-channel-smooth-auto/delta_points/1",
            "frontier/dynamic-per-channel/delta_points/20", "frontier/dynamic-per-channel-smooth-auto/delta_points/20",
            lambda d: (1 - d["frontier"]["dynamic-per-channel-smooth-auto"]["speedup_vs_fp32"]
                       / d["frontier"]["dynamic-per-channel"]["speedup_vs_fp32"]) * 100),
           lambda v: f"{v:.2f}" if v < 0 else f"{v:.0f}"),
    Figure("docs/benchmarks.md", "cost {} points at Top-1 and between {} and {} beyond", "frontier/parity.json",
           (embedding_cost("1"), lambda d: min(embedding_cost(k)(d) for k in KS[1:]),
            lambda d: max(embedding_cost(k)(d) for k in KS[1:])), lambda v: f"{v:+.2f}" if v < 0.5 else f"{v:.2f}"),
    # The x86-amx default (7-bit) parity run
    Figure("docs/benchmarks.md", "The default meets the recall goal on `x86-amx` with {}x", PARITY_AMX,
           ("passage_encoding_interleaved/speedup_vs_onnx_fp32/onnx-int8",)),
    # OpenVINO's parity run
    Figure("docs/benchmarks.md", "openvino-int8 (exact search) {} / {} / {} / {} / {}", OPENVINO,
           tuple(f"delta_vs_pytorch/openvino-int8-exact/{k}" for k in KS), lambda v: f"{v * 100:.2f}"),
    Figure("docs/benchmarks.md", "{} / {} / {} / {} / {} exact, which misses the Top-20 goal", OPENVINO,
           tuple(f"delta_vs_pytorch/onnx-int8-exact/{k}" for k in KS), lambda v: f"{v * 100:.2f}"),
    Figure("docs/benchmarks.md", "x86-amx, quiet machine, load {}, 2026-11-30 04:54 UTC", OPENVINO,
           ("load_average/start/0",), "{}"),
    Figure("docs/benchmarks.md", "OpenVINO encoded {} passages/s and fastdpr-int8 {}", OPENVINO,
           ("passages_per_s/openvino-int8-exact", "passages_per_s/onnx-int8-exact"), "{:.1f}"),
    # README's headline table
    Figure("README.md", "the same at Top-1/5/20/50/100: {} / {} / {} / {} / {}", PARITY_VNNI,
           tuple(f"answer_recall/onnx-fp32-exact/{k}" for k in KS), percent),
    Figure("README.md", "the same at Top-1/5/20/50/100: {} / {} / {} / {} / {}", PARITY_AMX,
           tuple(f"answer_recall/onnx-fp32-exact/{k}" for k in KS), percent),
    Figure("docs/benchmarks.md", "int8 + HNSW as deployed: {} / {} / {} / {} / {}", PARITY_QKEEP2_VNNI,
           tuple(f"delta_vs_pytorch/onnx-int8-hnsw/{k}" for k in KS), points),
    Figure("docs/benchmarks.md", "1-minute load average {} at the start and {} at the end", PARITY_QKEEP2_VNNI,
           ("load_average/start/0", "load_average/end/0"), "{}"),
    Figure("README.md", "{} / {} / {} / {} / {} at Top-1/5/20/50/100 (issue #19's 0.25 target not met)",
           DEFAULT_AVX2, tuple(f"q=deployed p=final/{i}" for i in range(5)), signed),
    Figure("README.md", "{} / {} / {} / {} / {} at Top-1/5/20/50/100; passage encoding {}x fused fp32", PARITY_AMX,
           (*(f"delta_vs_pytorch/onnx-int8-hnsw/{k}" for k in KS),
            "passage_encoding_interleaved/speedup_vs_onnx_fp32/onnx-int8"),
           lambda v: points(v) if abs(v) < 1 else f"{v:.2f}"),
    Figure("README.md", "{} ms p50: {}x faster than the best PyTorch setup (sorted), {}x faster than padded PyTorch",
           LATENCY, ("systems/fastdpr-int8/query_ms/p50", "ratios/fastdpr-int8 vs pytorch-fp32-sorted/query_p50",
                     "ratios/fastdpr-int8 vs pytorch-fp32-padded/query_p50"), "{:.1f}"),
    Figure("README.md", "| {}x the best PyTorch setup; {}x optimum", LATENCY,
           ("ratios/fastdpr-int8 vs pytorch-fp32-sorted/passages_per_s",
            "ratios/fastdpr-int8 vs optimum-ort-int8/passages_per_s")),
    Figure("README.md", "a lone request {} ms p50; {} req/s at 64 clients", SERVE,
           ("levels/summary/http-batched-2x1-wait0/1/p50", "levels/summary/http-batched-2x1-wait0/64/throughput_rps"),
           lambda v: f"{v:.2f}" if v < 100 else f"{v:.1f}"),
    Figure("README.md", "answers {}x, {}x and {}x the requests per second of one call per request at 4, 16 and 64",
           SERVE, tuple(rps_ratio("http-batched-2x1-wait0", "http-unbatched-2x1", c) for c in (4, 16, 64))),
    Figure("README.md", "built in {} s; {} bytes per passage on disk; query p50 {} ms (k=100)", SCALE_L2,
           ("systems/local/build/wall_seconds", "systems/local/build/disk/bytes_per_passage",
            "systems/local/serve/query_ms/p50"), lambda v: f"{v:,.0f}" if v > 100 else f"{v:.1f}"),
    Figure("README.md", "recall@100 vs exact {} at the default ef=400; query p50 {} ms (k=100)", SCALE_MINILM,
           ("systems/local/serve/recall_vs_exact", "systems/local/serve/query_ms/p50"),
           lambda v: f"{v:.3f}" if v < 1 else f"{v:.1f}"),
    Figure("README.md", "BERT-base: encoding {} hours on one machine like this one, {} on 16", PROJECTION,
           ("rows/0/encode_hours", "rows/2/encode_hours"), "{:.0f}"),
    Figure("docs/serve.md", "A 2 ms wait costs every lone request {} ms p50", SERVE,
           (lambda d: d["levels"]["summary"]["http-batched-2x1"]["1"]["p50"]
            - d["levels"]["summary"]["http-batched-2x1-wait0"]["1"]["p50"],), "{:.1f}"),
    Figure("docs/serve.md", "10 minutes at 16 clients, {} requests, {} errors, the server's RSS {} MiB at the start, "
           "{} MiB at the end (max {}, slope {} MiB/min)", "serve-x86-amx/serve.json",
           ("soak/requests", "soak/errors", "soak/rss_start_mib", "soak/rss_end_mib", "soak/rss_max_mib",
            "soak/rss_slope_mib_per_min"), lambda v: f"{v:,}" if isinstance(v, int) else f"{v:.2f}".rstrip("0")),
    # Issue #22: compressed vectors
    Figure("README.md", "int8 {} at every k; pq {} / {} at Top-50 / Top-100", f"{VECTORS}/squad-minilm.json",
           ("systems/int8/points_vs_fp32_exact/1", "systems/pq/points_vs_fp32_exact/50",
            "systems/pq/points_vs_fp32_exact/100"), "{:+.2f}"),
    Figure("README.md", "serving RSS {} (int8) / {} (pq) bytes per passage after 1,000 questions (goal 1,000 / 450; "
           "anonymous {} / {})", f"{RSS}/bert-shape-1m.json",
           ("kinds/int8/rss_bytes_per_passage/total_after_questions/last",
            "kinds/pq/rss_bytes_per_passage/total_after_questions/last",
            "kinds/int8/rss_bytes_per_passage/anonymous", "kinds/pq/rss_bytes_per_passage/anonymous"), thousands),
    Figure("README.md", "search CPU time p50 {} / {} ms against {} / {} re-ranking through the memory map",
           f"{RSS}/bert-shape-1m.json", tuple(f"kinds/{kind}/search_cpu_ms/p50"
                                              for kind in ("int8", "pq", "int8@mapped", "pq@mapped"))),
    # docs/scale.md: Serving RSS (issue #22)
    Figure("docs/scale.md", "nor a scan at load ({}-{} bytes per passage after opening a 1M index)",
           f"{RSS}/bert-shape-1m.json", (lambda d: min(v["memory"]["after_open"]["VmRSS"] for v in d["kinds"].values())
                                         / d["passages"],
                                         lambda d: max(v["memory"]["after_open"]["VmRSS"] for v in d["kinds"].values())
                                         / d["passages"]), thousands),
    Figure("docs/scale.md", "after 10 questions {} bytes per passage of `vectors.npy` resident where the re-ranked "
           "rows span {}; after 100, {} against {}; after 1,000, {} against {}", f"{RSS}/rerank-footprint.json",
           tuple(lambda d, n=n, key=key: next(r for r in d["runs"] if r["passages"] == 1_000_000 and r["kind"] == "int8"
                                               and r["reads"] == "mapped" and r["questions"] == n
                                               )["bytes_per_passage"][key]
                 for n in (10, 100, 1000) for key in ("resident_vectors.npy", "pages_rerank_rows_span")), thousands),
    Figure("docs/scale.md", "RSS after 1,000 questions {} (int8) and {} (pq) bytes per passage at 1M (goal",
           f"{RSS}/bert-shape-1m.json", ("kinds/int8/rss_bytes_per_passage/total_after_questions/last",
                                         "kinds/pq/rss_bytes_per_passage/total_after_questions/last"), thousands),
    Figure("docs/scale.md", "1,000 / 450): the process's own memory ({} / {}) and the codes it probes",
           f"{RSS}/bert-shape-1m.json", ("kinds/int8/rss_bytes_per_passage/anonymous",
                                         "kinds/pq/rss_bytes_per_passage/anonymous"), thousands),
    Figure("docs/scale.md", "64 probe every list: {} / {}), plus", f"{RSS}/bert-shape-1m.json",
           ("kinds/int8/rss_bytes_per_passage/file_backed_by_file/vectors.faiss",
            "kinds/pq/rss_bytes_per_passage/file_backed_by_file/vectors.faiss"), thousands),
    Figure("docs/scale.md", "(int8: {} after 100 questions, {} after 300)", f"{RSS}/bert-shape-1m.json",
           ("kinds/int8/rss_bytes_per_passage/total_after_questions/100",
            "kinds/int8/rss_bytes_per_passage/total_after_questions/300"), thousands),
    Figure("docs/scale.md", "p50 rose from {} to {} ms (int8) and {} to {} ms (pq) at 1M; wall p50 ({} against {}, {} "
           "against {})", f"{RSS}/bert-shape-1m.json",
           ("kinds/int8@mapped/search_cpu_ms/p50", "kinds/int8/search_cpu_ms/p50", "kinds/pq@mapped/search_cpu_ms/p50",
            "kinds/pq/search_cpu_ms/p50", "kinds/int8/search_ms/p50", "kinds/int8@mapped/search_ms/p50",
            "kinds/pq/search_ms/p50", "kinds/pq@mapped/search_ms/p50")),
    Figure("docs/scale.md", "p50 {} against {} ms (int8) and {} against {} (pq), ~0.7 ms more a question for 400 "
           "rows, still {}x / {}x fp32 HNSW's {} ms", f"{RSS}/bert-shape-200k.json",
           ("kinds/int8/search_ms/p50", "kinds/int8@mapped/search_ms/p50", "kinds/pq/search_ms/p50",
            "kinds/pq@mapped/search_ms/p50",
            lambda d: d["kinds"]["int8"]["search_ms"]["p50"] / d["kinds"]["fp32"]["search_ms"]["p50"],
            lambda d: d["kinds"]["pq"]["search_ms"]["p50"] / d["kinds"]["fp32"]["search_ms"]["p50"],
            "kinds/fp32/search_ms/p50")),
    # docs/scale.md prose: compressed vectors (issue #22)
    Figure("docs/scale.md", "(int8: {} points at every k, bound 0.25; pq: {} / {} at Top-50 / Top-100",
           f"{VECTORS}/squad-minilm.json",
           ("systems/int8/points_vs_fp32_exact/1", "systems/pq/points_vs_fp32_exact/50",
            "systems/pq/points_vs_fp32_exact/100"), "{:+.2f}"),
    Figure("docs/scale.md", "({} / {} / {} ms against {} in the one side-by-side run",
           f"{VECTORS}/bert-shape-200k.json",
           tuple(f"kinds/{kind}/search_ms/p50" for kind in ("int8", "pq", "fp16", "fp32"))),
    Figure("docs/scale.md", "(anonymous RSS) of {} / {} bytes per passage at 1M", f"{VECTORS}/bert-shape-1m.json",
           ("kinds/int8/rss_bytes_per_passage/anonymous", "kinds/pq/rss_bytes_per_passage/anonymous"), "{:.0f}"),
    Figure("docs/scale.md", "(fp32: {} at 200k, its graph); cold start flat with size (int8 {} s at 200k",
           f"{VECTORS}/bert-shape-200k.json",
           ("kinds/fp32/rss_bytes_per_passage/anonymous", "kinds/int8/cold_start_s"),
           lambda v: thousands(v) if v > 100 else f"{v:.2f}"),
    Figure("docs/scale.md", "{} s at 1M; pq", f"{VECTORS}/bert-shape-1m.json", ("kinds/int8/cold_start_s",)),
    Figure("docs/scale.md", "pq {} s and", f"{VECTORS}/bert-shape-200k.json", ("kinds/pq/cold_start_s",)),
    Figure("docs/scale.md", "and {} s: the files are not read at load; fp32",
           f"{VECTORS}/bert-shape-1m.json", ("kinds/pq/cold_start_s",)),
    Figure("docs/scale.md", "fp32 {} s at 200k, reading its graph",
           f"{VECTORS}/bert-shape-200k.json", ("kinds/fp32/cold_start_s",)),
    Figure("docs/scale.md", "the processes had {} (int8) and {} (pq) bytes per passage",
           f"{VECTORS}/bert-shape-1m.json",
           ("kinds/int8/rss_bytes_per_passage/file_backed", "kinds/pq/rss_bytes_per_passage/file_backed"), thousands),
    Figure("docs/scale.md", "Probing 4 of 53 lists lost {} points at Top-100 there", f"{VECTORS}/squad-minilm.json",
           (lambda d: -d["systems"]["int8-nprobe4"]["points_vs_fp32_exact"]["100"],)),
    Figure("docs/scale.md", "IVF at the default nprobe recalled {} (200k)",
           f"{VECTORS}/bert-shape-200k.json", ("kinds/int8/recall_at_100_vs_exact",),
           "{:.3f}"),
    Figure("docs/scale.md", "and {} (1M) of the exact top 100",
           f"{VECTORS}/bert-shape-1m.json", ("kinds/int8/recall_at_100_vs_exact",), "{:.3f}"),
    Figure("docs/scale.md", "{} at nprobe 256, against fp32 HNSW's {}.", f"{VECTORS}/bert-shape-200k.json",
           ("kinds/int8@nprobe256/recall_at_100_vs_exact", "kinds/fp32/recall_at_100_vs_exact"), "{:.3f}"),
    Figure("docs/scale.md", "int8 adds {} bytes per 768-d passage to it, pq {}", f"{VECTORS}/bert-shape-200k.json",
           ("kinds/int8/bytes_per_passage/searched", "kinds/pq/bytes_per_passage/searched"), thousands),
    Figure("docs/scale.md", "({} at 1M, its fixed centroids",
           f"{VECTORS}/bert-shape-1m.json", ("kinds/pq/bytes_per_passage/searched",), thousands),
    Figure("docs/scale.md", "fp16 {}, where fp32's graph is {}.", f"{VECTORS}/bert-shape-200k.json",
           ("kinds/fp16/bytes_per_passage/searched", "kinds/fp32/bytes_per_passage/searched"), thousands),
    Figure("docs/scale.md", "int8 ({} s against {} s at 200k) and fp16 ({} s)", f"{VECTORS}/bert-shape-200k.json",
           ("kinds/int8/build_seconds", "kinds/fp32/build_seconds", "kinds/fp16/build_seconds"), "{:.0f}"),
    Figure("docs/scale.md", "slower per passage for pq than int8 ({} s)",
           f"{VECTORS}/bert-shape-200k.json", ("kinds/pq/build_seconds",), "{:.0f}"),
    # docs/scale.md prose: local Ray against local, one machine
    Figure("docs/scale.md", "({}x the build time for L-2 H-128, {}x for MiniLM", SCALE_L2,
           (ray_over_local("build", "wall_seconds"), lambda _: ray_over_local("build", "wall_seconds")(
               result(SCALE_MINILM))), "{:.2f}"),
    Figure("docs/scale.md", "({}-{}x the build memory)", SCALE_L2,
           (ray_over_local("build", "peak_memory_bytes_tree_pss"),
            lambda _: ray_over_local("build", "peak_memory_bytes_tree_pss")(result(SCALE_MINILM))), "{:.0f}"),
    Figure("docs/scale.md", "({}-{}x the p50 latency;", SCALE_MINILM,
           (ray_p50_over_local, lambda _: ray_p50_over_local(result(SCALE_L2))), "{:.1f}"),
    Figure("docs/scale.md", "each shard's graph took {}x", SCALE_L2, (ray_over_local("build", "hnsw_graph_seconds"),),
           "{:.1f}"),
    Figure("docs/scale.md", "still took {}x the local ones ({} s against {} s", SCALE_MINILM,
           (ray_over_local("build", "hnsw_graph_seconds"), "systems/ray/build/hnsw_graph_seconds",
            "systems/local/build/hnsw_graph_seconds"), lambda v: f"{v:.2f}" if v < 2 else f"{v:.1f}"),
    Figure("docs/scale.md", "Encoding ran at {}x (L-2) and {}x (MiniLM) the local rate", SCALE_L2,
           (ray_over_local("build", "encode_passages_per_s"),
            lambda _: ray_over_local("build", "encode_passages_per_s")(result(SCALE_MINILM))), "{:.2f}"),
    Figure("docs/scale.md", "measured with tracemalloc: {} bytes per passage at 1M ids", SCALE_L2,
           ("seen_id_set/bytes_per_passage",), "{:.0f}"),
    # docs/scale.md, appending and deleting: 1% appended to the one fresh build of 990k passages
    Figure("docs/scale.md", "one fresh build of {} SYNTHETIC passages", APPEND_1M, ("build/passages",), thousands),
    Figure("docs/scale.md", "took {} s ({} s encoding, {} s writing passages and vectors, {} s graph, {} s hashing; "
           "load average {} before, {} after). Appending the other {} to it took {} s (the median of {} appends",
           APPEND_1M, ("build/wall_seconds", "build/split_seconds/encode_without_store", "build/split_seconds/store",
                       "build/split_seconds/graph", "build/split_seconds/hash", "build/load_before_after/0/0",
                       "build/load_before_after/1/0", "append/appended", "append/wall_seconds",
                       "settings/append_runs"),
           lambda v: thousands(v) if v == 10_000 else f"{v}"),
    Figure("docs/scale.md", "{} s encoding, {} s graph (loading, extending and saving the 1M-element hnswlib file), "
           "{} s passages and vectors, {} s hashes", APPEND_1M,
           ("append/split_seconds/encode", "append/write_split_seconds/graph", "append/write_split_seconds/rows",
            "append/write_split_seconds/hash"), "{}"),
    Figure("docs/scale.md", "Append / fresh build: {} of the wall time, {} of the CPU time", APPEND_1M,
           ("append_vs_build/wall", "append_vs_build/cpu"), "{}"),
    Figure("docs/scale.md", "{} for the 990k build, {} after the append", APPEND_1M,
           ("append/recall_at_100_vs_exact/head", "append/recall_at_100_vs_exact/appended"), "{}"),
    Figure("docs/scale.md", "encoded at {} ms per passage against l2-h128's {} ms in the same run ({}x)", APPEND_1M,
           (f"encode_cost/ms_per_passage/{MINILM_AS_DPR}", f"encode_cost/ms_per_passage/{L2_RANDOM}",
            f"projection/models/{MINILM_AS_DPR}/encode_ratio"), "{}"),
    Figure("docs/scale.md", "median {} s before, {} s after ({}): {}-{} s of int8 check gone", APPEND_AB,
           ("median_wall_seconds/before", "median_wall_seconds/after", "after_over_before",
            lambda d: min(run["seconds"]["setup"] for run in d["runs"]["before"]),
            lambda d: max(run["seconds"]["setup"] for run in d["runs"]["before"])),
           lambda v: f"{v:.2f}" if v > 10 else f"{v}"),
    Figure("docs/scale.md", "appending 1% to 1M MiniLM passages comes to {} of a full build", APPEND_1M,
           (f"projection/models/{MINILM_AS_DPR}/append_vs_build",), "{}"),
    Figure("docs/scale.md", "{} at 21M ids ({} GB)", PROJECTION,
           ("rows/0/inputs/seen_id_bytes", lambda d: d["rows"][0]["inputs"]["seen_id_bytes"] * d["rows"][0]["passages"]
            / 1e9), lambda v: f"{v:.0f}" if v > 50 else f"{v:.1f}"),
    Figure("docs/scale.md", "they need ef=1,600 for {} of the exact top 100 over 4 shards", SCALE_L2,
           ("systems/local/serve/recall_by_ef/1600/recall_vs_exact",), "{:.2f}"),
    Figure("docs/scale.md", "MiniLM's real vectors reach {} over 4 shards and {} in one 200k-node graph", SCALE_MINILM,
           ("systems/local/serve/recall_vs_exact", "systems/local/serve/unsharded/recall_vs_exact"), "{:.3f}"),
    # docs/serve.md prose
    Figure("docs/serve.md", "answers {}x, {}x and {}x the requests per second of one call per request at 4, 16 and 64",
           SERVE, tuple(rps_ratio("http-batched-2x1-wait0", "http-unbatched-2x1", c) for c in (4, 16, 64))),
    Figure("docs/serve.md", "({} vs {} ms p50)", SERVE,
           ("levels/summary/http-batched-2x1-wait0/1/p50", "levels/summary/http-unbatched-2x1/1/p50")),
    Figure("docs/serve.md", "is {} ms p50 at 1 client", SERVE,
           ("levels/summary/http-batched-2x1-wait0/1/http_overhead_p50_ms",), "{:.1f}"),
    Figure("docs/serve.md", "({} vs {} ms p50)", SERVE,
           ("levels/summary/http-unbatched/1/p50", "levels/summary/http-batched-2x1-wait0/1/p50"), "{:.1f}"),
    Figure("docs/serve.md", "({} ms vs {} ms end to end at 1 client)", SERVE,
           ("levels/summary/in-process/1/p50", "levels/summary/http-batched-2x1-wait0/1/p50"), "{:.1f}"),
)


# ---------------------------------------------------------------------------------------------------------
# Tables: every cell of a published table against its file


def section(text: str, heading: str) -> str:
    """The raw Markdown under ``heading`` (a heading line's text, without #), up to the next heading."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#") and line.lstrip("#").strip() == heading)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("#")), len(lines))
    return "\n".join(lines[start + 1:end])


def tables(markdown: str) -> list[list[list[str]]]:
    """Every table of a Markdown text as rows of cells (bold marks dropped; the separator row skipped)."""
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip().replace("**", "") for cell in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def raw(name: str) -> str:
    return (REPO_ROOT / name).read_text(encoding="utf-8")


def table_under(name: str, heading: str, header_start: str, count: int = 1, nth: int = 0) -> list[list[str]]:
    """The ``nth`` of the ``count`` tables under ``heading`` of page ``name`` whose first header cell is
    ``header_start``."""
    candidates = [t for t in tables(section(raw(name), heading)) if t[0][0] == header_start]
    assert len(candidates) == count, f"{name} / {heading}: {len(candidates)} tables start with {header_start!r}"
    return candidates[nth]


LATENCY_HEADING = "MiniLM-L6 as DPR pair (real weights)"
RECALL_HEADING = "Recall parity (SQuAD v1.1 dev, all 2,067 paragraphs and all 10,570 questions)"


def test_latency_table_is_the_result_file() -> None:
    data = result(LATENCY)
    rows = table_under("docs/benchmarks.md", LATENCY_HEADING, "system")
    assert rows[0][:4] == ["system", "passages/s", "query p50 ms", "p95 ms"]
    assert [row[0] for row in rows[1:]] == list(data["systems"])
    for row in rows[1:]:
        system = data["systems"][row[0]]
        b = system["breakdown_ms"]
        expected = [row[0], *map(format_figure, (system["passages_per_s"], system["query_ms"]["p50"],
                                                 system["query_ms"]["p95"], b["tokenize"], b["encode"], b["search"],
                                                 b["fetch"], b["other"], system["warmup"]["first_ms"]))]
        assert row == expected, row[0]


def test_latency_ratio_table_is_the_result_file() -> None:
    data = result(LATENCY)
    rows = table_under("docs/benchmarks.md", LATENCY_HEADING, "comparison")
    assert [row[0] for row in rows[1:]] == list(data["ratios"])
    for row in rows[1:]:
        r = data["ratios"][row[0]]
        assert row[1:] == [f"{r['passages_per_s']:.2f}x", f"{r['query_p50']:.2f}x", f"{r['query_p95']:.2f}x"], row[0]


def test_recall_parity_tables_are_the_result_file() -> None:
    data = result(PARITY_VNNI)
    recall, delta, flips = data["answer_recall"], data["delta_vs_pytorch"], data["flips"]
    absolute = table_under("docs/benchmarks.md", RECALL_HEADING, "System", count=2)
    assert len(absolute) == 1 + len(recall)
    for row in absolute[1:]:
        system = row[0].split(" (")[0]
        assert row[1:] == [percent(recall[system][k]) for k in KS], system
    differences = table_under("docs/benchmarks.md", RECALL_HEADING, "System", count=2, nth=1)
    for row in differences[1:]:
        system = row[0].split(" (")[0]
        assert row[1:] == [f"{points(delta[system][k])} ({flips[system][k]['hit_to_miss']}/"
                           f"{flips[system][k]['miss_to_hit']})" for k in KS], system
    # The deployed recipe is not the one this table measured: the row must say which recipe it was.
    assert data["recipes"]["onnx-int8-hnsw"] == "dynamic-per-channel-smooth-auto"
    assert any("dynamic-per-channel-smooth-auto, 8-bit" in row[0] for row in absolute), "label the recipe"
    assert not any("as deployed" in row[0] for row in absolute)


def test_frontier_table_is_the_result_file() -> None:
    data = result("frontier/parity.json")
    rows = table_under("docs/benchmarks.md", "INT8 recipes: the frontier", "Recipe")
    speedups = data["passage_encoding_interleaved"]["speedup_vs_onnx_fp32"]
    for row in rows[1:]:
        recipe = row[0].split(" (")[0]
        key = "dynamic-per-channel-smooth-auto@squad-calibrated" if recipe.startswith("same, calibrated") else recipe
        deltas = data["delta_vs_pytorch"][f"onnx-int8[{key}]-hnsw"]
        assert row[2:7] == [f"{deltas[k] * 100:.2f}" for k in KS], recipe
        assert row[7] == f"{speedups[f'onnx-int8[{key}]']:.2f}x", recipe


def test_cpu_class_table_rows_from_result_files() -> None:
    rows = {(row[0], row[2]): row for row in table_under("docs/benchmarks.md", "INT8 on every CPU class", "recipe",
                                                         count=2)[1:]}
    frontier_amx = result("frontier-x86-amx/parity.json")["delta_vs_pytorch"]
    checks = {
        ("smooth-auto (old default)", "x86-avx512-vnni"): (result("frontier/parity.json")["delta_vs_pytorch"]
                                                          ["onnx-int8[dynamic-per-channel-smooth-auto]-hnsw"]),
        ("smooth-auto (old default)", "x86-amx"): frontier_amx["onnx-int8[dynamic-per-channel-smooth-auto]-hnsw"],
        ("smooth-auto-7bit (the default until issue #19)", "x86-amx"): result(PARITY_AMX)["delta_vs_pytorch"][
            "onnx-int8-hnsw"],
    }
    for key, deltas in checks.items():
        assert key in rows, key
        assert rows[key][4:9] == [f"{deltas[k] * 100:.2f}" for k in KS], key
    speedups = {("smooth-auto (old default)", "x86-avx512-vnni"): result("frontier/parity.json")[
        "passage_encoding_interleaved"]["speedup_vs_onnx_fp32"]["onnx-int8[dynamic-per-channel-smooth-auto]"],
                ("smooth-auto-7bit (the default until issue #19)", "x86-amx"): result(PARITY_AMX)[
        "passage_encoding_interleaved"]["speedup_vs_onnx_fp32"]["onnx-int8"]}
    for key, speedup in speedups.items():
        assert rows[key][9].split(" (")[0] == f"{speedup:.2f}x", key
    assert rows[("smooth-auto (old default)", "x86-amx")][9] == "(contended run)"
    # Rows without a result file here say so in the row itself.
    for key, row in rows.items():
        if key not in checks:
            assert "no result file" in row[3], key


def test_avx2_emulation_table_is_the_result_file() -> None:
    data = result("frontier-x86-amx/avx2-emulated.json")
    rows = table_under("docs/benchmarks.md", "INT8 on every CPU class", "recipe", count=2, nth=1)
    recipes = {"smooth-auto (8-bit)": "dynamic-per-channel-smooth-auto", "per-channel (8-bit)": "dynamic-per-channel",
               "smooth-auto-7bit": "dynamic-per-channel-smooth-auto-7bit"}
    assert [row[0] for row in rows[1:]] == list(recipes)

    def pair(values: list[float], digits: int) -> str:
        """One figure when both sides agree at the printed precision, else "question / context"."""
        shown = [f"{v:.{digits}f}%" if v else "0" for v in values]
        return shown[0] if shown[0] == shown[1] else " / ".join(shown)

    for row in rows[1:]:
        sides = [data[recipes[row[0]]][side] for side in ("question", "context")]
        held_out = [side["held_out"] for side in sides]
        assert [row[1], row[2], row[3].removesuffix(" of the node's range")] == [
            pair([side["fraction"] * 100 for side in sides], 2 if sides[0]["fraction"] < 0.01 else 1),
            pair([h["outputs_changed_fraction"] * 100 for h in held_out], 2),
            pair([h["max_relative_output_change"] * 100 for h in held_out], 0)], row[0]


def test_invariance_table_recall_columns_are_the_logs() -> None:
    rows = table_under("docs/benchmarks.md", "Same input, same vector", "passage encoder")
    logs = {"previous": result(PREVIOUS_AVX2), "rows": result(ROWS_AVX2), "default": result(DEFAULT_AVX2)}
    sources = {  # (passage encoder, question encoder) as the table names them -> (log, its line)
        ("int8 `-7bit`, batched calls (the previous default)", "int8 `-7bit`, batches of 32"): ("previous",
                                                                                               "q=int8-b32 p=int8-b8"),
        ("int8 `-7bit`, one per call", "int8 `-7bit`, one per call"): ("previous", "q=int8-b1 p=int8-b1"),
        ("int8 `-7bit`, one per call", "fp32"): ("previous", "q=fp32 p=int8-b1"),
        ("int8 `-7bit-rows` as exported now (alpha 0.6 searched per input)", "fp32"): ("rows", "q=fp32 p=final"),
        ("int8 `-7bit-rows` as exported now", "int8 `-7bit`, searched per input (alpha 0.75): the default"): (
            "default", "q=deployed p=final"),
        ("int8 `-7bit-rows` as exported now", "int8 rows (alpha 0.6)"): ("rows", "q=final p=final"),
    }
    assert {(row[0], row[1]) for row in rows[1:]} == set(sources)
    for row in rows[1:]:
        log, line = sources[(row[0], row[1])]
        assert row[2:7] == [signed(v) for v in logs[log][line]], (row[0], row[1])


QUESTION_SIDE = "question-side-x86-avx512-vnni"


def question_side_logs() -> tuple[dict[str, list[float]], dict[str, float]]:
    """recall.log: one line per question model (its path, the points vs PyTorch by k, seconds);
    latency.log: the 1-thread line of p50 ms by model."""
    recall = {}
    for line in (RESULTS / QUESTION_SIDE / "recall.log").read_text(encoding="utf-8").splitlines():
        if line.startswith(("/", "q/")):
            path, deltas = line.split(" ", 1)
            values = json.loads(deltas[: deltas.rindex("}") + 1].replace("'", '"'))
            recall[path] = [values[k] for k in KS]
    one_thread = next(line for line in (RESULTS / QUESTION_SIDE / "latency.log").read_text(encoding="utf-8")
                      .splitlines() if line.startswith("1 "))
    return recall, json.loads(one_thread[2:].replace("'", '"'))


def test_question_side_table_is_the_logs() -> None:
    rows = table_under("docs/benchmarks.md", "The question side, on x86-avx512-vnni: two MatMuls stay fp32",
                       "question encoder")
    recall, p50 = question_side_logs()
    sources = {  # the table's row -> (recall.log's model, latency.log's model or None)
        "int8, per-call scales (the previous default)": ("/tmp/s22/exp/minilm/question/model.int8.onnx", "int8"),
        "fp32": ("/tmp/s22/exp/minilm/question/model.onnx", "fp32"),
        "int8, per-row scales": ("q/rows.onnx", "rows"),
        "int8, the 2 most sensitive MatMuls fp32 (the default now)": ("q/keep2.onnx", "keep2"),
        "int8, the 4 most sensitive MatMuls fp32": ("q/keep4.onnx", None),
    }
    assert [row[0] for row in rows[1:]] == list(sources)
    for row in rows[1:]:
        model, latency = sources[row[0]]
        assert row[1:6] == [f"{v:.2f}" for v in recall[model]], row[0]
        expected = "not measured" if latency is None else f"{p50[latency]:.2f} ms ({p50[latency] / p50['int8']:.2f}x)"
        assert row[6] == expected, row[0]



PASSAGE_SIDE = "passage-side-x86-avx512-vnni"


def test_passage_side_table_is_the_result_files() -> None:
    """The passage-side frontier: HNSW recall (points vs PyTorch) from recall.json, passages/s and the ratio to
    fused fp32 from the per-group interleaved runs (speed-fine-1.json, speed-fine-2.json: one per thread count)."""
    rows = table_under("docs/benchmarks.md", "The passage side, on x86-avx512-vnni: four nodes stay fp32",
                       "passage encoder")
    recall = result(f"{PASSAGE_SIDE}/recall.json")
    sources = {  # the table's row -> (recall.json's model, the speed files' model)
        "int8, the default (no node fp32)": ("deployed", "int8 default"),
        "int8, the 2 most sensitive nodes fp32": ("keep2", "int8 keep2"),
        "int8, the 4 most sensitive nodes fp32 (`-qkeep2-pkeep4`)": ("keep4", "int8 keep4"),
        "int8, the 8 most sensitive nodes fp32": ("keep8", "int8 keep8"),
        "fp32 (fused)": ("fp32", "onnx-fp32"),
    }
    assert [row[0] for row in rows[1:]] == list(sources)
    runs = {threads: result(f"{PASSAGE_SIDE}/speed-fine-{threads}.json") for threads in (1, 2)}
    for row in rows[1:]:
        model, timed = sources[row[0]]
        assert row[1:6] == [f"{recall[model]['hnsw']['delta_points'][k]:+.2f}" for k in KS], row[0]
        assert row[6:8] == [f"{runs[t]['passages_per_s'][timed]:.1f} ({runs[t]['speedup_vs_onnx_fp32'][timed]:.2f}x)"
                            for t in (1, 2)], row[0]


SERVE_ROWS = {"batched, wait 0, 2 workers x 1 thread (default)": "http-batched-2x1-wait0",
              "batched, wait 0, 2 x 1 (default)": "http-batched-2x1-wait0",
              "unbatched (`--max-batch 1`), 2 x 1": "http-unbatched-2x1", "unbatched, 2 x 1": "http-unbatched-2x1",
              "batched, wait 2 ms, 2 x 1": "http-batched-2x1", "in-process `Retriever.search`": "in-process",
              "in-process `search_batch` of 16": "in-process", "in-process `search_batch` of 64": "in-process"}


def test_serve_table_is_the_result_file() -> None:
    summary = result(SERVE)["levels"]["summary"]
    rows = next(t for t in tables(raw("docs/serve.md")) if t[0][0] == "clients")
    assert len(rows) == 1 + 15  # 4 client counts x 3 servers, and 3 in-process rows
    for row in rows[1:]:
        cell = summary[SERVE_ROWS[row[1]]][row[0]]
        mean_batch = f"{cell['mean_batch']:.2f}".rstrip("0").rstrip(".") if "mean_batch" in cell else ""
        if mean_batch and "." not in mean_batch:
            mean_batch += ".0"
        assert row[2:] == [f"{cell['throughput_rps']:.1f}", f"{cell['p50']:.2f}", f"{cell['p99']:.2f}",
                           f"{cell['server_cpu_ms_per_request']:.2f}", mean_batch], row[:2]


SCALE_ROWS: dict[str, Callable[[Any, str], str]] = {
    "build wall time (s)": lambda d, s: f"{d['systems'][s]['build']['wall_seconds']:,.0f}",
    "encode passages/s (all but graphs)": lambda d, s: f"{d['systems'][s]['build']['encode_passages_per_s']:.1f}",
    "recall@100 vs exact, 4 shards, ef=400": lambda d, s: f"{d['systems'][s]['serve']['recall_vs_exact']:.3f}",
    "query p50 / p99 ms, k=100, one at a time (encode + search + fetch)": lambda d, s: (
        f"{d['systems'][s]['serve']['query_ms']['p50']:.1f} / {d['systems'][s]['serve']['query_ms']['p99']:.1f}"),
    "search alone p50 / p99 ms": lambda d, s: (
        f"{d['systems'][s]['serve']['search_ms']['p50']:.1f} / {d['systems'][s]['serve']['search_ms']['p99']:.1f}"),
    "load average (1 min) at build start / end": lambda d, s: (
        f"{d['systems'][s]['build']['loadavg_before'][0]:.1f} / {d['systems'][s]['build']['loadavg_after'][0]:.1f}"),
    "HNSW graphs, 4 shards (s)": lambda d, s: f"{d['systems'][s]['build']['hnsw_graph_seconds']:.4g}",
    "build peak memory, process tree PSS (GiB)": lambda d, s: (
        f"{d['systems'][s]['build']['peak_memory_bytes_tree_pss'] / 2**30:.2f}"),
    "disk bytes per passage: vectors / HNSW / passages / total": lambda d, s: " / ".join(
        f"{v:,.0f}" for v in (*(d["systems"]["local"]["build"]["disk"]["by_kind_bytes_per_passage"][kind]
                                for kind in ("vectors", "hnsw", "passages")),
                              d["systems"]["local"]["build"]["disk"]["bytes_per_passage"]))
    if s == "local" else ("the same files" if d["systems"]["ray"]["build"]["disk"]["by_kind_bytes_per_passage"]
                          == d["systems"]["local"]["build"]["disk"]["by_kind_bytes_per_passage"] else "differs"),
    "cold start, new process to first answer (s)": lambda d, s: f"{d['systems'][s]['serve']['cold_start_seconds']:.2f}",
    "serving peak RSS (GiB)": lambda d, s: f"{d['systems'][s]['serve']['peak_rss_bytes'] / 2**30:.2f}",
    "recall@100 vs exact, one unsharded graph (same vectors), ef=400": lambda d, s: "-" if s == "ray" else (
        lambda u: f"{u['recall_vs_exact']:.3f}")(d["systems"]["local"]["serve"]["unsharded"]),
}


@pytest.mark.parametrize(("source", "first_cell"), [
    (SCALE_L2, "L-2 H-128 (nlpconnect seed's shape, RANDOM WEIGHTS, int8), 1,000,000 passages, shards of 250,000"),
    (SCALE_MINILM, "all-MiniLM-L6-v2 as DPR (REAL weights, int8), 200,000 passages, shards of 50,000")])
def test_scale_tables_are_the_result_files(source: str, first_cell: str) -> None:
    data = result(source)
    table = next(t for t in tables(raw("docs/scale.md")) if t[0][0] == first_cell)
    checked = 0
    for row in table[1:]:
        if row[0] in SCALE_ROWS:
            for column, system in ((1, "local"), (2, "ray")):
                assert row[column].split(" (")[0] == SCALE_ROWS[row[0]](data, system), (row[0], system)
            checked += 1
    unsharded = data["systems"]["local"]["serve"]["unsharded"]
    assert (f"(graph {unsharded['graph_seconds']:.0f} s, search {unsharded['search_ms']['p50']:.2f} / "
            f"{unsharded['search_ms']['p99']:.2f} ms)") in normalize(raw("docs/scale.md"))
    assert checked == len(SCALE_ROWS)


def test_scale_recall_by_ef_table_is_the_result_files() -> None:
    table = next(t for t in tables(raw("docs/scale.md")) if t[0][:2] == ["index", "ef=100"])
    sources = {"L-2 H-128 random, 1M, 4 shards": (SCALE_L2, ()), "L-2 H-128 random, 1M, one graph": (
        SCALE_L2, ("unsharded",)), "MiniLM real, 200k, 4 shards": (SCALE_MINILM, ()),
        "MiniLM real, 200k, one graph": (SCALE_MINILM, ("unsharded",))}
    assert [row[0] for row in table[1:]] == list(sources)
    for row in table[1:]:
        source, path = sources[row[0]]
        serve = result(source)["systems"]["local"]["serve"]
        for key in path:
            serve = serve[key]
        for cell, ef in zip(row[1:], ("100", "200", "400", "800", "1600"), strict=True):
            if ef == "400":
                assert cell == f"{serve['recall_vs_exact']:.3f} (default ef)", (row[0], ef)
            else:
                point = serve["recall_by_ef"][ef]
                assert cell == f"{point['recall_vs_exact']:.3f} ({point['ms_per_question']:.2f} ms)", (row[0], ef)


def test_projection_table_is_the_result_file() -> None:
    rows = result(PROJECTION)["rows"]
    table = next(t for t in tables(raw("docs/scale.md")) if t[0][:2] == ["model", "machines"])
    assert len(table) == 1 + len(rows)
    for cells, row in zip(table[1:], rows, strict=True):
        assert cells == [row["model"], str(row["machines"]), f"{row['encode_hours']:.1f}", f"{row['graph_hours']:.1f}",
                         f"{row['total_hours']:.1f}", f"{row['shard_size']:,}", str(row["shards"]),
                         f"{row['driver_memory_gib']:.1f}", f"{row['disk_gib']:.1f}"], row["model"]


@pytest.mark.parametrize(("source", "module"), [
    (f"{VECTORS}/bert-shape-200k.json", "scale_vectors"), (f"{VECTORS}/bert-shape-1m.json", "scale_vectors"),
    (f"{RSS}/bert-shape-1m.json", "scale_vectors"),
    (f"{VECTORS}/squad-minilm.json", "vectors_recall")])
def test_vectors_tables_are_the_result_files(source: str, module: str) -> None:
    """Issue #22's tables in docs/scale.md are what the benchmarks render from their result files."""
    import importlib

    render = importlib.import_module(f"benchmarks.{module}").render_table
    expected = tables(render(result(source)))[0]
    assert expected in tables(raw("docs/scale.md")), f"docs/scale.md should hold the table of {source}"


def test_vectors_projection_table_is_the_result_file() -> None:
    rows = result(f"{VECTORS}/projection-21m-serving.json")["serving"]
    table = next(t for t in tables(raw("docs/scale.md")) if t[0][:2] == ["vectors", "resident B/passage"])
    assert [row[:4] for row in table[1:]] == [
        [r["kind"], f"{r['resident_bytes_per_passage']:,}", f"{r['resident_gib']}", str(r["machines"])] for r in rows]


# ---------------------------------------------------------------------------------------------------------
# The prose figures, and proof that the check can fail


@pytest.mark.parametrize("figure", FIGURES, ids=lambda f: f"{f.page}: {f.phrase[:50]}")
def test_published_figure_matches_its_result_file(figure: Figure) -> None:
    assert figure.problem() is None, figure.problem()


def test_a_figure_that_disagrees_with_its_file_fails() -> None:
    """The check is not vacuous: the same phrase with the issue's stale figures is reported."""
    profile = FIGURES[0]
    stale = "on MiniLM QAttention 37%, DynamicQuantizeMatMul 26%, SkipLayerNormalization 18%, BiasGelu 12%"
    assert profile.problem(stale) is not None
    assert profile.problem(profile.expected()) is None
    overhead = next(f for f in FIGURES if f.phrase.startswith("cost {} ms against"))
    assert overhead.problem("cost ~1.7 ms against ~0.35 ms (per-part p50s)") is not None
    assert overhead.expected() == "cost 1.03 ms against 0.23 ms (per-part p50s)"


def test_the_issue_21_stale_figures_are_gone() -> None:
    """Issue #21's list of figures that did not match their result files: none of them is published."""
    stale = ["QAttention 37%", "~1.7 ms against ~0.35 ms", "16-20 ms even on the tiny l2-h128", "1.2-2.2x optimum",
             "costs at most 3 of 10,570", "onnx-int8-hnsw (fastdpr as deployed)"]
    for name in ("README.md", *(f"docs/{p.name}" for p in sorted((REPO_ROOT / "docs").glob("*.md")))):
        for phrase in stale:
            assert phrase not in page(name), f"{name}: {phrase!r}"


def test_every_result_file_a_figure_names_exists_and_names_its_cpu_class() -> None:
    """Every figure names its CPU class: the result files it comes from record it (the 2026-11-23 runs
    predate the class field and record the CPU's flags, which the pages name as x86-avx512-vnni)."""
    for source in sorted({f.source for f in FIGURES if f.source.endswith(".json")} - {PROJECTION}):
        data = result(source)  # the projection is computed from the scale runs, which record it
        machine = data.get("machine") or {"int8_class": data.get("cpu")}
        assert machine.get("int8_class") or machine.get("avx512_vnni"), source


# ---------------------------------------------------------------------------------------------------------
# Issue #21's query runs: fastdpr against optimum at 200k passages, the query-path A/B, the fetch variants

QUERY = "query-x86-avx512-vnni"
QUERY_HEADING = "Query latency at 200k passages (issue #21)"
#: The run column of the query tables -> its result file.
QUERY_RUNS = {
    "MiniLM, 200k, 1 thread": f"{QUERY}/minilm-200k-t1/latency.json",
    "MiniLM, 200k, 2 threads": f"{QUERY}/minilm-200k-t2/latency.json",
    "MiniLM, 256, 1 thread": f"{QUERY}/minilm-256-t1/latency.json",
    "MiniLM, 256, 2 threads": f"{QUERY}/minilm-256-t2/latency.json",
    "BERT-base, 64, 1 thread": f"{QUERY}/bert-base-64-t1/latency.json",
    "BERT-base, 64, 2 threads": f"{QUERY}/bert-base-64-t2/latency.json",
}
QUERY_AB = {"256 passages": f"{QUERY}/ab-256-t1/query-ab.json", "200k passages": f"{QUERY}/ab-200k-t1/query-ab.json"}
STORE_FETCH = f"{QUERY}/store-fetch/store-fetch.json"


def _published_query_files() -> list[str]:
    """The result files of the runs the query table publishes."""
    rows = table_under("docs/benchmarks.md", QUERY_HEADING, "run", count=2, nth=0)
    return [QUERY_RUNS[run] for run in _published_runs(rows)]


def _published_runs(rows: list[list[str]]) -> list[str]:
    runs = list(dict.fromkeys(row[0] for row in rows[1:]))
    assert runs and set(runs) <= set(QUERY_RUNS), runs
    return runs


def test_query_table_is_the_result_files() -> None:
    rows = table_under("docs/benchmarks.md", QUERY_HEADING, "run", count=2, nth=0)
    assert rows[0][:3] == ["run", "system", "query p50 ms"]
    for run in _published_runs(rows):
        data = result(QUERY_RUNS[run])
        published = [row for row in rows[1:] if row[0] == run]
        assert [row[1] for row in published] == list(data["systems"]), run
        for row in published:
            system = data["systems"][row[1]]
            b = system["breakdown_ms"]
            recall = (data.get("search_recall_at_k") or {}).get(row[1])
            cpu = format_figure(system["query_cpu_ms"]["p50"]) if "query_cpu_ms" in system else "-"
            assert row[2:] == [format_figure(system["query_ms"]["p50"]), format_figure(system["query_ms"]["p95"]), cpu,
                               *(format_figure(b[p]) for p in ("tokenize", "encode", "search", "fetch", "other")),
                               "-" if recall is None else f"{recall:.4f}"], (run, row[1])


def test_query_ratio_table_is_the_result_files() -> None:
    rows = table_under("docs/benchmarks.md", QUERY_HEADING, "run", count=2, nth=1)
    assert rows[0][:2] == ["run", "comparison"]
    for run in _published_runs(rows):
        data = result(QUERY_RUNS[run])
        published = [row for row in rows[1:] if row[0] == run]
        assert [row[1] for row in published] == [n for n in data["ratios"] if n.startswith("fastdpr-int8")], run
        load = data["load_average"]
        for row in published:
            r = data["ratios"][row[1]]
            cpu = f"{r['query_cpu_p50']:.2f}x" if "query_cpu_p50" in r else "-"
            assert row[2:] == [f"{r['query_p50']:.2f}x", f"{r['query_p95']:.2f}x", cpu,
                               f"{load['start'][0]:.1f} / {load['end'][0]:.1f}"], (run, row[1])


def test_query_ab_table_is_the_result_files() -> None:
    rows = table_under("docs/benchmarks.md", QUERY_HEADING, "index")
    assert [row[0] for row in rows[1:]] == [name for name in QUERY_AB for _ in ("base", "head")]
    for row in rows[1:]:
        data = result(QUERY_AB[row[0]])
        tree = data["trees"][row[1]]
        parts = tree["parts_p50_ms"]
        assert row[2:] == [f"{tree['query_ms']['p50']:.3f}", f"{tree['query_cpu_ms']['p50']:.3f}",
                           *(f"{parts[p]:.3f}" for p in ("tokenize", "encode", "search", "fetch", "other")),
                           f"{data['head_vs_base_p50']:.2f}x / {data['head_vs_base_cpu_p50']:.2f}x",
                           f"{data['questions_with_different_hits']} of {data['questions']}",
                           f"{data['load_average']['start'][0]:.1f}"], (row[0], row[1])


def test_store_fetch_table_is_the_result_file() -> None:
    data = result(STORE_FETCH)
    rows = table_under("docs/benchmarks.md", QUERY_HEADING, "variant")
    assert [row[0] for row in rows[1:]] == list(data["cold_ms"])
    for row in rows[1:]:
        cold, warm = data["cold_ms"][row[0]], data["warm_ms"][row[0]]
        assert row[1:] == [f"{cold['p50']:.3f}", f"{cold['p95']:.3f}", f"{warm['p50']:.3f}", f"{warm['p95']:.3f}"]


def test_every_query_result_names_its_cpu_class() -> None:
    for source in (*QUERY_RUNS.values(), *QUERY_AB.values(), STORE_FETCH):
        if (RESULTS / source).is_file():
            assert result(source)["machine"]["int8_class"]["int8_class"] == "x86-avx512-vnni", source


M1, M2 = QUERY_RUNS["MiniLM, 200k, 1 thread"], QUERY_RUNS["MiniLM, 200k, 2 threads"]
B1, B2 = QUERY_RUNS["BERT-base, 64, 1 thread"], QUERY_RUNS["BERT-base, 64, 2 threads"]
EXACT, OWN_ANN = "fastdpr-int8 vs optimum-ort-int8", "fastdpr-int8 vs optimum-ort-int8-hnsw"
MEMORY_ANN = "fastdpr-int8-memory vs optimum-ort-int8-hnsw"


def _part(system: str, part: str) -> str:
    return f"systems/{system}/breakdown_ms/{part}"


def _query_floor(peer: str) -> tuple[Callable[[Any], str], ...]:
    """fastdpr-int8's model call and search (p50s), their sum, the peer's query p50 and their ratio: the most a
    query could gain over the peer with everything else free."""
    def parts(d: Any) -> tuple[float, float, float]:
        b = d["systems"]["fastdpr-int8"]["breakdown_ms"]
        return b["encode"], b["search"], d["systems"][peer]["query_ms"]["p50"]

    return (lambda d: format_figure(parts(d)[0]), lambda d: format_figure(parts(d)[1]),
            lambda d: f"{parts(d)[0] + parts(d)[1]:.2f}", lambda d: format_figure(parts(d)[2]),
            lambda d: f"{parts(d)[2] / (parts(d)[0] + parts(d)[1]):.2f}")


QUERY_FIGURES: tuple[Figure, ...] = (
    Figure("docs/benchmarks.md", "fastdpr-int8 vs optimum-ort-int8 {}x query p50 with 1 thread ({}x in CPU time)",
           M1, (f"ratios/{EXACT}/query_p50", f"ratios/{EXACT}/query_cpu_p50")),
    Figure("docs/benchmarks.md", "{}x with 2 threads ({}x). The peer's exact search", M2,
           (f"ratios/{EXACT}/query_p50", f"ratios/{EXACT}/query_cpu_p50")),
    Figure("docs/benchmarks.md", "recall@100 {} at the default ef=400", M1, ("search_recall_at_k/fastdpr-int8",),
           "{:.4f}"),
    Figure("docs/benchmarks.md", "same settings, recall {}): the peer is", M1,
           ("search_recall_at_k/optimum-ort-int8-hnsw",), "{:.4f}"),
    Figure("docs/benchmarks.md", "fastdpr-int8 vs optimum-ort-int8-hnsw {}x with 1 thread ({}x CPU)", M1,
           (f"ratios/{OWN_ANN}/query_p50", f"ratios/{OWN_ANN}/query_cpu_p50")),
    Figure("docs/benchmarks.md", "and {}x with 2 threads ({}x CPU); with `passages_in_memory=True`", M2,
           (f"ratios/{OWN_ANN}/query_p50", f"ratios/{OWN_ANN}/query_cpu_p50")),
    Figure("docs/benchmarks.md", "`passages_in_memory=True` {}x and", M1, (f"ratios/{MEMORY_ANN}/query_p50",)),
    Figure("docs/benchmarks.md", "and {}x ({}x and", M2, (f"ratios/{MEMORY_ANN}/query_p50",
                                                          lambda d: result(M1)["ratios"][MEMORY_ANN]["query_cpu_p50"])),
    Figure("docs/benchmarks.md", "and {}x CPU). Why, per part", M2, (f"ratios/{MEMORY_ANN}/query_cpu_p50",)),
    Figure("docs/benchmarks.md", "the same work in both ({} vs {} ms p50", M1,
           (_part("fastdpr-int8", "search"), _part("optimum-ort-int8-hnsw", "search"))),
    Figure("docs/benchmarks.md", "fastdpr's tokenizer ({} vs {} ms) and model call ({} vs {} ms)", M1,
           (_part("fastdpr-int8", "tokenize"), _part("optimum-ort-int8-hnsw", "tokenize"),
            _part("fastdpr-int8", "encode"), _part("optimum-ort-int8-hnsw", "encode")), format_figure),
    Figure("docs/benchmarks.md", "SQLite fetch of 100 passages ({} vs {} ms for a list lookup)", M1,
           (_part("fastdpr-int8", "fetch"), _part("optimum-ort-int8-hnsw", "fetch")), format_figure),
    Figure("docs/benchmarks.md", "result objects and glue ({} vs {} ms)", M1,
           (_part("fastdpr-int8", "other"), _part("optimum-ort-int8-hnsw", "other")), format_figure),
    Figure("docs/benchmarks.md", "the gap a list closes ({} ms in memory)", M1,
           (_part("fastdpr-int8-memory", "fetch"),), format_figure),
    Figure("README.md", "load average {} / {} at start / end on 2 cores; 200k SYNTHETIC vectors) | {}x optimum with "
           "exact numpy search; {}x optimum with its own hnswlib graph (same settings, recall@100 {} against its {} on "
           "these vectors; {}x with `passages_in_memory=True`)", M1,
           (lambda d: f"{d['load_average']['start'][0]:.1f}", lambda d: f"{d['load_average']['end'][0]:.1f}",
            lambda d: f"{d['ratios'][EXACT]['query_p50']:.2f}", lambda d: f"{d['ratios'][OWN_ANN]['query_p50']:.2f}",
            lambda d: f"{d['search_recall_at_k']['fastdpr-int8']:.4f}",
            lambda d: f"{d['search_recall_at_k']['optimum-ort-int8-hnsw']:.4f}",
            lambda d: f"{d['ratios'][MEMORY_ANN]['query_p50']:.2f}"), "{}"),
    Figure("docs/benchmarks.md", "At 200k, 1 thread, that is {} + {} = {} ms against the hnswlib peer's {} ms query: "
           "at most {}x", M1, _query_floor("optimum-ort-int8-hnsw"), "{}"),
    Figure("docs/benchmarks.md", "At 256 passages, {} + {} = {} ms against optimum's {} ms: at most {}x",
           QUERY_RUNS["MiniLM, 256, 1 thread"], _query_floor("optimum-ort-int8"), "{}"),
    Figure("docs/benchmarks.md", "after vs before {}x query p50 ({}x in CPU time) with the same hits for every "
           "question; the fetch went from {} to {} ms and tokenization from {} to {} ms", QUERY_AB["200k passages"],
           ("head_vs_base_p50", "head_vs_base_cpu_p50", "trees/base/parts_p50_ms/fetch",
            "trees/head/parts_p50_ms/fetch", "trees/base/parts_p50_ms/tokenize", "trees/head/parts_p50_ms/tokenize"),
           format_figure),
    Figure("docs/benchmarks.md", "one graph at the same settings reached {}, and 4 shards of 50k {}: x86-amx",
           SCALE_MINILM, ("systems/local/serve/unsharded/recall_vs_exact", "systems/local/serve/recall_vs_exact"),
           "{:.3f}"),
    Figure("docs/benchmarks.md", "On the 256-passage index: {}x ({}x in CPU time), the same hits.",
           QUERY_AB["256 passages"], ("head_vs_base_p50", "head_vs_base_cpu_p50")),
    Figure("docs/benchmarks.md", "With 2 threads {}x ({}x CPU); in memory {}x ({}x CPU).",
           QUERY_RUNS["MiniLM, 256, 2 threads"],
           (f"ratios/{EXACT}/query_p50", f"ratios/{EXACT}/query_cpu_p50", "ratios/fastdpr-int8-memory vs "
            "optimum-ort-int8/query_p50", "ratios/fastdpr-int8-memory vs optimum-ort-int8/query_cpu_p50")),
    Figure("docs/benchmarks.md", "2 cores with nothing else running: 1-minute load average {} to {} on 2 cores", M1,
           (lambda _d: min(min(result(f)["load_average"]["start"][0], result(f)["load_average"]["end"][0])
                           for f in _published_query_files()),
            lambda _d: max(max(result(f)["load_average"]["start"][0], result(f)["load_average"]["end"][0])
                           for f in _published_query_files())), "{:.0f}"),
    Figure("docs/benchmarks.md", "by byte offsets fetched 100 passages of a 200k store in {} ms p50 after idle "
           "against {} ms for the shipped SQLite lookup (and {} ms for the lookup before issue #21", STORE_FETCH,
           ("cold_ms/mmap-side-file/p50", "cold_ms/store-texts/p50", "cold_ms/sqlite-in-list/p50"), "{:.3f}"),
    Figure("docs/benchmarks.md", "at {}x of the store's size again on disk", STORE_FETCH,
           (lambda d: d["bytes"]["passages.text (side file)"] / d["bytes"]["passages.sqlite"],)),
    Figure("docs/benchmarks.md", "worth about {} ms a query here", STORE_FETCH,
           (lambda d: d["cold_ms"]["store-texts"]["p50"] - d["cold_ms"]["mmap-side-file"]["p50"],)),
    Figure("docs/benchmarks.md", "(Before issue #21 the same comparison was {}x on x86-amx", LATENCY,
           ("ratios/fastdpr-int8 vs optimum-ort-int8/query_p50",)),
    Figure("docs/benchmarks.md", "fastdpr-int8 vs optimum-ort-int8 {}x with 1 thread ({}x CPU); with passages in "
           "memory {}x ({}x CPU)", QUERY_RUNS["MiniLM, 256, 1 thread"],
           (f"ratios/{EXACT}/query_p50", f"ratios/{EXACT}/query_cpu_p50", "ratios/fastdpr-int8-memory vs "
            "optimum-ort-int8/query_p50", "ratios/fastdpr-int8-memory vs optimum-ort-int8/query_cpu_p50")),
    Figure("docs/benchmarks.md", "hardly shows: {}x with 1 thread ({}x CPU)", B1,
           (f"ratios/{EXACT}/query_p50", f"ratios/{EXACT}/query_cpu_p50")),
    Figure("docs/benchmarks.md", "and {}x with 2 threads ({}x CPU: in this run", B2,
           (f"ratios/{EXACT}/query_p50", f"ratios/{EXACT}/query_cpu_p50")),
)


@pytest.mark.parametrize("figure", QUERY_FIGURES, ids=lambda f: f"{f.page}: {f.phrase[:50]}")
def test_query_figure_matches_its_result_file(figure: Figure) -> None:
    assert figure.problem() is None, figure.problem()


# ---------------------------------------------------------------------------------------------------------
# Issue #23: what hybrid search adds to a query at 200k passages (docs/hybrid.md)

HYBRID_LATENCY = "hybrid-latency-x86-avx512-vnni/hybrid-latency.json"
HYBRID_ARTICLES = "hybrid-latency-x86-avx512-vnni/hybrid-latency-articles.json"
HYBRID_LOAD10 = "hybrid-latency-x86-avx512-vnni/hybrid-latency-load10.json"
HYBRID_OVERLAP = "hybrid-latency-x86-avx512-vnni/overlap-tried/hybrid-latency.json"
HYBRID_AVX2 = "hybrid-latency-x86-avx2/hybrid-latency.json"
HYBRID_HEADING = "Query latency at 200k passages"
SHIPPED_BM25 = "BM25Index.search (shipped)"


def _rest(data: Any) -> float:
    """Hybrid's CPU p50 beyond dense and the BM25 search's."""
    cpu = data["cpu_ms"]
    return float(cpu["hybrid"]["p50"] - cpu["dense"]["p50"] - cpu[SHIPPED_BM25]["p50"])


HYBRID_FIGURES: tuple[Figure, ...] = (
    Figure("docs/hybrid.md", "In the `sentences` corpus {}% of the 200k passages score above zero for the median "
           "question (p95 {}%)", HYBRID_LATENCY, ("density_percent/index/p50", "density_percent/index/p95"), "{:.1f}"),
    Figure("docs/hybrid.md", "in the `articles` corpus {}% (p95 {}%)", HYBRID_ARTICLES,
           ("density_percent/index/p50", "density_percent/index/p95"), "{:.1f}"),
    Figure("docs/hybrid.md", "in SQuAD dev's 2,067 real Wikipedia paragraphs, by the same BM25, {}% (p95 {}%)",
           HYBRID_LATENCY, ("density_percent/squad_dev_paragraphs/p50", "density_percent/squad_dev_paragraphs/p95"),
           "{:.1f}"),
    Figure("docs/hybrid.md", "(int8 class x86-avx512-vnni), 2 cores at load average {} (other jobs running)",
           HYBRID_LATENCY, ("load_average/start/0",)),
    Figure("docs/hybrid.md", "Hybrid minus dense: {} ms of wall-clock p50 ({} ms as the median of the per-question "
           "differences), {} ms of CPU time at the p50. The goal (at most +1 ms) is met", HYBRID_LATENCY,
           ("hybrid_minus_dense/p50_difference_ms", "hybrid_minus_dense/median_paired_difference_ms",
            "hybrid_minus_dense/cpu_p50_difference_ms"), signed),
    Figure("docs/hybrid.md", "in the same run: {} ms of wall-clock p50 and {} ms of CPU", HYBRID_LATENCY,
           ("hybrid_before_minus_dense/p50_difference_ms", "hybrid_before_minus_dense/cpu_p50_difference_ms"), signed),
    Figure("docs/hybrid.md", "before / now: hybrid {}x ({}x CPU), the BM25 search alone {}x ({}x CPU)",
           HYBRID_LATENCY, ("speedup/hybrid_wall", "speedup/hybrid_cpu", "speedup/lexical_search_wall",
                            "speedup/lexical_search_cpu")),
    Figure("docs/hybrid.md", "`--corpus articles` (load average {}):", HYBRID_ARTICLES, ("load_average/start/0",)),
    Figure("docs/hybrid.md", "{} ms wall-clock, {} ms CPU (before: {} and {};", HYBRID_ARTICLES,
           ("hybrid_minus_dense/p50_difference_ms", "hybrid_minus_dense/cpu_p50_difference_ms",
            "hybrid_before_minus_dense/p50_difference_ms", "hybrid_before_minus_dense/cpu_p50_difference_ms"), signed),
    Figure("docs/hybrid.md", "(before: +0.64 and +0.63; hybrid {}x)", HYBRID_ARTICLES, ("speedup/hybrid_wall",)),
    Figure("docs/hybrid.md", "2 minutes earlier at load average {}", HYBRID_LOAD10, ("load_average/start/0",)),
    Figure("docs/hybrid.md", "gave {} ms wall-clock and {} ms CPU (before: {} and {}): on a busier", HYBRID_LOAD10,
           ("hybrid_minus_dense/p50_difference_ms", "hybrid_minus_dense/cpu_p50_difference_ms",
            "hybrid_before_minus_dense/p50_difference_ms", "hybrid_before_minus_dense/cpu_p50_difference_ms"), signed),
    Figure("docs/hybrid.md", "plus the BM25 search ({} ms CPU p50) plus about {} ms more", HYBRID_LATENCY,
           (f"cpu_ms/{SHIPPED_BM25}/p50", _rest)),
    Figure("docs/hybrid.md", "its wall-clock p50 was {} ms against {} ms on the calling thread (load average {})",
           HYBRID_OVERLAP, ("ms/hybrid/p50", "ms/hybrid, BM25 on the calling thread/p50", "load_average/start/0")),
    Figure("docs/hybrid.md", "at load average {} (2026-12-04 10:01 UTC", HYBRID_AVX2, ("load_average/start/0",),
           "{:.1f}"),
    Figure("docs/hybrid.md", "hybrid added {} ms of wall-clock p50 and {} ms of CPU", HYBRID_AVX2,
           ("hybrid_minus_dense/p50_difference_ms", "hybrid_minus_dense/cpu_p50_difference_ms"), signed),
    Figure("docs/hybrid.md", "(dense {} ms, hybrid {} ms p50)", HYBRID_AVX2, ("ms/dense/p50", "ms/hybrid/p50")),
    Figure("docs/hybrid.md", "CPU p95 {} ms with `n_threads=1`, {} ms with `n_threads=0`", HYBRID_AVX2,
           ("cpu_ms/bm25s retrieve, n_threads=1/p95", "cpu_ms/bm25s retrieve, n_threads=0/p95"), "{:.1f}"),
)


@pytest.mark.parametrize("figure", HYBRID_FIGURES, ids=lambda f: f"{f.page}: {f.phrase[:50]}")
def test_hybrid_latency_figure_matches_its_result_file(figure: Figure) -> None:
    assert figure.problem() is None, figure.problem()


def test_hybrid_latency_table_is_the_result_file() -> None:
    data = result(HYBRID_LATENCY)
    rows = table_under("docs/hybrid.md", HYBRID_HEADING, "Variant")
    assert rows[0] == ["Variant", "p50 ms", "p95 ms", "p99 ms", "CPU p50 ms", "CPU p95 ms"]
    assert [row[0] for row in rows[1:]] == list(data["ms"])
    for row in rows[1:]:
        wall, cpu = data["ms"][row[0]], data["cpu_ms"][row[0]]
        assert row[1:] == [f"{wall['p50']:.2f}", f"{wall['p95']:.2f}", f"{wall['p99']:.2f}", f"{cpu['p50']:.2f}",
                           f"{cpu['p95']:.2f}"], row[0]


def test_the_hybrid_latency_results_name_their_cpu_class_and_are_identical() -> None:
    for source in (HYBRID_LATENCY, HYBRID_ARTICLES, HYBRID_LOAD10, HYBRID_OVERLAP):
        data = result(source)
        assert data["machine"]["int8_class"]["int8_class"] == "x86-avx512-vnni", source
        assert data["identical"] is True and data["index"]["passages"] == 200_000, source
    assert result(HYBRID_AVX2)["machine"]["int8_class"]["int8_class"] == "x86-avx2"


# Issue #21, point 3: compute efficiency (python -m benchmarks efficiency)

EFFICIENCY = "efficiency-x86-avx512-vnni/efficiency.json"
CONCURRENT_CALLS = "concurrent-calls-x86-avx512-vnni/concurrent-calls.json"
EFFICIENCY_HEADING = "Compute efficiency: int8 GOP/s against the CPU's peak (issue #21)"
#: The profile's kernels that quantize activations (the default recipe's per-row scales, and QAttention's input).
QUANTIZING_KERNELS = ("ReduceMax", "ReduceMin", "Neg", "Max", "Mul", "Reshape", "Shape", "Expand", "QuantizeLinear",
                      "DynamicQuantizeLinear")
#: The same before the per-row quantization became one QuantizeLinear (the previous default's profile).
PREVIOUS_QUANTIZING_KERNELS = ("Abs", "ReduceMax", "Max", "Mul", "Div", "Round", "Add", "Cast",
                               "DynamicQuantizeLinear")


def session_share(*op_types: str, threads: int = 1) -> Callable[[Any], float]:
    """Percent of the profiled ``session.run`` time spent in kernels of these op types (as efficiency.md)."""
    def share(data: Any) -> float:
        profile = next(p for p in data["profiles"] if p["threads"] == threads)
        kernel_ms = {op["op_type"]: op["ms"] for op in profile["op_types"]}
        return sum(kernel_ms[op] for op in op_types) / profile["profiled_wall_ms"] * 100
    return share


def kernel_rate(op_type: str, key: str, threads: int = 1) -> Callable[[Any], float]:
    def rate(data: Any) -> float:
        profile = next(p for p in data["profiles"] if p["threads"] == threads)
        return float(next(r[key] for r in profile["kernel_rates"] if r["op_type"] == op_type))
    return rate


def efficiency_row(threads: int, key: str) -> Callable[[Any], float]:
    return lambda data: float(next(r[key] for r in data["efficiency"] if r["threads"] == threads))


EFFICIENCY_FIGURES: tuple[Figure, ...] = (
    Figure("docs/benchmarks.md", "load average {} at the start of the run, {} at its end", EFFICIENCY,
           ("load_average/start/0", "load_average/end/0")),
    Figure("docs/benchmarks.md", "259 SQuAD dev passages of {} tokens on average", EFFICIENCY,
           ("workload/passage_tokens/mean",), "{:.1f}"),
    Figure("docs/benchmarks.md", "a passage costs {} GOP of int8 GEMM (weights), {} GOP of fp32 GEMM (the nodes "
           "the default keeps fp32) and {} GOP of fp32 attention",
           EFFICIENCY, ("work/context/int8/mean_ops_per_input/int8_gemm",
                        "work/context/int8/mean_ops_per_input/fp32_gemm",
                        "work/context/int8/mean_ops_per_input/fp32_attention"), lambda v: f"{v / 1e9:.3f}"),
    Figure("docs/benchmarks.md", "{} int8 MACs per cycle per core, x {} GHz", EFFICIENCY,
           ("peak/macs_per_cycle_per_core", "peak/clock_ghz"), lambda v: f"{v:.0f}" if v > 100 else f"{v:.3f}"),
    Figure("docs/benchmarks.md", "= {} int8 GOP/s per core", EFFICIENCY, (efficiency_row(1, "peak_int8_gops"),),
           "{:.1f}"),
    Figure("docs/benchmarks.md", "QAttention {}%, MatMulIntegerToFloat (the int8 MatMuls) {}%, the kept fp32 "
           "MatMul {}% and Attention {}%, BiasGelu {}%, LayerNormalization {}%", EFFICIENCY,
           tuple(session_share(op) for op in ("QAttention", "MatMulIntegerToFloat", "MatMul", "Attention",
                                              "BiasGelu", "LayerNormalization")), "{:.1f}"),
    Figure("docs/benchmarks.md", "DynamicQuantizeLinear for QAttention) {}%, ONNX Runtime's executor between kernels "
           "{}%", EFFICIENCY, (session_share(*QUANTIZING_KERNELS),
                               lambda d: d["profiles"][0]["ort_overhead_ms"]["between_kernels"]
                               / d["profiles"][0]["profiled_wall_ms"] * 100), "{:.1f}"),
    Figure("docs/benchmarks.md", "(tokenization and Python glue) {}% of the deployed call", EFFICIENCY,
           ("profiles/0/outside_ort/share",), lambda v: f"{v * 100:.1f}"),
    Figure("docs/benchmarks.md", "kernels on their own ran at {} GOP/s, {}% of one core's peak", EFFICIENCY,
           (kernel_rate("MatMulInteger", "gops"),
            lambda d: kernel_rate("MatMulInteger", "share_of_int8_peak")(d) * 100), "{:.1f}"),
    Figure("docs/benchmarks.md", "the int8 kernels hold {}% of the time and the four fp32 nodes {}%", EFFICIENCY,
           (session_share("QAttention", "MatMulIntegerToFloat"), session_share("MatMul", "Attention")), "{:.1f}"),
    Figure("docs/benchmarks.md", "Two threads encode {}x the passages of one ({} vs {} passages/s)", EFFICIENCY,
           (lambda d: round(d["efficiency"][1]["passages_per_s"] / d["efficiency"][0]["passages_per_s"], 2),
            efficiency_row(2, "passages_per_s"), efficiency_row(1, "passages_per_s"))),
    Figure("docs/benchmarks.md", "one call at a time on a 2-thread session, as before, was {}x slower",
           CONCURRENT_CALLS, ("results/context int8/speedup",), "{:.2f}"),
)

CONCURRENT_HEADING = "Many inputs on N threads: concurrent calls"


def test_concurrent_calls_table_is_the_result_file() -> None:
    data = result(CONCURRENT_CALLS)
    assert data["machine"]["int8_class"]["int8_class"] == "x86-avx512-vnni"
    rows = table_under("docs/benchmarks.md", CONCURRENT_HEADING, "Side, precision")
    assert [row[0] for row in rows[1:]] == list(data["results"])
    before, now = data["modes"]
    for row in rows[1:]:
        measured = data["results"][row[0]]
        assert row[1:] == [str(measured["inputs"]), f"{measured['per_s'][before]:.2f}", f"{measured['per_s'][now]:.2f}",
                           f"{measured['speedup']:.2f}x", "yes"], row[0]
        assert measured["identical"] is True


@pytest.mark.parametrize("figure", EFFICIENCY_FIGURES, ids=lambda f: f.phrase[:60])
def test_efficiency_figure_matches_its_result_file(figure: Figure) -> None:
    assert figure.problem() is None, figure.problem()


def test_efficiency_table_is_the_result_file() -> None:
    data = result(EFFICIENCY)
    assert data["cpu_class"] == "x86-avx512-vnni" and data["machine"]["int8_class"]["int8_class"] == "x86-avx512-vnni"
    rows = table_under("docs/benchmarks.md", EFFICIENCY_HEADING, "threads")
    assert rows[0] == ["threads", "passages/s", "int8 GEMM GOP/s", "% of int8 peak"]
    assert [row[0] for row in rows[1:]] == [str(r["threads"]) for r in data["efficiency"]]
    for row, measured in zip(rows[1:], data["efficiency"], strict=True):
        assert row[1:] == [f"{measured['passages_per_s']:.2f}", f"{measured['gops']['int8_gemm']:.1f}",
                           f"{measured['int8_share_of_peak'] * 100:.1f}%"], row[0]


# ---------------------------------------------------------------------------------------------------------
# Issue #19 / #21: LayerNormalization instead of SkipLayerNormalization, one QuantizeLinear per activation,
# and the default recipe that keeps 4 passage nodes fp32 (docs/benchmarks.md, README)

LN = "layer-norm-x86-avx512-vnni"
LN_PARITY = f"{LN}/parity.json"
LN_SPEED = f"{LN}/issue19-speed.json"
LN_KERNELS = f"{LN}/layer-norm.json"
LN_QUESTIONS = f"{LN}/question-p50.json"
QKEEP2 = "onnx-int8[dynamic-per-channel-smooth-auto-7bit-rows-qkeep2]-hnsw"
PKEEP4 = "onnx-int8[dynamic-per-channel-smooth-auto-7bit-rows-qkeep2-pkeep4]-hnsw"


def kernel(model: str, what: str, key: str) -> Callable[[Any], float]:
    def value(data: Any) -> float:
        row = next(r for r in data["shapes"] if r["model"] == model and r["what"] == what)
        return float(lookup(row, key))
    return value


def speed(threads: int, key: str) -> str:
    return f"runs/{threads}/{key}"


def vs_old_fp32(threads: int, key: str) -> Callable[[Any], float]:
    def ratio(data: Any) -> float:
        rates = data["runs"][str(threads)]["passages_per_s"]
        return float(rates[key] / rates["old-fp32-fused"])
    return ratio


LN_PREVIOUS_PROFILE = "efficiency-x86-avx512-vnni/previous-default/efficiency.json"

LN_FIGURES: tuple[Figure, ...] = (
    Figure("docs/benchmarks.md", "put ONNX Runtime's fused `SkipLayerNormalization` at {}% of MiniLM's int8 passage "
           "time and the per-row activation quantization at {}%", LN_PREVIOUS_PROFILE,
           (session_share("SkipLayerNormalization"), session_share(*PREVIOUS_QUANTIZING_KERNELS)), "{:.1f}"),
    Figure("docs/benchmarks.md", "one SkipLayerNormalization took {} ms and the three standard ops {} ms ({}x)",
           LN_KERNELS, (kernel("minilm", "normalization", "ms_per_call/SkipLayerNormalization"),
                        kernel("minilm", "normalization", "ms_per_call/Add + Add + LayerNormalization"),
                        kernel("minilm", "normalization", "speedup")),
           lambda v: f"{v:.4f}" if v < 1 else f"{v:.2f}"),
    Figure("docs/benchmarks.md", "bitwise the same uint8 activations, {}x and {}x faster", LN_KERNELS,
           (kernel("minilm", "quantization, hidden wide", "speedup"),
            kernel("minilm", "quantization, 4 x hidden wide", "speedup"))),
    Figure("docs/benchmarks.md", "load average {} at the start and {} at the end of the speed run", LN_SPEED,
           ("load_start/0", "load_end/0"), "{:.2f}"),
    *(Figure("docs/benchmarks.md", f"| {label} | {{}} | {{}} | {{}}x / {{}}x |", LN_SPEED,
             (speed(1, f"passages_per_s/{key}"), speed(2, f"passages_per_s/{key}"),
              vs_old_fp32(1, key), vs_old_fp32(2, key)))
      for label, key in (("fp32, previous graphs (fused SkipLayerNormalization)", "old-fp32-fused"),
                         ("fp32 now", "new-fp32"),
                         ("int8, the previous default (`-qkeep2`, previous graphs)", "old-int8"),
                         ("int8 `-qkeep2`, new graphs", "new-int8"),
                         ("**int8 `-qkeep2-pkeep4`, new graphs: the default now**", "pkeep4-int8"))),
    Figure("docs/benchmarks.md", "int8 + HNSW `-qkeep2` on the new graphs: {} / {} / {} / {} / {}", LN_PARITY,
           tuple(f"delta_vs_pytorch/{QKEEP2}/{k}" for k in KS), points),
    Figure("docs/benchmarks.md", "`-qkeep2-pkeep4`: {} / {} / {} / {} / {}", LN_PARITY,
           tuple(f"delta_vs_pytorch/{PKEEP4}/{k}" for k in KS), points),
    Figure("docs/benchmarks.md", "its passages ran at {}x / {}x today's fp32 and {}x / {}x the previous default's",
           LN_SPEED,
           (speed(1, "ratios/pkeep4-int8 vs new-fp32"), speed(2, "ratios/pkeep4-int8 vs new-fp32"),
            speed(1, "ratios/pkeep4-int8 vs old-int8"), speed(2, "ratios/pkeep4-int8 vs old-int8"))),
    Figure("docs/benchmarks.md", "Question p50 {} ms against the previous default's {} ms (fused fp32: {} ms)",
           LN_QUESTIONS, ("p50_ms/new-int8", "p50_ms/old-int8", "p50_ms/old-fp32-fused"), "{:.3f}"),
    Figure("README.md", "int8 + HNSW {} / {} / {} / {} / {} at Top-1/5/20/50/100 (issue #19's 0.25 met at every k)",
           LN_PARITY, tuple(f"delta_vs_pytorch/{PKEEP4}/{k}" for k in KS), points),
    Figure("README.md", "passages {}x fused fp32 of the previous graphs at 1 thread, {}x at 2", LN_SPEED,
           (speed(1, "ratios/pkeep4-int8 vs old-fp32-fused"), speed(2, "ratios/pkeep4-int8 vs old-fp32-fused"))),
    Figure("docs/benchmarks.md", "passages run at {}x / {}x the fused fp32 of the previous graphs", LN_SPEED,
           (speed(1, "ratios/pkeep4-int8 vs old-fp32-fused"), speed(2, "ratios/pkeep4-int8 vs old-fp32-fused"))),
)


@pytest.mark.parametrize("figure", LN_FIGURES, ids=lambda f: f"{f.page}: {f.phrase[:50]}")
def test_layer_norm_figures_are_the_result_files(figure: Figure) -> None:
    assert figure.problem() is None, figure.problem()


LATENCY_DEFAULT = "latency-minilm-default-x86-avx512-vnni"


def latency_pair(key: str) -> tuple[Callable[[Any], float], ...]:
    return tuple((lambda d, t=t: lookup(result(f"{LATENCY_DEFAULT}/t{t}/latency.json"), key)) for t in (1, 2))


OPENVINO_DEFAULT_FIGURES: tuple[Figure, ...] = (
    Figure("docs/benchmarks.md", "passages/s fastdpr-int8 vs openvino-int8 {}x at 1 thread ({} vs {}) and {}x at 2 "
           "threads ({} vs", f"{LATENCY_DEFAULT}/t1/latency.json",
           ("ratios/fastdpr-int8 vs openvino-int8/passages_per_s", "systems/fastdpr-int8/passages_per_s",
            "systems/openvino-int8/passages_per_s",
            latency_pair("ratios/fastdpr-int8 vs openvino-int8/passages_per_s")[1],
            latency_pair("systems/fastdpr-int8/passages_per_s")[1]), lambda v: f"{v:g}"),
    Figure("docs/benchmarks.md", "{}): **issue #21's passage goal (1.0x) is not met**; query p50 {}x and {}x "
           "faster than OpenVINO", f"{LATENCY_DEFAULT}/t2/latency.json",
           ("systems/openvino-int8/passages_per_s", *latency_pair("ratios/fastdpr-int8 vs openvino-int8/query_p50")),
           lambda v: f"{v:g}"),
    Figure("docs/benchmarks.md", "passages/s {}x / {}x and query p50 {}x / {}x at 256 passages",
           f"{LATENCY_DEFAULT}/t1/latency.json",
           (*latency_pair("ratios/fastdpr-int8 vs optimum-ort-int8/passages_per_s"),
            *latency_pair("ratios/fastdpr-int8 vs optimum-ort-int8/query_p50")), "{:.2f}"),
)


@pytest.mark.parametrize("figure", OPENVINO_DEFAULT_FIGURES, ids=lambda f: f.phrase[:50])
def test_openvino_default_figures_are_the_result_files(figure: Figure) -> None:
    assert figure.problem() is None, figure.problem()


# ---------------------------------------------------------------------------------------------------
# OpenVINO passages (issue #21): docs/benchmarks.md "OpenVINO passages: a second runtime, chosen per CPU"

PARITY_OPENVINO_VNNI = "parity-openvino-x86-avx512-vnni/parity.json"
OPENVINO_VARIANTS = "parity-openvino-x86-avx512-vnni/variants.json"
LATENCY_OPENVINO = "latency-minilm-openvino-x86-avx512-vnni"
LATENCY_BERT_OPENVINO = "latency-bert-base-openvino-x86-avx512-vnni"
KS_POINTS = ("1", "5", "20", "50", "100")


def _deltas(system: str) -> tuple[str, ...]:
    return tuple(f"delta_vs_pytorch/{system}/{k}" for k in KS_POINTS)


def _variant(name: str) -> tuple[str, ...]:
    return (*(f"variants/{name}/points_vs_pytorch/{k}" for k in KS_POINTS), f"variants/{name}/flipped_questions/5")


def latency_openvino(key: str) -> tuple[Callable[[Any], float], ...]:
    return tuple((lambda d, t=t: lookup(result(f"{LATENCY_OPENVINO}/t{t}/latency.json"), key)) for t in (1, 2))


def _signed_or_count(value: float) -> str:
    return f"{value:+.2f}" if isinstance(value, float) else f"{value}"


OPENVINO_PASSAGE_FIGURES: tuple[Figure, ...] = (
    Figure("docs/benchmarks.md", "OpenVINO passages + HNSW {} / {} / {} / {} / {} (issue #19's 0.25 met at every k",
           PARITY_OPENVINO_VNNI, _deltas("onnx-int8+openvino-passages-hnsw"), points),
    Figure("docs/benchmarks.md", "ONNX Runtime passages in the same run: {} / {} / {} / {} / {});",
           PARITY_OPENVINO_VNNI, _deltas("onnx-int8-hnsw"), points),
    Figure("docs/benchmarks.md", "its own int8 questions) {} / {} / {} / {} / {} with exact search",
           PARITY_OPENVINO_VNNI, _deltas("openvino-int8-exact"), points),
    Figure("docs/benchmarks.md", "and {} / {} / {} / {} / {} through its own hnswlib graph at fastdpr's settings",
           PARITY_OPENVINO_VNNI, _deltas("openvino-int8-hnsw"), points),
    Figure("docs/benchmarks.md", "every MatMul int8 {} / {} / {} / {} / {} ({} flipped)", OPENVINO_VARIANTS,
           _variant("A-none"), _signed_or_count),
    Figure("docs/benchmarks.md", "the recipe's kept nodes fp32 {} / {} / {} / {} / {} ({})", OPENVINO_VARIANTS,
           _variant("B-kept"), _signed_or_count),
    Figure("docs/benchmarks.md", "those and attention's products fp32 {} / {} / {} / {} / {} ({}, the fewest",
           OPENVINO_VARIANTS, _variant("C-kept+scores"), _signed_or_count),
    Figure("docs/benchmarks.md", "attention's products alone {} / {} / {} / {} / {} ({})", OPENVINO_VARIANTS,
           _variant("E-scores"), _signed_or_count),
    Figure("docs/benchmarks.md", "SmoothQuant alpha 0.5 {} / {} / {} / {} / {} ({})", OPENVINO_VARIANTS,
           _variant("F-kept-sq0.5"), _signed_or_count),
    Figure("docs/benchmarks.md", "That choice cost speed: {} / {} passages/s at 1 / 2 threads against {} / {} with "
           "every MatMul int8", OPENVINO_VARIANTS,
           ("speed_interleaved/threads_1/C-kept+scores", "speed_interleaved/threads_2/C-kept+scores",
            "speed_interleaved/threads_1/A-none", "speed_interleaved/threads_2/A-none"), "{:.1f}"),
    Figure("docs/benchmarks.md", "{} / {} passages/s at 1 / 2 threads against {} / {} with 8-token and {} / {} with "
           "32-token buckets", OPENVINO_VARIANTS,
           tuple(f"bucket_sizes/threads_{t}/bucket{b}-batch8" for b in (16, 8, 32) for t in (1, 2)), "{:.1f}"),
    Figure("docs/benchmarks.md", "`--passage-backend onnxruntime` {}x passages/s at 1 thread and {}x passages/s at 2 "
           "threads; against the OpenVINO peer {}x at 1 thread ({} vs {})", f"{LATENCY_OPENVINO}/t1/latency.json",
           (*latency_openvino("ratios/fastdpr-int8 vs fastdpr-int8-onnxruntime-passages/passages_per_s"),
            "ratios/fastdpr-int8 vs openvino-int8/passages_per_s", "systems/fastdpr-int8/passages_per_s",
            "systems/openvino-int8/passages_per_s"), lambda v: f"{v:.2f}" if v < 10 else f"{v:g}"),
    Figure("docs/benchmarks.md", "the peer's own graph runs {} at 1 thread and {}\n  at 2 (`openvino-int8-bucketed`: "
           "fastdpr-int8 {}x / {}x of it;", f"{LATENCY_OPENVINO}/t1/latency.json",
           (*latency_openvino("systems/openvino-int8-bucketed/passages_per_s"),
            *latency_openvino("ratios/fastdpr-int8 vs openvino-int8-bucketed/passages_per_s")),
           lambda v: f"{v:.2f}" if v < 10 else f"{v:g}"),
    Figure("docs/benchmarks.md", "Against optimum's ORT int8 {}x / {}x passages/s. Query\n  p50 {}x / {}x faster than "
           "the peer and {}x / {}x optimum's", f"{LATENCY_OPENVINO}/t1/latency.json",
           (*latency_openvino("ratios/fastdpr-int8 vs optimum-ort-int8/passages_per_s"),
            *latency_openvino("ratios/fastdpr-int8 vs openvino-int8/query_p50"),
            *latency_openvino("ratios/fastdpr-int8 vs optimum-ort-int8/query_p50")), "{:.2f}"),
    Figure("docs/benchmarks.md", "(encode p50 {} vs {} ms; process CPU {} vs {} ms)",
           f"{LATENCY_OPENVINO}/t2/latency.json",
           ("systems/fastdpr-int8/breakdown_ms/encode", "systems/fastdpr-int8-onnxruntime-passages/breakdown_ms/encode",
            "systems/fastdpr-int8/query_cpu_ms/p50", "systems/fastdpr-int8-onnxruntime-passages/query_cpu_ms/p50"),
           "{:.2f}"),
    Figure("docs/benchmarks.md", "(encode p50 {} vs {} ms, process CPU {} vs {} ms; fastdpr-int8 vs optimum-ort-int8 "
           "there {}x query p50", f"{LATENCY_OPENVINO}/t2-no-openvino-peers/latency.json",
           ("systems/fastdpr-int8/breakdown_ms/encode", "systems/fastdpr-int8-onnxruntime-passages/breakdown_ms/encode",
            "systems/fastdpr-int8/query_cpu_ms/p50", "systems/fastdpr-int8-onnxruntime-passages/query_cpu_ms/p50",
            "ratios/fastdpr-int8 vs optimum-ort-int8/query_p50"), "{:.2f}"),
    Figure("docs/benchmarks.md", "its two most sensitive (the FFN output projections of layers 3 and 0) {} / {} / {} / "
           "{}\n  / {} ({}): the default now", OPENVINO_VARIANTS, _variant("I-scores+down03"), _signed_or_count),
    Figure("docs/benchmarks.md", "layer 0's alone {} /\n  {} / {} / {} / {} ({})", OPENVINO_VARIANTS,
           _variant("J-scores+down0"), _signed_or_count),
    Figure("docs/benchmarks.md", "layer 4's FFN input projection alone {} / {} / {} / {} / {}\n  ({})",
           OPENVINO_VARIANTS, _variant("K-scores+up4"), _signed_or_count),
    Figure("docs/benchmarks.md", "layer 5's Q/K/V alone {} / {} / {} / {} / {} ({})", OPENVINO_VARIANTS,
           _variant("H-scores+qkv5"), _signed_or_count),
    Figure("docs/benchmarks.md", "the three FFN nodes {} / {} /\n  {} / {} / {} ({})", OPENVINO_VARIANTS,
           _variant("G-scores+ffn"), _signed_or_count),
    Figure("docs/benchmarks.md", "held-out): {} with attention's products alone, {} with the top two added, {} "
           "with all four; layer 5's Q/K/V ({}) or layer 4's input projection ({}) alone", OPENVINO_VARIANTS,
           tuple(f"second_round/probe_error/held_out/{n}" for n in ("E-scores", "I-scores+down03", "C-kept+scores",
                                                                    "H-scores+qkv5", "K-scores+up4")), "{:.6f}"),
    Figure("docs/benchmarks.md", "Keeping two\n  instead of four: {} / {} passages/s at 1 / 2 threads against {} / {}",
           OPENVINO_VARIANTS, tuple(f"second_round/speed_interleaved/threads_{t}/{n}"
                                    for n in ("I-scores+down03", "C-kept+scores") for t in (1, 2)), "{:.1f}"),
    Figure("README.md", "(interleaved, quiet machine; 1 thread: {}x and {}x; BERT-base shape {}x / {}x the peer)",
           f"{LATENCY_OPENVINO}/t1/latency.json",
           ("ratios/fastdpr-int8 vs fastdpr-int8-onnxruntime-passages/passages_per_s",
            "ratios/fastdpr-int8 vs openvino-int8/passages_per_s",
            *(lambda d, t=t: lookup(result(f"latency-bert-base-openvino-x86-avx512-vnni/t{t}/latency.json"),
                                    "ratios/fastdpr-int8 vs openvino-int8/passages_per_s") for t in (1, 2))),
           "{:.2f}"),
    Figure("docs/benchmarks.md", "and {}x passages/s at 2 threads\n  ({} vs {}): **issue #21's 1.0x is met on MiniLM**",
           f"{LATENCY_OPENVINO}/t2/latency.json",
           ("ratios/fastdpr-int8 vs openvino-int8/passages_per_s", "systems/fastdpr-int8/passages_per_s",
            "systems/openvino-int8/passages_per_s"), lambda v: f"{v:.2f}" if v < 10 else f"{v:g}"),
)


@pytest.mark.parametrize("figure", OPENVINO_PASSAGE_FIGURES, ids=lambda f: f.phrase[:50])
def test_openvino_passage_figures_are_the_result_files(figure: Figure) -> None:
    assert figure.problem() is None, figure.problem()


def test_the_openvino_parity_run_measured_what_fastdpr_index_picks_there() -> None:
    report = result(PARITY_OPENVINO_VNNI)
    assert [entry["name"] for entry in report["passage_backend_here"].values()] == ["openvino"]
    assert report["machine"]["int8_class"]["int8_class"] == "x86-avx512-vnni"
    notes = result(f"{LATENCY_OPENVINO}/t2/latency.json")["system_notes"]
    assert notes["fastdpr-int8"]["passage_backend"]["name"] == "openvino"
    assert notes["fastdpr-int8-onnxruntime-passages"]["passage_backend"]["name"] == "onnxruntime"


OPENVINO_README_FIGURES: tuple[Figure, ...] = (
    Figure("README.md", "int8 questions + OpenVINO passages + HNSW {} / {} / {} / {} / {} at Top-1/5/20/50/100",
           PARITY_OPENVINO_VNNI, _deltas("onnx-int8+openvino-passages-hnsw"), points),
    Figure("README.md", "passages {}x the same artifact on ONNX Runtime at 2 threads, {}x the OpenVINO peer",
           f"{LATENCY_OPENVINO}/t2/latency.json",
           ("ratios/fastdpr-int8 vs fastdpr-int8-onnxruntime-passages/passages_per_s",
            "ratios/fastdpr-int8 vs openvino-int8/passages_per_s"), "{:.2f}"),
    Figure("README.md", "which loses {} points at Top-5", PARITY_OPENVINO_VNNI,
           (lambda d: -d["delta_vs_pytorch"]["openvino-int8-exact"]["5"],), lambda v: f"{v * 100:.2f}"),
)


OPENVINO_README_FIGURES += (
    Figure("README.md", "(fastdpr-int8 vs optimum-ort-int8 query p50: {}x / {}x at 1 / 2 threads, MiniLM)",
           f"{LATENCY_OPENVINO}/t1/latency.json",
           latency_openvino("ratios/fastdpr-int8 vs optimum-ort-int8/query_p50")),
    Figure("README.md", "optimum's ORT on a lone BERT-base question at 2 threads ({}x query p50; {}x at 1 thread)",
           f"{LATENCY_BERT_OPENVINO}/t2/latency.json",
           ("ratios/fastdpr-int8 vs optimum-ort-int8/query_p50",
            lambda d: lookup(result(f"{LATENCY_BERT_OPENVINO}/t1/latency.json"),
                             "ratios/fastdpr-int8 vs optimum-ort-int8/query_p50"))),
)


@pytest.mark.parametrize("figure", OPENVINO_README_FIGURES, ids=lambda f: f.phrase[:50])
def test_openvino_readme_figures_are_the_result_files(figure: Figure) -> None:
    assert figure.problem() is None, figure.problem()


def bert_pair(key: str) -> tuple[Callable[[Any], float], ...]:
    return tuple((lambda d, t=t: lookup(result(f"{LATENCY_BERT_OPENVINO}/t{t}/latency.json"), key)) for t in (1, 2))


BERT_OPENVINO_FIGURES: tuple[Figure, ...] = (
    Figure("docs/benchmarks.md", "fastdpr-int8 (OpenVINO passages) {} at 1 thread and {} at 2",
           f"{LATENCY_BERT_OPENVINO}/t1/latency.json", bert_pair("systems/fastdpr-int8/passages_per_s"),
           lambda v: f"{v:g}"),
    Figure("docs/benchmarks.md", "the same artifact on ONNX Runtime {}x / {}x slower; against the OpenVINO peer {}x / "
           "{}x", f"{LATENCY_BERT_OPENVINO}/t1/latency.json",
           (*bert_pair("ratios/fastdpr-int8 vs fastdpr-int8-onnxruntime-passages/passages_per_s"),
            *bert_pair("ratios/fastdpr-int8 vs openvino-int8/passages_per_s")), "{:.2f}"),
    Figure("docs/benchmarks.md", "({} / {}: issue #21's 1.0x\n  met at 1 and 2 threads); against optimum's ORT int8 "
           "{}x / {}x",
           f"{LATENCY_BERT_OPENVINO}/t1/latency.json",
           (*bert_pair("systems/openvino-int8/passages_per_s"),
            *bert_pair("ratios/fastdpr-int8 vs optimum-ort-int8/passages_per_s")),
           lambda v: f"{v:.2f}" if v < 5 else f"{v:g}"),
    Figure("docs/benchmarks.md", "(per-part p50s in the file; process CPU p50 {} ms against optimum's {})",
           f"{LATENCY_BERT_OPENVINO}/t2/latency.json",
           ("systems/fastdpr-int8/query_cpu_ms/p50", "systems/optimum-ort-int8/query_cpu_ms/p50"), "{:.2f}"),
    Figure("docs/benchmarks.md", "its export measured that graph at {}x the ONNX int8\ngraph and so prefers it here",
           f"{LATENCY_BERT_OPENVINO}/t1/latency.json",
           (lambda d: float(re.search(r"ran ([0-9.]+)x", d["system_notes"]["fastdpr-int8"]["passage_backend"]["reason"])
                            .group(1)),), lambda v: f"{v:g}"),
    Figure("docs/benchmarks.md", "query p50: {}x / {}x OpenVINO's and {}x / {}x optimum's",
           f"{LATENCY_BERT_OPENVINO}/t1/latency.json",
           (*bert_pair("ratios/fastdpr-int8 vs openvino-int8/query_p50"),
            *bert_pair("ratios/fastdpr-int8 vs optimum-ort-int8/query_p50")), "{:.2f}"),
    Figure("docs/benchmarks.md", "took {} ms against optimum's {}", f"{LATENCY_BERT_OPENVINO}/t2/latency.json",
           ("systems/fastdpr-int8/breakdown_ms/encode", "systems/optimum-ort-int8/breakdown_ms/encode"), "{:.2f}"),
)


@pytest.mark.parametrize("figure", BERT_OPENVINO_FIGURES, ids=lambda f: f.phrase[:50])
def test_bert_base_openvino_figures_are_the_result_files(figure: Figure) -> None:
    assert figure.problem() is None, figure.problem()


def test_bert_base_question_threads_figures_are_the_result_file() -> None:
    figure = Figure("docs/benchmarks.md", "the two question models (the previous artifact's) took {} / {} ms at 1 "
                    "thread and\n  {} / {} ms at 2",
                    "latency-bert-base-openvino-x86-avx512-vnni/question-threads.json",
                    ("median_ms/threads_1/fastdpr", "median_ms/threads_1/optimum", "median_ms/threads_2/fastdpr",
                     "median_ms/threads_2/optimum"), lambda v: f"{v:g}")
    assert figure.problem() is None, figure.problem()


# ---------------------------------------------------------------------------------------------------------
# The last layer for the first token only (docs/benchmarks.md): recall, the A/B of the two artifacts, the peers

FIRST_TOKEN_AB = "first-token-x86-avx512-vnni/artifact-ab.json"


def _ab(key: str) -> Callable[[Any], Any]:
    return lambda d: lookup(d, key)


def _ab_ratio(threads: int, encoder: str) -> Callable[[Any], str]:
    return lambda d: f"{d['runs'][str(threads)]['passages_per_s'][f'head {encoder}'] / d['runs'][str(threads)]['passages_per_s'][f'base {encoder}']:.2f}"  # noqa: E501


def _ab_question_ratio(threads: int) -> Callable[[Any], str]:
    return lambda d: f"{d['runs'][str(threads)]['question_ms']['base']['wall']['p50'] / d['runs'][str(threads)]['question_ms']['head']['wall']['p50']:.2f}"  # noqa: E501


FIRST_TOKEN_FIGURES: tuple[Figure, ...] = (
    Figure("docs/benchmarks.md", "int8 + HNSW as deployed here (OpenVINO passages) {} / {} / {} / {} / {}; with ONNX "
           "Runtime passages {} / {} / {} / {} / {}.", PARITY_OPENVINO_VNNI,
           (*_deltas("onnx-int8+openvino-passages-hnsw"), *_deltas("onnx-int8-hnsw")), points),
    Figure("docs/benchmarks.md", "ONNX Runtime passages {}x / {}x the previous artifact's at 1 / 2 threads "
           "({} vs {}; {} vs {}), OpenVINO passages {}x / {}x ({} vs {}; {} vs {}); one question (p50, {} SQuAD "
           "questions) {}x at 1 thread ({} vs {} ms) and {}x at 2 ({} vs {} ms, where the previous artifact's "
           "2-thread calls were erratic: p95 {} ms)", FIRST_TOKEN_AB,
           (_ab_ratio(1, "onnxruntime"), _ab_ratio(2, "onnxruntime"),
            _ab("runs/1/passages_per_s/head onnxruntime"), _ab("runs/1/passages_per_s/base onnxruntime"),
            _ab("runs/2/passages_per_s/head onnxruntime"), _ab("runs/2/passages_per_s/base onnxruntime"),
            _ab_ratio(1, "openvino"), _ab_ratio(2, "openvino"),
            _ab("runs/1/passages_per_s/head openvino"), _ab("runs/1/passages_per_s/base openvino"),
            _ab("runs/2/passages_per_s/head openvino"), _ab("runs/2/passages_per_s/base openvino"),
            _ab("questions"), _ab_question_ratio(1),
            _ab("runs/1/question_ms/head/wall/p50"), _ab("runs/1/question_ms/base/wall/p50"), _ab_question_ratio(2),
            _ab("runs/2/question_ms/head/wall/p50"), _ab("runs/2/question_ms/base/wall/p50"),
            _ab("runs/2/question_ms/base/wall/p95")), "{}"),
    Figure("docs/benchmarks.md", "passages min / mean cosine {} / {} (before {} / {}), questions {} / {} (before {} / "
           "{})", FIRST_TOKEN_AB,
           tuple(f"artifacts/{a}/int8_vs_pytorch/{side}/{m}_cosine" for side in ("context", "question")
                 for a in ("head", "base") for m in ("min", "mean")), "{}"),
    Figure("docs/benchmarks.md", "fastdpr-int8 {}x / {}x the OpenVINO peer's passages/s at 1 / 2 threads",
           f"{LATENCY_OPENVINO}/t1/latency.json",
           latency_openvino("ratios/fastdpr-int8 vs openvino-int8/passages_per_s"), "{:.2f}"),
    Figure("docs/benchmarks.md", "and {}x / {}x the peer's graph fed with fastdpr's 16-token buckets",
           f"{LATENCY_OPENVINO}/t1/latency.json",
           latency_openvino("ratios/fastdpr-int8 vs openvino-int8-bucketed/passages_per_s"), "{:.2f}"),
    Figure("docs/benchmarks.md", "on the BERT-base shape {}x / {}x the OpenVINO peer",
           f"{LATENCY_BERT_OPENVINO}/t1/latency.json",
           bert_pair("ratios/fastdpr-int8 vs openvino-int8/passages_per_s"), "{:.2f}"),
)


@pytest.mark.parametrize("figure", FIRST_TOKEN_FIGURES, ids=lambda f: f.phrase[:50])
def test_first_token_figures_are_the_result_files(figure: Figure) -> None:
    assert figure.problem() is None, figure.problem()


def test_readme_names_the_first_token_recall_of_the_default() -> None:
    figure = Figure("README.md", "before the last layer ran for the first token only (with it: {} / {} / {} / {} / {}, "
                    "and with OpenVINO passages",
                    PARITY_OPENVINO_VNNI, _deltas("onnx-int8-hnsw"), points)
    assert figure.problem() is None, figure.problem()


def test_readme_names_the_other_bert_base_two_thread_run() -> None:
    figure = Figure("README.md", "in the query run of the same day fastdpr-int8 was {}x",
                    QUERY_RUNS["BERT-base, 64, 2 threads"], ("ratios/fastdpr-int8 vs optimum-ort-int8/query_p50",),
                    "{:.2f}")
    assert figure.problem() is None, figure.problem()
