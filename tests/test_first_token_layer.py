"""The exported last layer runs for the first token only (CLS / pooler pooling): the same embeddings as the
full model, nodes named as the full model names them, and recorded decisions replayable on a full graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_tiny_dpr, require_export

require_export()

import torch  # noqa: E402

from fastdpr.common.errors import ExportError  # noqa: E402
from fastdpr.model.spec import EncoderSpec  # noqa: E402
from fastdpr_export.onnx_export import export_onnx  # noqa: E402
from fastdpr_export.quantize import replayed_nodes  # noqa: E402
from fastdpr_export.sources import resolve_source  # noqa: E402
from fastdpr_export.torch_model import (  # noqa: E402
    PooledEncoder,
    build_pooled_encoder,
    first_token_applies,
    load_hf_model,
    with_first_token_layer,
)


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three inputs of 23, 9 and 2 real tokens padded to 23: the padded keys must not be attended to."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (3, 23), generator=generator)
    ids[:, 0] = 101
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    mask[2, 2:] = 0
    return ids * mask, mask, torch.zeros_like(ids)


def _backbone(directory: Path, side: str, tmp_path: Path) -> tuple[Any, Any]:
    """(a fresh backbone, DPR's projection or None) of the checkpoint in ``directory``."""
    resolved = resolve_source(str(directory), side, tmp_path)
    model: Any = load_hf_model(resolved, eager_attention=True)
    inner = model.question_encoder if side == "question" else model.ctx_encoder
    projection = inner.encode_proj if getattr(inner, "projection_dim", 0) > 0 else None
    return inner.bert_model, projection


@pytest.mark.parametrize("projection_dim,pooling", [(0, "cls"), (16, "cls"), (0, "pooler")])
def test_first_token_layer_gives_the_full_models_embeddings(tmp_path: Path, projection_dim: int,
                                                            pooling: str) -> None:
    directory = make_tiny_dpr(tmp_path / "model", "context", projection_dim=projection_dim, seed=3, layers=3)
    full_backbone, full_projection = _backbone(directory, "context", tmp_path)
    backbone, projection = _backbone(directory, "context", tmp_path)
    if pooling == "pooler":  # a BERT pooler with trained-looking weights, the same in both models
        from transformers.models.bert.modeling_bert import BertPooler

        torch.manual_seed(7)
        full_backbone.pooler = BertPooler(full_backbone.config)
        backbone.pooler = BertPooler(backbone.config)
        backbone.pooler.load_state_dict(full_backbone.pooler.state_dict())
    full = PooledEncoder(full_backbone, full_projection, pooling, normalize=False).eval()
    first = with_first_token_layer(backbone, projection, pooling, normalize=False).eval()
    assert first.final_layer is not None and len(first.backbone.encoder.layer) == 2
    with torch.no_grad():
        expected, got = full(*_batch()), first(*_batch())
    assert got.shape == expected.shape == (3, projection_dim or 32)
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=1e-5)
    # Not a constant: the three inputs embed differently.
    assert float(torch.cdist(got, got).max()) > 0.1


def test_exported_nodes_take_the_full_models_names(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    directory = make_tiny_dpr(tmp_path / "model", "question", seed=4, layers=3)
    resolved = resolve_source(str(directory), "question", tmp_path)
    spec = EncoderSpec(dim=32, pooling="cls", normalize=False, token_types="zeros")
    paths = {}
    for first_token in (True, False):
        paths[first_token] = tmp_path / f"first-{first_token}.onnx"
        export_onnx(build_pooled_encoder(resolved, spec, first_token=first_token), paths[first_token])
    names = {key: {n.name for n in onnx.load(str(path)).graph.node} for key, path in paths.items()}
    weighted = {"/attention/self/query/MatMul", "/attention/self/key/MatMul", "/attention/self/value/MatMul",
                "/attention/output/dense/MatMul", "/intermediate/dense/MatMul", "/output/dense/MatMul"}
    assert {f"/backbone/encoder/layer.2{suffix}" for suffix in weighted} <= names[True] & names[False]
    assert not [name for name in names[True] if name.startswith("/final_layer/")]
    ids, mask, types = (tensor.numpy() for tensor in _batch())
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    outputs = {key: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
               for key, path in paths.items()}
    np.testing.assert_allclose(outputs[True], outputs[False], atol=2e-6)


def test_mean_pooling_and_relative_positions_keep_the_full_layer(tmp_path: Path) -> None:
    directory = make_tiny_dpr(tmp_path / "model", "question", seed=5, layers=2)
    backbone, _ = _backbone(directory, "question", tmp_path)
    assert first_token_applies(backbone, "cls") and first_token_applies(backbone, "pooler")
    assert not first_token_applies(backbone, "mean")  # mean pooling reads every token
    backbone.config.position_embedding_type = "relative_key"  # adds score terms FirstTokenLayer lacks
    assert not first_token_applies(backbone, "cls")
    assert with_first_token_layer(backbone, None, "cls", normalize=False).final_layer is None


def test_kept_nodes_replay_on_a_full_graph(tmp_path: Path) -> None:
    """A first-token artifact keeps its last layer's query MatMul fp32: on a full graph of the same model
    (the benchmarks' optimum peer) that query is inside the layer's fused Attention, which stays int8 (the
    peer never runs more fp32 than the artifact); names in neither graph are an error."""
    import onnx

    from fastdpr_export.fusion import fuse

    directory = make_tiny_dpr(tmp_path / "model", "question", seed=6, layers=2)
    resolved = resolve_source(str(directory), "question", tmp_path)
    spec = EncoderSpec(dim=32, pooling="cls", normalize=False, token_types="zeros")
    export_onnx(build_pooled_encoder(resolved, spec, first_token=False), tmp_path / "full.onnx")
    fuse(tmp_path / "full.onnx", tmp_path / "full.fused.onnx", num_heads=4, hidden_size=32, num_layers=2)
    graph = onnx.load(str(tmp_path / "full.fused.onnx")).graph
    kept = ["/backbone/encoder/layer.1/attention/self/query/MatMul", "/backbone/encoder/layer.1/output/dense/MatMul",
            "/backbone/encoder/layer.1/attention/self/key/MatMul"]
    assert replayed_nodes(graph, kept, tmp_path) == (["/backbone/encoder/layer.1/output/dense/MatMul"],
                                                     [kept[0], kept[2]])
    with pytest.raises(ExportError, match="cannot replay kept fp32 nodes"):
        replayed_nodes(graph, ["/backbone/encoder/layer.9/output/dense/MatMul"], tmp_path)
