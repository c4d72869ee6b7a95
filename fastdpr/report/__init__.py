"""What an artifact or index is: ``fastdpr info``'s report (for the CLI and ``/info``).

Rule: imports :mod:`fastdpr.search` and the layers below it.
"""
