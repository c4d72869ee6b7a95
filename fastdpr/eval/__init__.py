"""Scoring retrieval as DPR does: the has_answer rule and DPR retrieval-results JSON with top-k recall.

Rule: imports :mod:`fastdpr.search` and the layers below it; never :mod:`fastdpr.serve`.
"""
