"""The PyTorch module that is exported: backbone + pooling (+ projection, + normalization).

Pooling lives inside the graph so only ``[batch, dim]`` leaves the ONNX session.
"""

from __future__ import annotations

import math
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
    """``(input_ids, attention_mask, token_type_ids) -> embedding [batch, dim]``.

    With ``final_layer`` (a :class:`FirstTokenLayer`), ``backbone`` holds every layer but the last and
    ``final_layer`` computes the last one for the first token only: CLS and pooler pooling read nothing else.
    """

    def __init__(self, backbone: nn.Module, projection: nn.Module | None, pooling: str, normalize: bool,
                 final_layer: FirstTokenLayer | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection = projection
        self.pooling = pooling
        self.normalize = normalize
        self.final_layer = final_layer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        """Embed a batch."""
        outputs = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=token_type_ids, return_dict=True)
        hidden = outputs.last_hidden_state
        if self.final_layer is not None:
            first = self.final_layer(hidden, attention_mask)
            # BERT's trained pooler (tanh(dense(CLS))), applied to the final layer's CLS vector.
            pooler: Any = self.backbone.pooler
            pooled = pooler.activation(pooler.dense(first)) if self.pooling == "pooler" else first
        elif self.pooling == "pooler":  # BERT's trained pooler: tanh(dense(CLS))
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


class _FirstTokenSelfAttention(nn.Module):
    """BERT self-attention whose queries are the first token only; keys and values are every token."""

    def __init__(self, attention: Any) -> None:
        super().__init__()
        self.query, self.key, self.value = attention.query, attention.key, attention.value
        self.heads = int(attention.num_attention_heads)
        self.head_size = int(attention.attention_head_size)

    def forward(self, first: torch.Tensor, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        batch = hidden.shape[0]
        query = self.query(first).view(batch, 1, self.heads, self.head_size).transpose(1, 2)
        key = self.key(hidden).view(batch, -1, self.heads, self.head_size).transpose(1, 2)
        value = self.value(hidden).view(batch, -1, self.heads, self.head_size).transpose(1, 2)
        scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(self.head_size)
        # The mask as BERT's eager attention adds it: padded keys get the dtype's lowest value.
        scores = scores + (1.0 - attention_mask[:, None, None, :].to(scores.dtype)) * torch.finfo(scores.dtype).min
        context = torch.matmul(scores.softmax(dim=-1), value)
        return context.transpose(1, 2).reshape(batch, 1, self.heads * self.head_size)


class _FirstTokenAttention(nn.Module):
    def __init__(self, attention: Any) -> None:
        super().__init__()
        self.self = _FirstTokenSelfAttention(attention.self)
        self.output = attention.output  # dense, dropout, LayerNorm(x + first)

    def forward(self, first: torch.Tensor, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(first, hidden, attention_mask), first)


class FirstTokenLayer(nn.Module):
    """A BERT layer computed for the first token only: ``(hidden [b, s, h], mask [b, s]) -> [b, h]``.

    CLS pooling reads one row of the last layer, and in that layer only attention's keys and values
    need every token: the query, the attention output, both feed-forward products and the LayerNorms
    run on one row instead of ``s``. The same weights and arithmetic as the layer, one row of it (what it
    buys, measured side by side: docs/benchmarks.md, "The last layer for the first token only"). Submodules
    are named as in ``BertLayer`` so the exported nodes take its names
    (:func:`~.first_token.final_layer_prefix`).
    """

    def __init__(self, layer: Any, index: int) -> None:
        super().__init__()
        self.index = index  # the layer's position in the model (its name in a full export)
        self.attention = _FirstTokenAttention(layer.attention)
        self.intermediate = layer.intermediate
        self.output = layer.output

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The layer's output row of the first token."""
        first = hidden[:, :1]
        attended = self.attention(first, hidden, attention_mask)
        return self.output(self.intermediate(attended), attended)[:, 0]


def first_token_applies(backbone: Any, pooling: str) -> bool:
    """Whether the last layer can run for the first token only: CLS or pooler pooling, BERT's absolute
    position embeddings (relative ones add terms to the scores that :class:`FirstTokenLayer` does not
    compute) and at least two layers (the int8 graph needs one fused attention to quantize as QAttention)."""
    config = getattr(backbone, "config", None)
    return (pooling in ("cls", "pooler") and config is not None
            and getattr(config, "position_embedding_type", "absolute") == "absolute"
            and not getattr(config, "is_decoder", False) and len(backbone.encoder.layer) >= 2)


def with_first_token_layer(backbone: Any, projection: nn.Module | None, pooling: str,
                           normalize: bool) -> PooledEncoder:
    """A :class:`PooledEncoder` whose last layer runs for the first token only, when that applies (else
    the plain one). Takes ``backbone``'s last layer out of it: pass a freshly loaded model."""
    if not first_token_applies(backbone, pooling):
        return PooledEncoder(backbone, projection, pooling, normalize)
    layers = list(backbone.encoder.layer)
    backbone.encoder.layer = nn.ModuleList(layers[:-1])
    return PooledEncoder(backbone, projection, pooling, normalize, FirstTokenLayer(layers[-1], len(layers) - 1))


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


def build_pooled_encoder(resolved: ResolvedSource, spec: EncoderSpec, first_token: bool = True) -> PooledEncoder:
    """Wrap a freshly loaded source model for export. ``first_token``: run the last layer for the first
    token only where the pooling allows it (:func:`with_first_token_layer`); False gives the full model
    (what the benchmarks' OpenVINO peer exports, as its users do)."""
    check_pooling(resolved, spec.pooling)
    model = load_hf_model(resolved, eager_attention=True)
    backbone: Any = model
    projection = None
    if resolved.kind == "dpr":
        inner: Any = model.question_encoder if resolved.architecture == "DPRQuestionEncoder" else model.ctx_encoder
        projection = inner.encode_proj if getattr(inner, "projection_dim", 0) > 0 else None
        backbone = inner.bert_model
    if first_token:
        return with_first_token_layer(backbone, projection, spec.pooling, spec.normalize).eval()
    return PooledEncoder(backbone, projection, spec.pooling, spec.normalize).eval()


def embedding_dim(resolved: ResolvedSource) -> int:
    """The embedding size: DPR's projection_dim when > 0, else the hidden size."""
    projection = int(resolved.config.get("projection_dim") or 0)
    return projection if resolved.kind == "dpr" and projection > 0 else int(resolved.config["hidden_size"])
