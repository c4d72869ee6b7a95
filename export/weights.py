"""Which weights file a checkpoint directory is loaded from, and which tensors it holds.

Preference: safetensors, then PyTorch ``.bin``, then a Keras 2 ``tf_model.h5`` (read without TensorFlow,
:mod:`.keras_h5`). The choice, and what else was present, goes into the manifest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fastdpr.common.errors import ExportError

WeightsFormat = Literal["safetensors", "pytorch", "keras-h5"]


@dataclass(frozen=True)
class WeightsFormatSpec:
    """One weights format: its single-file name and its shard index name."""

    format: WeightsFormat
    file: str
    index: str


#: In order of preference.
WEIGHTS_FORMATS: tuple[WeightsFormatSpec, ...] = (
    WeightsFormatSpec("safetensors", "model.safetensors", "model.safetensors.index.json"),
    WeightsFormatSpec("pytorch", "pytorch_model.bin", "pytorch_model.bin.index.json"),
    WeightsFormatSpec("keras-h5", "tf_model.h5", "tf_model.h5.index.json"),
)
#: Buffers a checkpoint may or may not carry (recomputed at construction): never a loading error.
KNOWN_BUFFERS = ("position_ids", "token_type_ids")
#: What makes a checkpoint "carry BERT's pooler".
POOLER_TENSORS = ("pooler.dense.weight", "pooler.dense.bias")


@dataclass(frozen=True)
class WeightsFile:
    """The weights a checkpoint is loaded from."""

    format: WeightsFormat
    file: str  # relative to the checkpoint directory (the index file when sharded)
    sharded: bool
    also_present: tuple[str, ...]  # other weights files in the directory, not used

    def describe(self) -> dict[str, Any]:
        """What the manifest records."""
        return {"format": self.format, "file": self.file, "sharded": self.sharded,
                "also_present": list(self.also_present)}


def find_weights(directory: Path) -> WeightsFile:
    """The preferred weights file of ``directory``; a clear error when there is none it can read."""
    present = [(spec, name, sharded) for spec in WEIGHTS_FORMATS
               for name, sharded in ((spec.file, False), (spec.index, True)) if (directory / name).is_file()]
    keras3 = sorted(p.name for p in directory.glob("*.keras")) + sorted(
        p.name for p in directory.glob("*.weights.h5"))
    if not present:
        if keras3:
            raise ExportError(f"{directory}: Keras 3 files ({', '.join(keras3)}) are not supported; "
                              "fastdpr reads safetensors, pytorch_model.bin, or Keras 2 tf_model.h5")
        raise ExportError(f"{directory} has no weights file (looked for "
                          f"{', '.join(spec.file for spec in WEIGHTS_FORMATS)})")
    spec, name, sharded = present[0]
    if spec.format == "keras-h5":
        from .keras_h5 import check_supported_h5

        check_supported_h5(directory / spec.file)
    return WeightsFile(spec.format, name, sharded, tuple(n for _, n, _ in present[1:]))


def tensor_names(directory: Path, weights: WeightsFile) -> set[str]:
    """The state-dict keys the weights file holds (PyTorch naming; read without loading the tensors
    where the format allows)."""
    path = directory / weights.file
    if weights.sharded:
        index = json.loads(path.read_text(encoding="utf-8"))
        return set(index.get("weight_map", {}))
    if weights.format == "safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="np") as handle:
            return set(handle.keys())
    if weights.format == "pytorch":
        import torch

        return set(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
    from .keras_h5 import read_h5_state_dict

    return set(read_h5_state_dict(path))


def carries_pooler(names: set[str]) -> bool:
    """Whether the tensors include BERT's pooler (under any model prefix, e.g. ``bert.pooler...``)."""
    return all(any(name == tensor or name.endswith("." + tensor) for name in names) for tensor in POOLER_TENSORS)


def is_known_buffer(key: str) -> bool:
    """A buffer that is rebuilt at construction, whose absence or presence never changes the model."""
    return key.rsplit(".", 1)[-1] in KNOWN_BUFFERS
