"""Where the shared evaluation data (``../shared/data`` next to the repository) lives, for tests.

Import it as ``from shared_data import shared_data_path`` (pytest puts ``tests/`` on ``sys.path``); it does
not depend on ``conftest.py``. A missing file skips the test locally but fails it in CI (``CI=true``, see
``requires.py``), so CI can never go green by silently skipping the parity tests.
"""

from __future__ import annotations

import os
from pathlib import Path

from requires import unavailable

_REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_path(*parts: str) -> Path:
    """Path of ``parts`` under the shared data directory; skips (locally) or fails (CI) if it is missing.

    The directory is ``$FASTDPR_SHARED_DATA`` when set, else ``<repo root>/../shared/data``.
    """
    env = os.environ.get("FASTDPR_SHARED_DATA")
    base = Path(env) if env else _REPO_ROOT.parent / "shared" / "data"
    path = base.joinpath(*parts)
    if not path.exists():
        unavailable(f"shared test data {path} is missing (set FASTDPR_SHARED_DATA to the data directory)")
    return path
