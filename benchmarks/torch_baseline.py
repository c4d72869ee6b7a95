"""PyTorch baselines as DPR users run them today: Hugging Face tokenizer + model, CPU, fp32."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fastdpr.model.spec import EncoderSpec, Side


class TorchEncoder:
    """One side of a bi-encoder in PyTorch, following the same spec as the exported artifact.

    ``pad_to_max_length`` pads every batch to the spec's max length (what DPR's own code and the
    nlpconnect card do); otherwise batches are padded to their longest member. ``sort_by_length``
    batches inputs of similar length together, as fastdpr does.
    """

    def __init__(self, source_dir: str, architecture: str, kind: str, spec: EncoderSpec, side: Side,
                 threads: int, pad_to_max_length: bool = False, sort_by_length: bool = True) -> None:
        import tempfile
        from pathlib import Path

        import torch
        import transformers

        from fastdpr_export.sources import resolve_source
        from fastdpr_export.torch_model import load_hf_model

        torch.set_num_threads(threads)
        self.torch = torch
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(source_dir, use_fast=True)
        # The exporter's own strict loader: the class the config (or side) names, the weights file it
        # prefers (Keras 2 tf_model.h5 without TensorFlow), BERT's pooler when the checkpoint carries it.
        resolved = resolve_source(source_dir, side, Path(tempfile.gettempdir()))
        if (resolved.kind, resolved.architecture) != (kind, architecture) and kind == "dpr":
            raise ValueError(f"{source_dir} resolves to {resolved.architecture}, not {architecture}")
        self.model: Any = load_hf_model(resolved, eager_attention=False)
        self.kind = kind
        self.spec = spec
        self.side = side
        self.pad_to_max_length = pad_to_max_length
        self.sort_by_length = sort_by_length

    def tokenize(self, inputs: Sequence[Any]) -> dict[str, Any]:
        """HF tokenization with the spec's max length and token-types convention."""
        max_length = self.spec.max_length(self.side)
        padding: Any = "max_length" if self.pad_to_max_length else True
        if self.side == "question":
            batch = self.tokenizer(list(inputs), truncation=True, max_length=max_length, padding=padding,
                                   return_tensors="pt")
        else:
            titles = [title for title, _ in inputs]
            texts = [text for _, text in inputs]
            batch = self.tokenizer(titles, texts, truncation=True, max_length=max_length, padding=padding,
                                   return_tensors="pt")
        if self.spec.token_types == "zeros":
            batch["token_type_ids"] = self.torch.zeros_like(batch["input_ids"])
        return dict(batch)

    def token_lengths(self, inputs: Sequence[Any]) -> list[int]:
        """Token counts after truncation (what length-sorted batching sorts by)."""
        max_length = self.spec.max_length(self.side)
        if self.side == "question":
            ids = self.tokenizer(list(inputs), truncation=True, max_length=max_length)["input_ids"]
        else:
            ids = self.tokenizer([t for t, _ in inputs], [x for _, x in inputs], truncation=True,
                                 max_length=max_length)["input_ids"]
        return [len(row) for row in ids]

    def run(self, batch: dict[str, Any]) -> np.ndarray:
        """The model on a tokenized batch -> embeddings."""
        with self.torch.inference_mode():
            if self.kind == "dpr" or self.spec.pooling == "pooler":
                # DPR classes: their pooler_output (CLS, projected); a BertModel: BERT's trained pooler.
                pooled = self.model(**batch).pooler_output
            else:
                hidden = self.model(**batch).last_hidden_state
                if self.spec.pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    mask = batch["attention_mask"].unsqueeze(-1).float()
                    pooled = (hidden * mask).sum(1) / mask.sum(1)
            if self.spec.normalize:
                pooled = self.torch.nn.functional.normalize(pooled, dim=-1)
        return np.asarray(pooled.float().numpy(), dtype=np.float32)

    def encode(self, inputs: Sequence[Any], batch_size: int = 32) -> np.ndarray:
        """Embed all inputs, in input order."""
        order = np.argsort(self.token_lengths(inputs), kind="stable") if self.sort_by_length else np.arange(len(inputs))
        out = np.zeros((len(inputs), self.spec.dim), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            out[rows] = self.run(self.tokenize([inputs[i] for i in rows]))
        return out
