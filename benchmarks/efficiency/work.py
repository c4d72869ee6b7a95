"""The arithmetic work of one encoder call: multiply-accumulates of an exported ONNX graph, counted per node.

An operation (op) is one multiply or one add, so a multiply-accumulate (MAC) is 2 ops, as GOP/s figures and
CPU peaks count them. Only the matrix products are counted (``MatMul``, ``MatMulInteger``, ``Gemm``, the fused
``Attention`` / ``QAttention``, ...); elementwise and normalization ops (``LayerNormalization``,
``BiasGelu``, the quantization arithmetic, ...) are listed by name as *not counted*: on these graphs they are
a few ops per element against hundreds of MACs per element in the products.

Each counted MAC is one of three kinds:

* ``int8_gemm``: a product with int8 weights (``MatMulInteger``, ``QAttention``'s QKV projection, ...);
* ``fp32_gemm``: a product with fp32 weights (nodes a recipe keeps fp32, or a whole fp32 model);
* ``fp32_attention``: activation x activation products: attention scores ``Q K^T`` and context
  ``softmax V``, which ONNX Runtime computes in fp32 inside ``Attention`` and ``QAttention`` alike.

Shapes come from the graph itself, run once per ``(batch, sequence)`` with every counted node's input and
output exposed (optimizations off, so the nodes are the file's). Why not ``onnx.shape_inference``: it knows
no ``com.microsoft`` op, so every shape after ``EmbedLayerNormalization`` is unknown; ONNX Runtime's
``symbolic_shape_infer`` has no rule for ``QAttention``. Weight shapes are read from the initializers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fastdpr.common.errors import FastDPRError

Kind = Literal["int8_gemm", "fp32_gemm", "fp32_attention"]
KINDS: tuple[Kind, ...] = ("int8_gemm", "fp32_gemm", "fp32_attention")

#: Products whose MACs are ``prod(output shape) x K`` with K the last axis of input ``a`` (the op's first
#: input unless noted), and the kind of each: int8 when the op multiplies integer inputs.
_MATMULS: dict[str, tuple[int, Kind | None]] = {
    "MatMul": (0, None),  # None: fp32_gemm with a weight operand, fp32_attention with two activations
    "FusedMatMul": (0, None),
    "MatMulInteger": (0, "int8_gemm"),
    "DynamicQuantizeMatMul": (0, "int8_gemm"),
    "MatMulIntegerToFloat": (0, "int8_gemm"),
    "QLinearMatMul": (0, "int8_gemm"),
}
_GEMMS: dict[str, Kind] = {"Gemm": "fp32_gemm", "QGemm": "int8_gemm"}
_ATTENTIONS: dict[str, Kind] = {"Attention": "fp32_gemm", "QAttention": "int8_gemm"}
#: Ops that do matrix work this counter has no rule for: a graph holding one is refused, never undercounted.
_UNCOUNTABLE = frozenset({"Conv", "ConvInteger", "QLinearConv", "ConvTranspose", "Einsum", "MultiHeadAttention",
                          "GroupQueryAttention", "PackedAttention", "PackedMultiHeadAttention", "DecoderAttention",
                          "LongformerAttention", "MatMulNBits", "MatMulBnb4", "GatherBlockQuantized"})


class WorkCountError(FastDPRError):
    """A graph whose work cannot be counted (an op without a rule, an input the probe cannot feed)."""


@dataclass(frozen=True)
class NodeWork:
    """The MACs of one node at one shape, split by kind (an attention node has two kinds)."""

    node: str
    op_type: str
    macs: dict[Kind, int]


@dataclass(frozen=True)
class Work:
    """The MACs of one call of a graph on ``batch`` inputs of ``sequence`` tokens."""

    batch: int
    sequence: int
    nodes: tuple[NodeWork, ...]
    #: Op types present in the graph whose work is not counted (elementwise, normalization, data movement).
    not_counted: tuple[str, ...]

    def macs(self, kind: Kind | None = None) -> int:
        """MACs of one kind, or of all kinds."""
        return sum(n.macs.get(k, 0) for n in self.nodes for k in (KINDS if kind is None else (kind,)))

    def ops(self, kind: Kind | None = None) -> int:
        """Operations (2 x MACs) of one kind, or of all kinds."""
        return 2 * self.macs(kind)

    def ops_by_op_type(self) -> dict[str, int]:
        """Operations (all kinds) per op type of the file's nodes."""
        out: dict[str, int] = {}
        for node in self.nodes:
            out[node.op_type] = out.get(node.op_type, 0) + 2 * sum(node.macs.values())
        return out

    def to_dict(self) -> dict[str, Any]:
        """The counts a result file records (ops, not MACs: the unit of GOP/s)."""
        return {"batch": self.batch, "sequence": self.sequence, "ops": {k: self.ops(k) for k in KINDS},
                "total_ops": self.ops(), "not_counted_op_types": list(self.not_counted)}


class WorkCounter:
    """Counts the MACs of one ONNX graph at any ``(batch, sequence)``; one probe session, reused."""

    def __init__(self, model_path: Path) -> None:
        import onnx
        import onnxruntime as ort
        from onnx import helper

        model = onnx.load(str(model_path))
        graph = model.graph
        self._weights = {t.name: tuple(int(d) for d in t.dims) for t in graph.initializer}
        for node in graph.node:  # Constant nodes hold weights too (the exporter's folded tensors)
            if node.op_type == "Constant":
                value = next((a.t for a in node.attribute if a.name == "value"), None)
                if value is not None:
                    self._weights[node.output[0]] = tuple(int(d) for d in value.dims)
        unknown = sorted({n.op_type for n in graph.node} & _UNCOUNTABLE)
        if unknown:
            raise WorkCountError(f"{model_path}: no counting rule for {', '.join(unknown)}")
        counted = {*_MATMULS, *_GEMMS, *_ATTENTIONS}
        self._nodes = [n for n in graph.node if n.op_type in counted]
        self.not_counted = tuple(sorted({n.op_type for n in graph.node if n.op_type not in counted}
                                        - {"Constant", "Identity"}))
        self._probed = sorted({name for n in self._nodes for name in (*n.input, n.output[0])
                               if name and name not in self._weights})
        outputs = {o.name for o in graph.output}
        graph.output.extend(helper.make_empty_tensor_value_info(name) for name in self._probed
                            if name not in outputs)
        self._inputs = [(i.name, i.type.tensor_type.elem_type) for i in graph.input if i.name not in self._weights]
        options = ort.SessionOptions()
        # The file's own nodes: ORT's optimizer would fuse or rename the nodes whose tensors are probed.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(model.SerializeToString(), sess_options=options,
                                             providers=["CPUExecutionProvider"])
        self._cache: dict[tuple[int, int], Work] = {}

    def count(self, batch: int, sequence: int) -> Work:
        """The work of one call on ``batch`` inputs of ``sequence`` tokens (cached per shape)."""
        if (batch, sequence) not in self._cache:
            self._cache[batch, sequence] = self._count(batch, sequence)
        return self._cache[batch, sequence]

    def _count(self, batch: int, sequence: int) -> Work:
        feeds = {}
        for name, elem_type in self._inputs:
            if elem_type != 7:  # onnx.TensorProto.INT64: token ids, masks, token types
                raise WorkCountError(f"graph input {name!r} is not int64 token data; cannot feed the shape probe")
            # Ones: a valid token id, a full attention mask, and a valid token type for any BERT-like graph.
            feeds[name] = np.ones((batch, sequence), dtype=np.int64)
        shapes = {name: tuple(int(d) for d in np.shape(value))
                  for name, value in zip(self._probed, self._session.run(self._probed, feeds), strict=True)}
        shapes.update(self._weights)
        return Work(batch=batch, sequence=sequence,
                    nodes=tuple(_node_work(node, shapes, self._weights) for node in self._nodes),
                    not_counted=self.not_counted)


def _node_work(node: Any, shapes: dict[str, tuple[int, ...]], weights: dict[str, tuple[int, ...]]) -> NodeWork:
    """One node's MACs from its input and output shapes."""
    op = node.op_type
    out = shapes[node.output[0]]
    if op in _MATMULS:
        a_index, kind = _MATMULS[op]
        a = shapes[node.input[a_index]]
        b_name = node.input[3 if op == "QLinearMatMul" else 1]
        if kind is None:
            kind = "fp32_gemm" if b_name in weights else "fp32_attention"
        transposed = op == "FusedMatMul" and _attribute(node, "transA", 0)
        k = a[-2] if transposed else a[-1]
        return NodeWork(node.name, op, {kind: prod(out) * k})
    if op in _GEMMS:
        a = shapes[node.input[0]]
        k = a[0] if _attribute(node, "transA", 0) else a[1]
        return NodeWork(node.name, op, {_GEMMS[op]: prod(out) * k})
    # Attention / QAttention: input [batch, sequence, hidden_in], weight [hidden_in, q + k + v hidden].
    past = 4 if op == "Attention" else 8
    if len(node.input) > past and node.input[past]:
        raise WorkCountError(f"{node.name}: attention with a past state has no counting rule")
    batch, sequence, hidden_in = shapes[node.input[0]]
    qkv = shapes[node.input[1]][1]
    q_hidden, _, v_hidden = _attribute(node, "qkv_hidden_sizes", [qkv // 3] * 3)
    return NodeWork(node.name, op, {
        _ATTENTIONS[op]: batch * sequence * hidden_in * qkv,  # the QKV projection
        # scores Q K^T ([s, head] x [head, s] per head: s*s*q_hidden over all heads), then softmax(.) V
        "fp32_attention": batch * sequence * sequence * (q_hidden + v_hidden),
    })


def _attribute(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def mean_ops(counter: WorkCounter, lengths: Iterable[int], kind: Kind | None = None) -> float:
    """Mean operations per input when each input is its own call (``batch=1``, its own token length)."""
    values = [counter.count(1, n).ops(kind) for n in lengths]
    if not values:
        raise WorkCountError("no inputs to count")
    return float(np.mean(values))


def mean_ops_by_op_type(counter: WorkCounter, lengths: Iterable[int]) -> dict[str, float]:
    """Mean operations per input and op type of the file's nodes, each input its own call."""
    works = [counter.count(1, n) for n in lengths]
    if not works:
        raise WorkCountError("no inputs to count")
    types = sorted({op for w in works for op in w.ops_by_op_type()})
    return {op: float(np.mean([w.ops_by_op_type().get(op, 0) for w in works])) for op in types}
