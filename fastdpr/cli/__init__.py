"""The ``fastdpr`` command line: click commands over the Python API.

Rule: the top layer; may import every fastdpr subpackage. ``fastdpr export`` is the export package's
command, loaded by name so that the runtime never imports it.
"""
