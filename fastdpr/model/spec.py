"""The frozen description of an exported encoder pair: everything the runtime needs to reproduce it.

The spec is written into every artifact's and index's manifest; the runtime never branches on a model
name, only on these fields.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from fastdpr.common.errors import ArtifactError

Pooling = Literal["cls", "mean", "pooler"]
TokenTypes = Literal["zeros", "pair"]
Side = Literal["question", "context"]
SIDES: tuple[Side, Side] = ("question", "context")
POOLINGS: tuple[str, ...] = ("cls", "mean", "pooler")
TOKEN_TYPES: tuple[str, ...] = ("zeros", "pair")


@dataclass(frozen=True)
class EncoderSpec:
    """How text becomes an embedding, for both sides of a bi-encoder.

    Attributes:
        dim: embedding size (after projection, if any).
        pooling: ``cls`` (DPR: the first token's vector), ``mean`` (attention-masked mean) or ``pooler``
            (BERT's trained pooler, ``tanh(dense(CLS))``: the ``pooler_output`` of a BertModel).
        normalize: whether the graph L2-normalizes the embedding.
        token_types: what the second segment of a (title, text) pair gets: ``zeros`` (original DPR
            code) or ``pair`` (the tokenizer's type ids: 1 for the second segment).
        question_max_length: token limit for questions (special tokens included).
        passage_max_length: token limit for (title, text) passages (special tokens included).
        lowercase: whether the tokenizer lower-cases (informational; the tokenizer does it).
        pad_token_id: the id padding positions get (masked out; kept for bit-exact parity).
        similarity: always ``dot``: embeddings are compared by inner product.
    """

    dim: int
    pooling: Pooling = "cls"
    normalize: bool = False
    token_types: TokenTypes = "zeros"
    question_max_length: int = 64
    passage_max_length: int = 256
    lowercase: bool = True
    pad_token_id: int = 0
    similarity: Literal["dot"] = "dot"

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ArtifactError(f"unknown pooling {self.pooling!r}; expected one of {POOLINGS}")
        if self.token_types not in TOKEN_TYPES:
            raise ArtifactError(f"unknown token types {self.token_types!r}; expected one of {TOKEN_TYPES}")
        if self.similarity != "dot":
            raise ArtifactError(f"unsupported similarity {self.similarity!r}; fastdpr uses 'dot'")
        for name in ("dim", "question_max_length", "passage_max_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ArtifactError(f"spec field {name} must be a positive integer, got {value!r}")

    def max_length(self, side: Side) -> int:
        """The token limit for ``side``."""
        return self.question_max_length if side == "question" else self.passage_max_length

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderSpec:
        """Read a spec written by :meth:`to_dict`; unknown or missing fields are a clear error."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ArtifactError(f"spec has unknown fields {sorted(unknown)}: written by a newer fastdpr?")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ArtifactError(f"spec is incomplete: {exc}") from exc
