"""Passage-encoding throughput and single-question latency: fastdpr against the peers a user would run.

One module per job:

* :mod:`benchmarks.latency.systems`: the systems under test, one small adapter file each behind one
  interface (:class:`~benchmarks.latency.systems.base.System`); adding a peer is one new file there.
* :mod:`benchmarks.latency.workload`: what every system encodes and asks (passages, questions, warm-up).
* :mod:`benchmarks.latency.background`: the SYNTHETIC background that makes the searched corpus realistic
  in size (``--background 200000``).
* :mod:`benchmarks.latency.timing`: the one timing procedure every system is measured by.
* :mod:`benchmarks.latency.report`: numbers -> latency.json / latency.md / latency.png.
* :mod:`benchmarks.latency.profile`: where fastdpr's passage encoding spends its time (ORT profiler).
* :mod:`benchmarks.latency.run`: the ``python -m benchmarks latency`` command that wires them together.
"""

from benchmarks.latency.run import latency_command, run_latency
from benchmarks.latency.systems import DEFAULT_SYSTEMS, PARTS, SYSTEMS

__all__ = ["DEFAULT_SYSTEMS", "PARTS", "SYSTEMS", "latency_command", "run_latency"]
