"""Turning a plain BERT checkpoint into a DPR-class checkpoint by copying its weights.

``DPRQuestionEncoder.from_pretrained(<a BERT dir>)`` silently gives random weights (the key prefixes
differ), so the state dict is copied into ``.question_encoder.bert_model`` / ``.ctx_encoder.bert_model``
and the result is checked against the source model's CLS vector.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from fastdpr.common.errors import ExportError
from fastdpr.model.spec import Side

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def make_dpr_checkpoint(bert_dir: Path, side: Side, out_dir: Path) -> Path:
    """Save a ``DPRQuestionEncoder`` (question) or ``DPRContextEncoder`` (context) holding the weights of
    the BERT model in ``bert_dir``, with its tokenizer files, to ``out_dir``; return ``out_dir``."""
    import torch
    from transformers import BertModel, DPRConfig, DPRContextEncoder, DPRQuestionEncoder

    bert = BertModel.from_pretrained(bert_dir, add_pooling_layer=False).eval()
    config = DPRConfig(**{k: v for k, v in bert.config.to_dict().items() if hasattr(DPRConfig(), k)})
    config.projection_dim = 0
    # Any: transformers types these submodules as Tensor | Module.
    model: Any
    if side == "question":
        model = DPRQuestionEncoder(config)
        target: Any = model.question_encoder.bert_model
    else:
        model = DPRContextEncoder(config)
        target = model.ctx_encoder.bert_model
    missing, unexpected = target.load_state_dict(bert.state_dict(), strict=False)
    if missing or unexpected:
        raise ExportError(f"copying {bert_dir} into a DPR encoder left keys missing={missing} unexpected={unexpected}")
    model.eval()
    ids = torch.tensor([[101, 7592, 2088, 102]])
    with torch.no_grad():
        cls = bert(input_ids=ids).last_hidden_state[:, 0]
        pooled = model(input_ids=ids).pooler_output
    if not torch.allclose(cls, pooled, atol=1e-5):
        raise ExportError("the DPR checkpoint does not reproduce the source BERT's CLS vector")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    for name in _TOKENIZER_FILES:
        if (bert_dir / name).is_file():
            shutil.copy2(bert_dir / name, out_dir / name)
    return out_dir
