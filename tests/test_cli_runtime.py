"""`fastdpr index` and `fastdpr search` run with the runtime alone: torch, transformers and optimum unimportable.

Each command runs in a fresh interpreter whose ``sys.meta_path`` starts with a finder that raises on any
import of those packages (and records the attempt), installed before ``fastdpr.cli.main`` is imported.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from conftest import count_pydoc_passages

BLOCKER = r"""
import importlib.abc, json, sys
BLOCKED = ("torch", "transformers", "optimum")
attempts = []

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            attempts.append(name)
            raise ImportError(f"blocked by the test: {name}")
        return None

sys.meta_path.insert(0, Blocker())
sys.argv = ["fastdpr", *sys.argv[1:]]
try:
    from fastdpr.cli.main import main
    main()
finally:
    loaded = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
    print("IMPORT-REPORT " + json.dumps({"attempts": attempts, "loaded": loaded}), file=sys.stderr)
"""


def run_blocked(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-c", BLOCKER, *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600)
    report_lines = [line for line in proc.stderr.splitlines() if line.startswith("IMPORT-REPORT ")]
    assert report_lines, proc.stderr
    report = json.loads(report_lines[-1].removeprefix("IMPORT-REPORT "))
    assert report == {"attempts": [], "loaded": []}, report
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_blocker_really_blocks(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", BLOCKER.replace("from fastdpr.cli.main import main", "import torch")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "blocked by the test: torch" in proc.stderr


def test_index_and_search_run_without_torch_transformers_optimum(tmp_path: Path, tiny_artifact: Path,
                                                                pydoc_corpus: Path) -> None:
    index = tmp_path / "idx"
    proc = run_blocked("index", tiny_artifact, pydoc_corpus, "--out", index, "--batch-size", 64, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # The pydoc corpus depends on the Python version (690 passages on 3.11.7, 687 on 3.11.2): count them
    # here from the topic texts; the range only catches a count that is not a word split at all.
    passages = count_pydoc_passages()
    assert 500 <= passages <= 2000, passages
    assert f"indexed {passages} passages" in proc.stdout
    manifest = json.loads((index / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["counts"]["indexed"] == passages
    with sqlite3.connect(index / "passages.sqlite") as store:
        assert store.execute("SELECT COUNT(*) FROM passages").fetchone() == (passages,)

    proc = run_blocked("search", index, "what does the yield statement do?", "--json", "-k", 3, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["rank"] for r in rows] == [1, 2, 3]

    qfile = tmp_path / "q.qa.tsv"
    qfile.write_text("what does the yield statement do?\t['generator']\n", encoding="utf-8")
    out = tmp_path / "results.json"
    proc = run_blocked("search", index, "--queries", qfile, "--out", out, "-k", 5, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(out.read_text())[0]["ctxs"]) == 5

    proc = run_blocked("search", index, "q", "--exact", "-k", 2, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_errors_without_torch_are_clean(tmp_path: Path) -> None:
    proc = run_blocked("search", tmp_path / "missing-index", "q", cwd=tmp_path)
    assert proc.returncode == 1
    assert "Error:" in proc.stderr and "missing-index" in proc.stderr
