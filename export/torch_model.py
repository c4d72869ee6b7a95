"""The PyTorch module that is exported: backbone + pooling (+ projection, + normalization).

Pooling lives inside the graph so only ``[batch, dim]`` leaves the ONNX session.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fastdpr.errors import ExportError
from fastdpr.spec import EncoderSpec

from .sources import ResolvedSource


class PooledEncoder(nn.Module):
    """``(input_ids, attention_mask, token_type_ids) -> embedding [batch, dim]``."""

    def __init__(self, backbone: nn.Module, projection: nn.Module | None, pooling: str, normalize: bool) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection = projection
        self.pooling = pooling
        self.normalize = normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        """Embed a batch."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids, return_dict=True).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        if self.projection is not None:
            pooled = self.projection(pooled)
        if self.normalize:
            pooled = nn.functional.normalize(pooled, p=2.0, dim=-1)
        return pooled


def load_hf_model(resolved: ResolvedSource, eager_attention: bool) -> nn.Module:
    """Load the source with the class its config names (never AutoModel for DPR: it picks wrongly).

    ``eager_attention`` selects the plain attention implementation, whose exported pattern ONNX
    Runtime's BERT optimizer recognizes and fuses (SDPA exports a pattern it does not fuse).
    """
    import transformers

    kwargs: dict[str, Any] = {"attn_implementation": "eager"} if eager_attention else {}
    if resolved.kind == "dpr":
        cls = getattr(transformers, resolved.architecture)
    else:
        cls = transformers.AutoModel
        kwargs["add_pooling_layer"] = False
    try:
        model = cls.from_pretrained(resolved.directory, **kwargs)
    except TypeError:  # a model class without add_pooling_layer
        kwargs.pop("add_pooling_layer", None)
        model = cls.from_pretrained(resolved.directory, **kwargs)
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot load {resolved.source} ({resolved.directory}): {exc}") from exc
    return model.eval()


def build_pooled_encoder(resolved: ResolvedSource, spec: EncoderSpec) -> PooledEncoder:
    """Wrap a freshly loaded source model for export."""
    model = load_hf_model(resolved, eager_attention=True)
    if resolved.kind == "dpr":
        inner: Any = model.question_encoder if resolved.architecture == "DPRQuestionEncoder" else model.ctx_encoder
        projection = inner.encode_proj if getattr(inner, "projection_dim", 0) > 0 else None
        return PooledEncoder(inner.bert_model, projection, spec.pooling, spec.normalize).eval()
    return PooledEncoder(model, None, spec.pooling, spec.normalize).eval()


def embedding_dim(resolved: ResolvedSource) -> int:
    """The embedding size: DPR's projection_dim when > 0, else the hidden size."""
    projection = int(resolved.config.get("projection_dim") or 0)
    return projection if resolved.kind == "dpr" and projection > 0 else int(resolved.config["hidden_size"])
