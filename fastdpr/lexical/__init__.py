"""The lexical side of an index (issue #23): BM25 over the same passages as the vectors (``bm25s``), and
the fusion of lexical and dense hit lists.

Rule: imports :mod:`fastdpr.common` only (it sits beside :mod:`fastdpr.model`, below :mod:`fastdpr.index`,
which writes and opens it). ``bm25s`` and ``PyStemmer`` are imported when a lexical side is built or
opened, never by ``fastdpr --help`` or a dense-only search.
"""
