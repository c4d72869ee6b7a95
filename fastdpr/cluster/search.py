"""Searching a sharded index whose shards are served by Ray actors (``Retriever.load(..., ray_address=...)``).

Questions are encoded once, in the driver (:class:`~fastdpr.search.retriever.Retriever`); their vectors go to
every actor through the object store. An actor holds the graphs (or memory-mapped vectors) of a consecutive
run of shards and answers with the top ``k`` of its shards merged; the driver merges the actors' lists with
the same total order as :class:`~fastdpr.index.load.ShardedSearcher` (:func:`~fastdpr.index.load.merge_top_k`),
so the hits are those of a local search. A batch of questions is one round trip: one ``ray.get`` over every
actor's answer. Passages are not read by the actors: the driver reads them from its own copy of the shards'
stores, which it checked at load. Actors open the shards from the index path: every node that hosts one must
see the index at that path (a shared filesystem, or a copy at the same place).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fastdpr.cluster.connect import MAX_RESTARTS, cluster_cpus, connect
from fastdpr.common.errors import IndexLoadError
from fastdpr.index.ann import check_search
from fastdpr.index.load import merge_top_k, open_searcher, shards_of
from fastdpr.index.manifest import ShardEntry


class _ShardServer:
    """A Ray actor: the searcher of some consecutive shards of one index."""

    def __init__(self, root: str, entries: list[dict[str, Any]], ef: int, exact: bool, threads: int) -> None:
        shards = shards_of(Path(root), [ShardEntry(**entry) for entry in entries])
        self._searcher = open_searcher(shards, ef=ef, exact=exact, threads=threads)

    def search(self, queries: np.ndarray, k: int, ef: int | None) -> tuple[np.ndarray, np.ndarray]:
        return self._searcher.search(queries, k, ef=ef)

    def node_id(self) -> str:
        import ray

        return str(ray.get_runtime_context().get_node_id())


def _split(entries: Sequence[ShardEntry], groups: int) -> list[list[ShardEntry]]:
    """``entries`` in ``groups`` consecutive runs of nearly equal passage counts (none empty)."""
    total = sum(entry.count for entry in entries)
    runs: list[list[ShardEntry]] = [[]]
    done = 0
    for entry in entries:
        # Start a new run once this one holds its share, while shards remain for the runs still to come.
        if runs[-1] and done >= total * len(runs) / groups and len(runs) < groups:
            runs.append([])
        runs[-1].append(entry)
        done += entry.count
    return runs


class RayShardedSearcher:
    """A :class:`~fastdpr.index.ann.Searcher` over the shards of a checked sharded index
    (:func:`~fastdpr.index.load.load_sharded_manifest`), each searched by the Ray actor that holds it.

    ``actors`` of them (default: the cluster's CPUs / ``threads``), each holding a consecutive run of
    shards (:attr:`runs`), spread over as many nodes as possible. :meth:`close` stops them.
    """

    def __init__(self, root: Path, entries: Sequence[ShardEntry], *, ef: int, exact: bool, threads: int | None,
                 address: str | None, actors: int | None = None) -> None:
        self._ray = ray = connect(address)
        threads = threads or 1
        wanted = actors or cluster_cpus(ray) // threads
        self.runs = _split(entries, max(1, min(len(entries), wanted)))
        self.ef = ef
        self._count = sum(entry.count for entry in entries)
        # SPREAD: the shards' memory is what limits a node, so put actors on as many nodes as possible.
        server = ray.remote(num_cpus=threads, max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS,
                            scheduling_strategy="SPREAD")(_ShardServer)
        self.actors = [server.remote(str(root.resolve()), [entry.to_dict() for entry in run], ef, exact, threads)
                       for run in self.runs]
        try:
            self.node_ids = ray.get([actor.node_id.remote() for actor in self.actors])
        except Exception as exc:  # Ray wraps the actor's own error (a missing file on that node, ...)
            self.close()
            raise IndexLoadError(f"{root}: Ray actors could not open the shards: {exc}") from exc

    @property
    def count(self) -> int:
        """Number of indexed vectors over all shards."""
        return self._count

    def search(self, queries: np.ndarray, k: int, ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` global labels and dot-product scores per query, best first (as
        :meth:`ShardedSearcher.search <fastdpr.index.load.ShardedSearcher.search>`), in one round trip
        to the actors for the whole batch of ``queries``."""
        check_search(k, ef)  # here, not in the actors: a bad k is this one line, not a remote traceback
        vectors = self._ray.put(np.ascontiguousarray(queries, dtype=np.float32))
        parts = self._ray.get([actor.search.remote(vectors, k, ef) for actor in self.actors])
        return merge_top_k([labels for labels, _ in parts], [scores for _, scores in parts], k)

    def close(self) -> None:
        """Stop the actors (their shards are freed on the nodes)."""
        for actor in self.actors:
            self._ray.kill(actor)
        self.actors = []
