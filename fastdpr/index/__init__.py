"""Writing and opening indexes: HNSW (hnswlib), the passage store, index manifests, unsharded and sharded
builds.

Rule: imports :mod:`fastdpr.model`, :mod:`fastdpr.corpus` and :mod:`fastdpr.common` only; never Ray.
"""
