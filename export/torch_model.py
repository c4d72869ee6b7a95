"""The PyTorch module that is exported: backbone + pooling (+ projection, + normalization).

Pooling lives inside the graph so only ``[batch, dim]`` leaves the ONNX session.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fastdpr.common.errors import ExportError
from fastdpr.model.spec import EncoderSpec

from .sources import ResolvedSource
from .weights import is_known_buffer

#: How many offending tensor names a loading error names (the rest are counted).
_NAMES_SHOWN = 4


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
        outputs = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=token_type_ids, return_dict=True)
        hidden = outputs.last_hidden_state
        if self.pooling == "pooler":  # BERT's trained pooler: tanh(dense(CLS))
            pooled = outputs.pooler_output
        elif self.pooling == "cls":
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
    """Load the source strictly, with the class its config names (never AutoModel for DPR: it picks
    wrongly).

    Strict: a tensor the model expects but the file lacks, or one the file holds but the model does not
    use (known buffers such as ``position_ids`` aside), is an :class:`ExportError`. That is what turns
    ``DPRQuestionEncoder.from_pretrained(<plain BERT dir>)`` (random weights with a warning) into an
    error. A BERT's pooler is built exactly when the checkpoint carries its weights. Keras 2
    ``tf_model.h5`` weights are read without TensorFlow (:mod:`.keras_h5`).

    ``eager_attention`` selects the plain attention implementation, whose exported pattern ONNX
    Runtime's BERT optimizer recognizes and fuses (SDPA exports a pattern it does not fuse).
    """
    import transformers

    kwargs: dict[str, Any] = {"attn_implementation": "eager"} if eager_attention else {}
    if resolved.kind == "dpr":
        cls: Any = getattr(transformers, resolved.architecture)
    else:
        cls = transformers.BertModel
        kwargs["add_pooling_layer"] = resolved.has_pooler
    weights = resolved.weights
    try:
        if weights is not None and weights.format == "keras-h5":
            from .keras_h5 import read_h5_state_dict

            state = {key: torch.from_numpy(array) for key, array in
                     read_h5_state_dict(resolved.directory / weights.file).items()}
            config = transformers.AutoConfig.from_pretrained(resolved.directory)
            model, info = cls.from_pretrained(None, config=config, state_dict=state, output_loading_info=True,
                                              **kwargs)
        else:
            if weights is not None:
                kwargs["use_safetensors"] = weights.format == "safetensors"
            model, info = cls.from_pretrained(resolved.directory, output_loading_info=True, **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ExportError(f"cannot load {resolved.source} ({resolved.directory}): {exc}") from exc
    _check_strict(resolved, info)
    return model.eval()


def _check_strict(resolved: ResolvedSource, info: dict[str, Any]) -> None:
    """Refuse a load that left tensors missing, unused or mis-shaped (known buffers aside)."""
    problems = []
    for what, keys in (("missing", info.get("missing_keys", [])), ("unused", info.get("unexpected_keys", [])),
                       ("mis-shaped", [k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys", [])])):
        keys = sorted(k for k in keys if not is_known_buffer(k))
        if keys:
            more = f" and {len(keys) - _NAMES_SHOWN} more" if len(keys) > _NAMES_SHOWN else ""
            problems.append(f"{len(keys)} {what} ({', '.join(keys[:_NAMES_SHOWN])}{more})")
    if problems:
        weights = resolved.weights.file if resolved.weights else "its weights"
        raise ExportError(f"{resolved.source}: {weights} does not fit {resolved.architecture}: "
                          f"{'; '.join(problems)} tensors (fastdpr never exports random weights)")


def check_pooling(resolved: ResolvedSource, pooling: str) -> None:
    """``pooler`` pooling needs a BertModel checkpoint that carries the pooler's trained weights: a
    pooler built without them would be random (transformers only warns)."""
    if pooling == "pooler" and not (resolved.kind != "dpr" and resolved.has_pooler):
        raise ExportError(f"--pooling pooler needs BERT's pooler weights (pooler.dense.weight/bias); "
                          f"{resolved.source} ({resolved.architecture}) has none: use --pooling cls")


def build_pooled_encoder(resolved: ResolvedSource, spec: EncoderSpec) -> PooledEncoder:
    """Wrap a freshly loaded source model for export."""
    check_pooling(resolved, spec.pooling)
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
