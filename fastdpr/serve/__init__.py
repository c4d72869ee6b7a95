"""``fastdpr serve``: the HTTP app, the question batcher, metrics and the server process (the ``serve`` extra).

:mod:`~fastdpr.serve.app` builds the application from :mod:`~fastdpr.serve.routes` (fastdpr's own
endpoints) and :mod:`~fastdpr.serve.openai_api` (``/v1/embeddings``), with the shared
:mod:`~fastdpr.serve.state`, :mod:`~fastdpr.serve.errors` and :mod:`~fastdpr.serve.middleware` (API key,
body limit, metrics); :mod:`~fastdpr.serve.server` runs it under uvicorn.

Rule: imports :mod:`fastdpr.report` and the layers below it; never :mod:`fastdpr.eval` or the CLI.
"""
