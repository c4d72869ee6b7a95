"""``python -m benchmarks.latency`` (same as ``python -m benchmarks latency``)."""

from benchmarks.latency.run import latency_command

latency_command()
