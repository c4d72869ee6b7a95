"""Reading a Keras 2 ``tf_model.h5`` (``save_weights`` layout) into a PyTorch state dict, without TensorFlow.

transformers' own ``from_tf=True`` imports TensorFlow (and tf-keras under Keras 3), and transformers 5
removed TensorFlow support entirely, so the file is read with ``h5py`` and the variable names are
converted the way ``transformers.modeling_tf_pytorch_utils.convert_tf_weight_name_to_pt_weight_name``
does for 2-d and 1-d weights (the only ranks a BERT has).

The layout (``keras.src.saving.legacy.hdf5_format.save_weights_to_hdf5_group``): the root group's
attribute ``layer_names`` lists the top-level layers (split into ``layer_names0``, ``layer_names1``, ...
when it outgrows HDF5's 64 KB attribute limit); each layer's group lists ``weight_names``, which are
also the dataset paths inside that group, e.g. ``tf_bert_model/bert/encoder/layer_._0/attention/self/
query/kernel:0``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from fastdpr.common.errors import ExportError

#: ``$1___$2`` scopes become ``$2`` (transformers' convention for duplicated or removed TF layers).
_SCOPE_ALIAS = re.compile(r"/[^/]*___([^/]*)/")
_RENAMED_LEAVES = {"kernel": "weight", "gamma": "weight", "beta": "bias", "embeddings": "weight"}


def _attribute_list(group: Any, name: str) -> list[str]:
    """An attribute written whole (``name``) or in chunks (``name0``, ``name1``, ...), decoded."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values = []
        chunk = 0
        while f"{name}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{name}{chunk}"])
            chunk += 1
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def pytorch_name(tf_name: str, rank: int) -> tuple[str, bool]:
    """The PyTorch state-dict key of a TF variable and whether its array must be transposed.

    ``tf_bert_model/bert/encoder/layer_._0/attention/self/query/kernel:0`` becomes
    ``bert.encoder.layer.0.attention.self.query.weight`` (transposed): ``:0`` stripped, ``_._`` made a
    level separator, the first level (the Keras model's name) dropped, ``kernel``/``gamma``/``beta``/
    ``embeddings`` renamed to ``weight``/``weight``/``bias``/``weight``.
    """
    name = tf_name.replace(":0", "")
    name = _SCOPE_ALIAS.sub(r"/\1/", name)
    name = re.sub(r"//+", "/", name.replace("_._", "/"))
    levels = name.split("/")
    if len(levels) > 1:
        levels = levels[1:]
    leaf = levels[-1]
    if leaf == "kernel" and rank != 2:
        raise ExportError(f"TF variable {tf_name} is a {rank}-d kernel; only dense (2-d) kernels are supported")
    transpose = leaf == "kernel"
    levels[-1] = _RENAMED_LEAVES.get(leaf, leaf)
    return ".".join(levels), transpose


def check_supported_h5(path: Path) -> None:
    """Refuse, with a one-line reason, what this reader does not understand (sharded or Keras 3 files)."""
    import h5py

    if path.with_name(path.name + ".index.json").is_file():
        raise ExportError(f"{path.name}.index.json: sharded TF checkpoints are not supported; "
                          "convert the checkpoint to PyTorch or safetensors weights")
    try:
        with h5py.File(path, "r") as handle:
            if "layer_names" in handle.attrs or "layer_names0" in handle.attrs:
                return
            keras3 = "vars" in handle or "layers" in handle or "_layer_checkpoint_dependencies" in handle
    except OSError as exc:
        raise ExportError(f"cannot read {path} as HDF5: {exc}") from exc
    if keras3:
        raise ExportError(f"{path}: a Keras 3 weights file (vars/ layout) is not supported; only Keras 2 "
                          "save_weights files (what transformers' TF save_pretrained writes) are")
    raise ExportError(f"{path}: no 'layer_names' attribute; not a Keras 2 save_weights file")


def read_h5_state_dict(path: Path) -> dict[str, np.ndarray]:
    """Every weight of a Keras 2 ``save_weights`` file, as ``{PyTorch key: float32 array}``.

    Kernels are transposed (Keras stores ``[in, out]``, ``nn.Linear`` ``[out, in]``); the arrays are
    exactly the stored values otherwise.
    """
    import h5py

    check_supported_h5(path)
    state: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}
    with h5py.File(path, "r") as handle:
        for layer in _attribute_list(handle, "layer_names"):
            group = handle[layer]
            for weight in _attribute_list(group, "weight_names"):
                array = np.asarray(group[weight])
                key, transpose = pytorch_name(weight, array.ndim)
                if key in state:
                    raise ExportError(f"{path}: TF variables {origin[key]} and {weight} both map to {key}")
                state[key] = np.ascontiguousarray(array.T if transpose else array)
                origin[key] = weight
    if not state:
        raise ExportError(f"{path} holds no weights")
    return state
