"""Answering questions: the :class:`~fastdpr.search.retriever.Retriever` over one index, local shards or Ray
shards.

Rule: imports :mod:`fastdpr.cluster` and the layers below it.
"""
