"""PyTorch fp32 as DPR users run it: Hugging Face tokenizer + model, exact numpy search, list lookup."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from benchmarks.latency.systems.base import ListSearch, SetupContext, SystemSpec
from fastdpr.model.spec import SIDES


class TorchSystem(ListSearch):
    """:class:`benchmarks.torch_baseline.TorchEncoder` for both sides.

    ``padded``: every batch padded to the spec's max length, inputs in their own order (DPR's own code);
    otherwise length-sorted batches padded to their longest (the best batching a PyTorch user can do).
    """

    def __init__(self, name: str, context: SetupContext, padded: bool) -> None:
        from benchmarks.torch_baseline import TorchEncoder

        super().__init__()
        self.name = name
        self.batch_size = context.batch_size
        resolved = context.resolved
        self.encoders = {
            side: TorchEncoder(str(resolved[side].directory), resolved[side].architecture, resolved[side].kind,
                               context.spec, side, context.threads, pad_to_max_length=padded,
                               sort_by_length=not padded)
            for side in SIDES
        }

    def encode_passages(self, passages: Sequence[tuple[str, str]]) -> np.ndarray:
        return self.encoders["context"].encode(passages, self.batch_size)

    def embed_question(self, question: str) -> tuple[Any, Callable[[Any], np.ndarray]]:
        encoder = self.encoders["question"]
        return encoder.tokenize([question]), encoder.run


ADAPTERS = (
    SystemSpec("pytorch-fp32-padded", "baseline",
               "HF tokenizer + PyTorch fp32, batches padded to max length, input order (DPR's own code); "
               "exact numpy top-100, list lookup",
               lambda context: TorchSystem("pytorch-fp32-padded", context, padded=True), order=0),
    SystemSpec("pytorch-fp32-sorted", "baseline",
               "HF tokenizer + PyTorch fp32, length-sorted batches padded to their longest (one question: "
               "padded to its own length); exact numpy top-100, list lookup",
               lambda context: TorchSystem("pytorch-fp32-sorted", context, padded=False), order=1),
)
