"""``fastdpr serve``: the HTTP app, the question batcher, metrics and the server process (the ``serve`` extra).

Rule: imports :mod:`fastdpr.report` and the layers below it; never :mod:`fastdpr.eval` or the CLI.
"""
