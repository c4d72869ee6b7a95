"""Reading what users give us: passage corpora (DPR tsv, JSON lines, BEIR), question files, SQuAD, and the
built-in pydoc corpus.

Rule: imports only :mod:`fastdpr.common`.
"""
