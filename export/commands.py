"""``fastdpr export``: the export package's command, which the ``fastdpr`` command line loads by name.

Listing the recipes needs neither torch nor ``--out``; everything else needs the export extra, checked
before any work with a message that says what to install.
"""

from __future__ import annotations

from pathlib import Path

import click

from fastdpr.common.outputs import check_output_dir
from fastdpr.common.user_errors import user_errors

from .lazy import require_export_extra


@click.command("export")
@click.option("--question-encoder", metavar="SRC",
              help="Question encoder: hub id, local dir, or builtin:NAME.")
@click.option("--context-encoder", metavar="SRC",
              help="Context (passage) encoder: hub id, local dir, or builtin:NAME.")
@click.option("--encoder", metavar="SRC", help="One model for both sides (siamese bi-encoders).")
@click.option("--out", "out", type=click.Path(path_type=Path), help="Artifact directory to create (required).")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@click.option("--pooling", type=click.Choice(["cls", "mean", "pooler"]),
              help="Default: cls for DPR; pooler for a BertModel that carries pooler weights (else cls); "
                   "sentence-transformers: its config.")
@click.option("--normalize/--no-normalize", default=None,
              help="L2-normalize embeddings in the graph. Default: from the source.")
@click.option("--token-types", type=click.Choice(["zeros", "pair"]),
              help="Token type ids of a passage's text segment: zeros (original DPR; default for DPR) or pair (1s).")
@click.option("--question-max-length", type=click.IntRange(8, 8192),
              help="Default: 64 (sentence-transformers: its max).")
@click.option("--passage-max-length", type=click.IntRange(8, 8192),
              help="Default: 256 (sentence-transformers: its max).")
@click.option("--quantize", "quantize", default=None, metavar="RECIPE|none",
              help="INT8 recipe (see `fastdpr export --list-recipes`), or none for fp32 only.")
@click.option("--calibration", type=click.Path(path_type=Path), metavar="CORPUS",
              help="Validate and calibrate int8 on a sample of this corpus (any `fastdpr index` format) "
                   "instead of the built-in probe passages.")
@click.option("--opset", type=click.IntRange(14, 21), default=17, show_default=True, help="ONNX opset.")
@click.option("--int8-min-recall", type=click.FloatRange(0.0, 1.0), default=0.75, show_default=True,
              help="The int8 gate: recall@10 of int8 retrieval against fp32 on the held-out probes.")
@click.option("--question-precision", type=click.Choice(["int8", "fp32"]),
              help="The precision questions run at by default in indexes built from this artifact (both "
                   "models are kept; `fastdpr index --question-precision` overrides it). Default: the measured "
                   "choice (see README, \"Same input, same vector\").")
@click.option("--openvino/--no-openvino", default=None,
              help="Also build the OpenVINO passage graph: NNCF static int8, held to the same gates, timed "
                   "against the ONNX int8 graph on this CPU; `fastdpr index` uses it on the CPU class where it "
                   "passed and was faster. Default: on when the openvino extra is installed "
                   "(pip install 'fastdpr[openvino]').")
@click.option("--list-recipes", is_flag=True, help="List the INT8 recipes and exit.")
@click.option("--quiet", is_flag=True, hidden=True, help="Indent the log and print no path (for `fastdpr demo`).")
@user_errors
def export_command(question_encoder: str | None, context_encoder: str | None, encoder: str | None, out: Path | None,
                   force: bool, pooling: str | None, normalize: bool | None, token_types: str | None,
                   question_max_length: int | None, passage_max_length: int | None, quantize: str | None,
                   calibration: Path | None, opset: int, int8_min_recall: float, question_precision: str | None,
                   openvino: bool | None, list_recipes: bool, quiet: bool) -> None:
    """Export a DPR encoder pair (or one shared encoder) to a validated ONNX artifact.

    Every stage (ONNX fp32, fused fp32, int8) is compared with the PyTorch model on built-in probe
    texts; a stage that misses its threshold fails the export and leaves nothing at --out.

    \b
    SRC is a Hugging Face hub id, a local checkpoint directory, or a built-in:
      builtin:all-MiniLM-L6-v2      the packaged sentence-transformers model (mean pooling)
      builtin:all-MiniLM-L6-v2-dpr  its weights in DPRQuestionEncoder / DPRContextEncoder (CLS pooling)
    Needs the export extra: pip install torch==2.13.0 'fastdpr[export]'
    """
    # Imported here, not at the top: `fastdpr --help` lists this command and must stay light (no numpy).
    from .quantize import DEFAULT_RECIPE, RECIPES

    if list_recipes:
        for name, recipe in RECIPES.items():
            click.echo(f"{name}{' (default)' if name == DEFAULT_RECIPE else ''}: {recipe.description}")
        return
    if out is None:
        raise click.UsageError("Missing option '--out' (the artifact directory to create).")
    check_output_dir(out, "artifact", force)
    require_export_extra()
    if openvino:
        from .openvino_backend import require_nncf

        require_nncf()
    from fastdpr.model.probes import probes_from_corpus

    from .pipeline import ExportOptions, export_artifact

    options = ExportOptions(
        out=out, question_encoder=question_encoder, context_encoder=context_encoder, encoder=encoder,
        force=force, pooling=pooling, normalize=normalize, token_types=token_types,
        question_max_length=question_max_length, passage_max_length=passage_max_length,
        quantize=quantize or DEFAULT_RECIPE, opset=opset,
        probes=None if calibration is None else probes_from_corpus(calibration), int8_min_recall=int8_min_recall,
        question_precision=question_precision, openvino=openvino,
    )
    export_artifact(options, log=lambda line: click.echo(f"    {line}" if quiet else line, err=True))
    if not quiet:
        click.echo(str(out))
