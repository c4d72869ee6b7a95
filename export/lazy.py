"""The export extra (torch, transformers, onnx) is optional: check for it with a helpful message."""

from __future__ import annotations

import importlib.util

from fastdpr.common.errors import MissingDependencyError

EXPORT_PACKAGES = ("torch", "transformers", "onnx")
INSTALL_HINT = "pip install torch==2.13.0 'fastdpr[export]'  (torch first: a CPU wheel; see README)"


def require_export_extra() -> None:
    """Raise :class:`MissingDependencyError` naming what to install when the export extra is absent."""
    missing = [name for name in EXPORT_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingDependencyError(
            f"exporting needs {', '.join(missing)}, which are not installed. Install the export extra: "
            f"{INSTALL_HINT}"
        )
