"""fastdpr: ONNX-optimized, CPU-only inference for DPR bi-encoders.

The runtime needs only onnxruntime, tokenizers, numpy, hnswlib, click and regex: no torch, no
transformers. Exporting models (``fastdpr export``) needs the ``export`` extra.
"""

from fastdpr.errors import (
    ArtifactError,
    CorpusError,
    ExportError,
    FastDPRError,
    IndexLoadError,
    MissingDependencyError,
    ValidationError,
)

__version__ = "0.1.0"

__all__ = [
    "ArtifactError",
    "CorpusError",
    "ExportError",
    "FastDPRError",
    "IndexLoadError",
    "MissingDependencyError",
    "ValidationError",
    "__version__",
]
