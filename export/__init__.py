"""fastdpr's export step (installed as ``fastdpr_export``): Hugging Face DPR / BERT encoders ->
ONNX -> ONNX Runtime transformer fusions -> INT8, each stage validated against PyTorch.

Needs the ``export`` extra (torch, transformers, onnx); the runtime package ``fastdpr`` does not.
Heavy modules are imported lazily so ``import fastdpr_export`` stays cheap and torch-free.
"""

from .lazy import INSTALL_HINT, require_export_extra

__all__ = ["INSTALL_HINT", "require_export_extra"]
