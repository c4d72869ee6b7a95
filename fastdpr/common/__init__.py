"""Small pieces every layer uses: errors, manifest field checks, file integrity, atomic publishing, CPU class,
output-path checks and progress bars.

Rule: imports nothing from fastdpr (checked by import-linter, see ``.importlinter``).
"""
