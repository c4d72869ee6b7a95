"""Searching a sharded index whose shards are served by Ray actors (``Retriever.load(..., ray_address=...)``).

Questions are encoded once, in the driver (:class:`~fastdpr.search.retriever.Retriever`); their vectors go to
every actor through the object store. An actor holds a consecutive run of shards (graphs and passage
stores), answers with the top ``k`` of its shards merged, and the driver merges the actors' lists with
the same total order as :class:`~fastdpr.index.load.ShardedSearcher` (:func:`~fastdpr.index.load.merge_top_k`),
so the hits are those of a local search. Actors open the shards from the index path: every node that
hosts one must see the index at that path (a shared filesystem, or a copy at the same place).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, SupportsIndex

import numpy as np

from fastdpr.cluster.connect import MAX_RESTARTS, cluster_cpus, connect
from fastdpr.common.errors import FastDPRError, IndexLoadError
from fastdpr.index.load import merge_top_k, shard_entries
from fastdpr.index.manifest import ShardedIndexManifest, ShardEntry
from fastdpr.index.store import StoredPassage


class _ShardServer:
    """A Ray actor: some consecutive shards of one index, searched and read together."""

    def __init__(self, root: str, entries: list[dict[str, Any]], dim: int, ef: int, exact: bool,
                 threads: int) -> None:
        from fastdpr.index.load import open_shards

        self._searcher, self._store = open_shards(Path(root), [ShardEntry(**entry) for entry in entries], dim=dim,
                                                  ef=ef, exact=exact, threads=threads)

    def search(self, queries: np.ndarray, k: int, ef: int | None) -> tuple[np.ndarray, np.ndarray]:
        return self._searcher.search(queries, k, ef=ef)

    def get(self, labels: list[int]) -> list[tuple[int, str, str, str]]:
        return [(p.label, p.id, p.title, p.text) for p in self._store.get(labels)]

    def node_id(self) -> str:
        import ray

        return str(ray.get_runtime_context().get_node_id())


def _split(entries: list[ShardEntry], groups: int) -> list[list[ShardEntry]]:
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


class RayShards:
    """The actors serving one index: a searcher (``search``) and a passage store (``get``) in one object."""

    def __init__(self, root: Path, manifest: ShardedIndexManifest, *, dim: int, ef: int, exact: bool,
                 threads: int | None, address: str | None, actors: int | None = None) -> None:
        self._ray = ray = connect(address)
        entries = shard_entries(manifest)
        threads = threads or 1
        wanted = actors or cluster_cpus(ray) // threads
        self.runs = _split(entries, max(1, min(len(entries), wanted)))
        self.ef = ef
        self.exact = exact
        self._count = sum(entry.count for entry in entries)
        self._offsets = [run[0].label_offset for run in self.runs]
        # SPREAD: the shards' memory is what limits a node, so put actors on as many nodes as possible.
        server = ray.remote(num_cpus=threads, max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS,
                            scheduling_strategy="SPREAD")(_ShardServer)
        self.actors = [server.remote(str(root.resolve()), [entry.to_dict() for entry in run], dim, ef, exact, threads)
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
        :meth:`ShardedSearcher.search <fastdpr.index.load.ShardedSearcher.search>`)."""
        if k < 1:
            raise FastDPRError(f"k must be at least 1, got {k}")
        vectors = self._ray.put(np.ascontiguousarray(queries, dtype=np.float32))
        parts = self._ray.get([actor.search.remote(vectors, k, ef) for actor in self.actors])
        return merge_top_k([labels for labels, _ in parts], [scores for _, scores in parts], k)

    def get(self, labels: Any) -> list[StoredPassage]:
        """The passages with these global labels, in the given order, read by the actors that hold them."""
        import bisect

        wanted = [int(label) for label in labels]
        by_actor: dict[int, list[int]] = {}
        for label in wanted:
            by_actor.setdefault(bisect.bisect_right(self._offsets, label) - 1, []).append(label)
        replies = self._ray.get([self.actors[a].get.remote(group) for a, group in by_actor.items()])
        found = {row[0]: StoredPassage(*row) for reply in replies for row in reply}
        return [found[label] for label in wanted]

    def close(self) -> None:
        """Stop the actors (their shards are freed on the nodes)."""
        for actor in self.actors:
            self._ray.kill(actor)
        self.actors = []


class RayShardedSearcher:
    """The searcher half of :class:`RayShards`, shaped like :class:`~fastdpr.index.load.ShardedSearcher`."""

    def __init__(self, shards: RayShards) -> None:
        self.shards = shards
        self.ef = shards.ef

    @property
    def count(self) -> int:
        """Number of indexed vectors over all shards."""
        return self.shards.count

    @property
    def exact(self) -> bool:
        """True when the shards are searched by brute force."""
        return self.shards.exact

    def search(self, queries: np.ndarray, k: int, ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """See :meth:`RayShards.search`."""
        return self.shards.search(queries, k, ef)


class RayShardedStore:
    """The passage-store half of :class:`RayShards`, shaped like :class:`~fastdpr.index.load.ShardedStore`."""

    def __init__(self, shards: RayShards) -> None:
        self.shards = shards

    def count(self) -> int:
        """Number of passages over all shards."""
        return self.shards.count

    def get(self, labels: list[SupportsIndex]) -> list[StoredPassage]:
        """See :meth:`RayShards.get`."""
        return self.shards.get(labels)

    def close(self) -> None:
        """Stops the actors."""
        self.shards.close()


def open_ray_shards(root: Path, manifest: ShardedIndexManifest, *, dim: int, ef: int, exact: bool, threads: int | None,
                    address: str | None, actors: int | None = None) -> tuple[RayShardedSearcher, RayShardedStore]:
    """Serve a checked sharded index (:func:`~fastdpr.index.load.load_sharded_manifest`) from Ray actors."""
    shards = RayShards(root, manifest, dim=dim, ef=ef, exact=exact, threads=threads, address=address, actors=actors)
    return RayShardedSearcher(shards), RayShardedStore(shards)
