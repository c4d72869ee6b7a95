"""``python -m benchmarks parity|hybrid|hybrid-latency|latency|encode-dump|serve|scale|scale-projection|append``
``append-ab``, ``scale-vectors``, ``rerank-footprint``, ``vectors-recall``, ``query-ab``, ``store-fetch``,
``efficiency``, ``concurrent-calls``, ``layer-norm`` and ``artifact-ab``: run from a checkout (benchmarks
are not installed)."""

from __future__ import annotations

import click

from benchmarks.append import append_ab_command, append_command
from benchmarks.artifact_ab import artifact_ab_command
from benchmarks.concurrent_calls import concurrent_calls_command
from benchmarks.efficiency.run import efficiency_command
from benchmarks.encode_dump import encode_dump_command
from benchmarks.hybrid import hybrid_command
from benchmarks.hybrid_latency import hybrid_latency_command
from benchmarks.latency import latency_command
from benchmarks.layer_norm import layer_norm_command
from benchmarks.parity import parity_command
from benchmarks.query_ab import query_ab_command
from benchmarks.rerank_footprint import rerank_footprint_command
from benchmarks.scale import scale_command
from benchmarks.scale_projection import projection_command
from benchmarks.scale_vectors import scale_vectors_command
from benchmarks.serve import serve_command
from benchmarks.store_fetch import store_fetch_command
from benchmarks.vectors_recall import vectors_recall_command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def main() -> None:
    """fastdpr benchmarks: recall parity with PyTorch, and latency/throughput, measured side by side."""


main.add_command(parity_command)
main.add_command(hybrid_command)
main.add_command(hybrid_latency_command)
main.add_command(latency_command)
main.add_command(encode_dump_command)
main.add_command(serve_command)
main.add_command(scale_command)
main.add_command(projection_command)
main.add_command(append_command)
main.add_command(append_ab_command)
main.add_command(scale_vectors_command)
main.add_command(vectors_recall_command)
main.add_command(query_ab_command)
main.add_command(store_fetch_command)
main.add_command(rerank_footprint_command)
main.add_command(concurrent_calls_command)
main.add_command(efficiency_command)
main.add_command(layer_norm_command)
main.add_command(artifact_ab_command)

if __name__ == "__main__":
    main()
