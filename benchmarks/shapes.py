"""Random-weight DPR question/context pairs of a given shape, for speed measurements only.

A shape fixes what decides the cost of a forward pass (layers, hidden size, heads, FFN size) without
downloading a checkpoint. The weights are random (DPR's own initialization, seeded), so every number
measured on them is a *speed* number: nothing about retrieval quality may be read from them, and every
report that uses one says "RANDOM WEIGHTS".

The tokenizer is the packaged all-MiniLM-L6-v2 one (BERT uncased WordPiece, 30,522 entries), so
tokenization costs what it costs for real BERT-based DPR checkpoints.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from fastdpr.model.spec import Side

VOCAB_SIZE = 30522


@dataclass(frozen=True)
class Shape:
    """The size of a BERT encoder."""

    name: str
    layers: int
    hidden: int
    heads: int
    ffn: int
    note: str

    def to_dict(self) -> dict[str, Any]:
        """What the benchmark reports record."""
        return {**asdict(self), "vocab_size": VOCAB_SIZE, "parameters": self.parameters()}

    def parameters(self) -> int:
        """Parameter count of one encoder (embeddings + layers, no pooler, no projection)."""
        h, f = self.hidden, self.ffn
        embeddings = (VOCAB_SIZE + 512 + 2) * h + 2 * h
        layer = 4 * (h * h + h) + 2 * h + (h * f + f) + (f * h + h) + 2 * h
        return embeddings + self.layers * layer


SHAPES: dict[str, Shape] = {
    s.name: s
    for s in (
        Shape("bert-base", 12, 768, 12, 3072, "BERT-base, the shape of the RDR / facebook DPR checkpoints"),
        Shape("l2-h128", 2, 128, 2, 512, "the shape of nlpconnect's tiny DPR pair"),
        Shape("l12-h128", 12, 128, 2, 512, "12 narrow layers: depth without width"),
    )
}


def build_shape(name: str, out_dir: Path, seed: int = 0, initializer_range: float | None = None) -> dict[Side, Path]:
    """Save a random-weight ``DPRQuestionEncoder`` and ``DPRContextEncoder`` of shape ``name`` (with the
    packaged MiniLM tokenizer files) under ``out_dir``; return their directories by side.

    The models are seeded (``seed`` for the question encoder, ``seed + 1`` for the context encoder), so
    a shape built twice is the same model. ``initializer_range`` overrides BERT's 0.02, whose narrow
    random models give nearly parallel embeddings; the scale benchmark's L-2 H-128 uses 0.2 so that its
    vectors spread out enough for nearest-neighbour search to mean something.
    """
    import torch
    from transformers import BertTokenizerFast, DPRConfig, DPRContextEncoder, DPRQuestionEncoder

    from fastdpr_export.sources import packaged_minilm_dir

    shape = SHAPES[name]
    config = DPRConfig(vocab_size=VOCAB_SIZE, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
                       num_attention_heads=shape.heads, intermediate_size=shape.ffn, projection_dim=0,
                       max_position_embeddings=512,
                       **({} if initializer_range is None else {"initializer_range": initializer_range}))
    tokenizer = BertTokenizerFast.from_pretrained(packaged_minilm_dir())
    dirs: dict[Side, Path] = {}
    for offset, side in enumerate(("question", "context")):
        directory = out_dir / f"{name}-{side}"
        torch.manual_seed(seed + offset)
        model: Any = DPRQuestionEncoder(config) if side == "question" else DPRContextEncoder(config)
        model.eval().save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        dirs[side] = directory  # type: ignore[index]
    return dirs


@click.command()
@click.argument("name", type=click.Choice(sorted(SHAPES)))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for NAME-question/ and NAME-context/.")
@click.option("--seed", default=0, show_default=True)
@click.option("--initializer-range", type=float, default=None, help="Weight init std (default: BERT's 0.02).")
def main(name: str, out: Path, seed: int, initializer_range: float | None) -> None:
    """Save a RANDOM-WEIGHT DPR question/context checkpoint pair of shape NAME (for speed measurements)."""
    for side, directory in build_shape(name, out, seed, initializer_range).items():
        click.echo(f"{side}: {directory}")


if __name__ == "__main__":
    main()
