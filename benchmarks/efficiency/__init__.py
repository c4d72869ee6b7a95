"""Compute efficiency of fastdpr's encoders (issue #21, point 3): achieved GOP/s against the CPU's peak.

One module per job:

* :mod:`benchmarks.efficiency.work`: the operations of one encoder call, counted from the ONNX graph.
* :mod:`benchmarks.efficiency.peak`: the int8 peak of a CPU class (a frozen table) x cores x clock.
* :mod:`benchmarks.efficiency.run`: the ``python -m benchmarks efficiency`` command: passages/s at 1 and 2
  threads interleaved (:func:`benchmarks.parity.interleaved_speed`), GOP/s, % of peak, and where the rest of
  the time goes (:func:`benchmarks.latency.profile.profile_passage_encoding`).
* :mod:`benchmarks.efficiency.report`: numbers -> efficiency.json / efficiency.md.
"""
