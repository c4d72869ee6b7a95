"""fastdpr: ONNX-optimized, CPU-only inference for DPR bi-encoders.

The runtime needs only onnxruntime, tokenizers, numpy, hnswlib, click and regex: no torch, no
transformers. Exporting models (``fastdpr export``) needs the ``export`` extra.
"""

from typing import TYPE_CHECKING, Any

from fastdpr.common.errors import (
    ArtifactError,
    CorpusError,
    ExportError,
    FastDPRError,
    IndexLoadError,
    MissingDependencyError,
    ValidationError,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from fastdpr.search.retriever import Hit, Retriever

# The API classes load onnxruntime and hnswlib; importing them lazily keeps `import fastdpr` (and the
# CLI's start-up, which reads __version__) cheap. `from fastdpr import Retriever` works as usual.
_LAZY = {"Retriever": "fastdpr.search.retriever", "Hit": "fastdpr.search.retriever"}


def __getattr__(name: str) -> Any:
    """Import :class:`Retriever` and :class:`Hit` on first use (PEP 562)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fastdpr' has no attribute {name!r}")


__all__ = [
    "ArtifactError",
    "CorpusError",
    "ExportError",
    "FastDPRError",
    "Hit",
    "IndexLoadError",
    "MissingDependencyError",
    "Retriever",
    "ValidationError",
    "__version__",
]
