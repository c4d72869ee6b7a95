"""On paper: Wikipedia's 21M passages, from figures measured on this machine (a PROJECTION, not a measurement).

``python -m benchmarks scale-projection --scale RESULT.json --rate NAME=PASSAGES_PER_S:DIM ... --out FILE.md``

Every input is a measured figure, named with where it comes from; every output is a formula over
them, printed next to its value:

* encode time on N machines = P / (N x r), r = passages/s of one machine of this size (2 cores);
* HNSW time = P x g x (d / d0) x ln S / ln S0, g = measured graph seconds per passage at dimension d0
  and shard size S0 (the scale run's, all shards), scaled linearly with the dimension d (distance
  computations dominate) and with the log of the shard size (HNSW's search depth); shards' graphs are
  built one after another (the build waits for each shard's graph), so N does not divide it;
* shard size S = the largest multiple of 100,000 passages whose graph (hnswlib: 4d bytes of vector + the
  measured link bytes per passage) fits in half of this machine's memory; shards = ceil(P / S);
* driver memory = P x b (the seen-id set, measured here at P ids) + one shard's graph;
* disk per passage = 4d (vectors) + (4d + link bytes) (graph) + the measured passage-store bytes.

With ``--vectors RESULT.json`` (a ``python -m benchmarks scale-vectors`` result, issue #22) a second table
projects SERVING the index per ``--vectors`` kind: resident bytes per passage = the process's measured
anonymous memory per passage + the bytes of the file its searches read (the graph is in the anonymous
part for fp32; a compressed index's codes are memory-mapped and must stay in the page cache for its
measured speed); machines = ceil(P x resident / (3/4 of one machine's memory)), the rest left to the
system, the question encoder and the page cache that re-ranking reads float32 rows through; disk =
float32 vectors + searched file + passage store.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click

WIKIPEDIA_PASSAGES = 21_015_324  # DPR's psgs_w100.tsv


def project(scale: dict[str, Any], name: str, rate: float, dim: int, machines: int, seen: float,
            passages: int = WIKIPEDIA_PASSAGES) -> dict[str, Any]:
    """The projection for one model and machine count (see the module docstring for the formulas);
    ``seen``: measured bytes per passage of the seen-id set at ``passages`` ids."""
    build = next(s["build"] for s in scale["systems"].values())
    s0 = int(build["shard_size"])
    d0 = round(build["disk"]["by_kind_bytes_per_passage"]["vectors"] / 4)  # (+ .npy headers, negligible)
    graph_per_passage = build["hnsw_graph_seconds"] / build["passages"]
    links = build["disk"]["by_kind_bytes_per_passage"]["hnsw"] - 4 * d0
    store = build["disk"]["by_kind_bytes_per_passage"]["passages"]
    memory = scale["machine"]["memory_gib"] * 2**30
    graph_bytes = 4 * dim + links
    shard = max(100_000, int(memory / 2 / graph_bytes) // 100_000 * 100_000)
    encode_s = passages / (machines * rate)
    graph_s = passages * graph_per_passage * dim / d0 * math.log(shard) / math.log(s0)
    return {
        "model": name, "machines": machines, "passages": passages, "rate_per_machine": rate, "dim": dim,
        "encode_hours": round(encode_s / 3600, 1), "graph_hours": round(graph_s / 3600, 1),
        "total_hours": round((encode_s + graph_s) / 3600, 1),
        "shard_size": shard, "shards": math.ceil(passages / shard),
        "driver_memory_gib": round((passages * seen + shard * graph_bytes) / 2**30, 1),
        "disk_gib": round(passages * (4 * dim + graph_bytes + store) / 2**30, 1),
        "inputs": {"graph_seconds_per_passage_at_d0": graph_per_passage, "d0": d0, "s0": s0, "link_bytes": links,
                   "store_bytes": store, "seen_id_bytes": seen},
    }


#: Share of a machine's memory the searched index may take (the rest: system, encoder, re-rank page cache).
SERVING_SHARE = 0.75


def serving(vectors_report: dict[str, Any], store_bytes: float, memory_gib: float,
            passages: int = WIKIPEDIA_PASSAGES) -> list[dict[str, Any]]:
    """Per kind of a scale-vectors result: resident and disk bytes per passage, and machines to serve
    ``passages`` (see the module docstring)."""
    rows = []
    for kind, row in vectors_report["kinds"].items():
        if "@" in kind:
            continue  # search-time variants of a built kind: same bytes
        anonymous = row["rss_bytes_per_passage"]["anonymous"]
        searched = row["bytes_per_passage"]["searched"]
        resident = anonymous + (0 if kind == "fp32" else searched)  # fp32's graph is anonymous memory
        disk = row["bytes_per_passage"]["vectors.npy"] + searched + store_bytes
        rows.append({"kind": kind, "resident_bytes_per_passage": round(resident),
                     "disk_bytes_per_passage": round(disk), "resident_gib": round(passages * resident / 2**30, 1),
                     "disk_gib": round(passages * disk / 2**30, 1),
                     "machines": math.ceil(passages * resident / (SERVING_SHARE * memory_gib * 2**30)),
                     "search_ms_p50": row["search_ms"]["p50"], "recall_at_100_vs_exact": row["recall_at_100_vs_exact"]})
    return rows


def serving_lines(vectors_file: Path, vectors_report: dict[str, Any], rows: list[dict[str, Any]],
                  memory_gib: float) -> list[str]:
    """The serving table, as markdown."""
    lines = ["", f"## Serving {WIKIPEDIA_PASSAGES:,} passages by `--vectors` kind (PROJECTION)", "",
             f"From `{vectors_file.name}` ({vectors_report['passages']:,} SYNTHETIC {vectors_report['dim']}-d vectors, "
             f"measured {vectors_report['date_utc']}): resident = measured anonymous RSS per passage + the "
             f"memory-mapped file searches read (compressed kinds); machines = ceil(P x resident / "
             f"({SERVING_SHARE} x {memory_gib} GiB)); disk = float32 vectors + searched file + passage store.", "",
             "| vectors | resident B/passage | resident GiB | machines | disk B/passage | disk GiB | "
             f"search p50 ms at {vectors_report['passages']:,} | recall@100 vs exact (synthetic) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['kind']} | {r['resident_bytes_per_passage']:,} | {r['resident_gib']} | {r['machines']} | "
              f"{r['disk_bytes_per_passage']:,} | {r['disk_gib']} | {r['search_ms_p50']} | "
              f"{r['recall_at_100_vs_exact']} |"
              for r in rows]
    return lines


@click.command("scale-projection")
@click.option("--scale", "scale_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A scale result JSON (graph time, bytes per passage, seen-id set, machine memory).")
@click.option("--rate", "rates", multiple=True, required=True, metavar="NAME=PASSAGES_PER_S:DIM:SOURCE",
              help="A measured encode rate of one machine, its embedding dimension, and where it was measured.")
@click.option("--machines", default="1,4,16", show_default=True)
@click.option("--vectors", "vectors_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A scale-vectors result: also project serving per --vectors kind.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
def projection_command(scale_file: Path, rates: tuple[str, ...], machines: str, vectors_file: Path | None,
                       out: Path) -> None:
    """Project a 21M-passage build from measured figures (a PROJECTION: formulas shown)."""
    from benchmarks.scale import seen_id_bytes

    scale = json.loads(scale_file.read_text())
    seen = seen_id_bytes(WIKIPEDIA_PASSAGES)  # measured at full size: a set's table grows in steps
    rows = []
    sources = []
    for spec in rates:
        name, _, rest = spec.partition("=")
        rate, dim, source = rest.split(":", 2)
        sources.append(f"- {name}: {rate} passages/s per machine, d={dim} ({source})")
        rows += [project(scale, name, float(rate), int(dim), int(n), seen["bytes_per_passage"])
                 for n in machines.split(",")]
    first = rows[0]["inputs"]
    lines = [
        f"# PROJECTION: {WIKIPEDIA_PASSAGES:,} passages (not measured)",
        "",
        f"From `{scale_file.name}` (measured {scale['date_utc']}, load average "
        f"{next(iter(scale['systems'].values()))['build'].get('loadavg_before', ['?'])[0]}) and these rates:",
        *sources,
        "",
        f"Formulas (P = {WIKIPEDIA_PASSAGES:,}, N machines of {scale['machine']['cores']} cores / "
        f"{scale['machine']['memory_gib']} GiB): encode = P / (N r); "
        f"HNSW = P x {first['graph_seconds_per_passage_at_d0']:.3g} s "
        f"x d / {first['d0']} x ln S / ln {first['s0']} (graphs one shard after another); "
        f"shard S = largest 100k multiple with "
        f"S x (4d + {first['link_bytes']:.0f} B) <= memory / 2; driver memory = P x {first['seen_id_bytes']} B "
        f"(seen ids, measured at P ids) + S x (4d + {first['link_bytes']:.0f} B); "
        f"disk = P x (8d + {first['link_bytes']:.0f} + "
        f"{first['store_bytes']:.0f}) B.",
        "",
        "| model | machines | encode h | HNSW h | total h | shard size | shards | driver GiB | disk GiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['machines']} | {r['encode_hours']} | {r['graph_hours']} | "
                     f"{r['total_hours']} | {r['shard_size']:,} | {r['shards']} | {r['driver_memory_gib']} | "
                     f"{r['disk_gib']} |")
    served: list[dict[str, Any]] = []
    if vectors_file is not None:
        vectors_report = json.loads(vectors_file.read_text())
        served = serving(vectors_report, first["store_bytes"], scale["machine"]["memory_gib"])
        lines += serving_lines(vectors_file, vectors_report, served, scale["machine"]["memory_gib"])
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps({"projection": True, "rows": rows, "serving": served}, indent=2)
                                        + "\n")
    click.echo(out.read_text())
