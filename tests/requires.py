"""What a test needs from outside the repository (a package, a program, a data file): skip locally, fail in CI.

A developer without an optional extra may skip what needs it, with the reason and the install command.
CI (``CI=true``, as ``.ci/run`` and hosted CI set it) installs everything, so there a missing requirement is
a broken setup and must fail the run: a green CI must never mean "most tests skipped". Every skip for a
missing requirement in ``tests/`` goes through :func:`unavailable`. Import it as ``from requires import ...``
(pytest puts ``tests/`` on ``sys.path``); it does not depend on ``conftest.py``.
"""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """True when the CI environment variable says so (``true``/``1``/``yes``, any case)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unavailable(message: str) -> NoReturn:
    """Fail (in CI) or skip (elsewhere) the current test, or the whole module when called at import time."""
    if in_ci():
        pytest.fail(f"{message} (CI=true: a missing requirement fails the run instead of skipping)", pytrace=False)
    # allow_module_level lets callers use this at import time too; inside a test it just skips.
    pytest.skip(message, allow_module_level=True)


def require_module(name: str, install: str) -> ModuleType:
    """Import ``name`` and return it; when it cannot be imported, :func:`unavailable` names ``install``."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        unavailable(f"needs {name} ({install}): {exc}")


def require_program(name: str, install: str) -> str:
    """The path of the executable ``name`` on PATH; when it is missing, :func:`unavailable` names ``install``."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"needs the program {name} ({install})")
    return path
