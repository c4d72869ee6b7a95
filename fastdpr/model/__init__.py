"""The encoder side: model specs, tokenization, ONNX Runtime sessions, the exported artifact and its probes
and checks.

Rule: imports :mod:`fastdpr.common` and :mod:`fastdpr.corpus` (the probes are passages) only.
"""
