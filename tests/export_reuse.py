"""What the tests' exports share: each PyTorch reference is computed once per session (issue #20, CI time).

Every export validates each stage against the Hugging Face model's embeddings of the probes in PyTorch fp32
(``fastdpr_export.validate.pytorch_reference``). The test suite exports the same few models many times (the
tiny DPR pair once per INT8 recipe, for the CLI's failure paths, with other probes ...), and on a 2-core
machine that reference was ~40% of a tiny export. :class:`ReferenceCache` computes it once per distinct
input and hands every later export a copy.

The key is everything the reference is computed from: the model directory's bytes (every file, so the
tokenizer too), what the source resolved to (kind, class, weights file, pooler, config), the encoder spec,
the side, the inputs and the batch size. Two exports share a reference only when the real function would
have computed the same thing. Every export still runs its whole pipeline against it: tokenizer parity,
ONNX export, fusion, quantization, every stage check and the int8 gate. The first computation of each key
is the real one, so errors (a checkpoint that does not load, missing weights) surface as before and are
not cached.

Import it as ``from export_reuse import ...`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


def directory_digest(directory: Path) -> str:
    """SHA-256 over every file of ``directory`` (relative names and bytes, in sorted order)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode("utf-8") + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def inputs_digest(inputs: Sequence[str] | Sequence[tuple[str, str]]) -> str:
    """SHA-256 of the probe texts (questions, or (title, text) pairs), in order."""
    items = [item if isinstance(item, str) else list(item) for item in inputs]
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode("utf-8")).hexdigest()


class ReferenceCache:
    """PyTorch reference embeddings by everything they are computed from (see the module docstring)."""

    def __init__(self) -> None:
        self.arrays: dict[tuple[str, ...], Any] = {}
        self.hits = 0
        self.misses = 0

    def key(self, resolved: Any, spec: Any, tokenizer: Any, inputs: Sequence[Any], batch_size: int) -> tuple[str, ...]:
        described = json.dumps(resolved.describe(), sort_keys=True, default=str)
        return (directory_digest(resolved.directory), described, repr(spec), str(tokenizer.side),
                inputs_digest(inputs), str(batch_size))

    def wrap(self, real: Callable[..., Any]) -> Callable[..., Any]:
        """``real`` (``pytorch_reference``) answering from the cache, filling it on a miss."""

        def reference(resolved: Any, spec: Any, tokenizer: Any, inputs: Sequence[Any], batch_size: int = 16) -> Any:
            key = self.key(resolved, spec, tokenizer, inputs, batch_size)
            if key in self.arrays:
                self.hits += 1
            else:
                self.misses += 1
                self.arrays[key] = real(resolved, spec, tokenizer, inputs, batch_size)
            return self.arrays[key].copy()

        reference.__wrapped__ = real  # type: ignore[attr-defined]
        return reference

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Serve ``fastdpr_export.validate.pytorch_reference`` from this cache (the export pipeline imports
        it from that module at each export). Without the export extra there is nothing to cache."""
        try:
            from fastdpr_export import validate
        except ImportError:
            yield
            return
        # A loud error, not a silent loss of the cache, if the export pipeline's reference moves.
        assert callable(getattr(validate, "pytorch_reference", None)), (
            "tests/export_reuse.py caches fastdpr_export.validate.pytorch_reference(resolved, spec, tokenizer, "
            "inputs, batch_size): update it to where the export pipeline computes its PyTorch reference now")
        with pytest.MonkeyPatch.context() as monkeypatch:
            monkeypatch.setattr(validate, "pytorch_reference", self.wrap(validate.pytorch_reference))
            yield
