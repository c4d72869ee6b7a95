"""The house rules that import-linter cannot state: no private name crosses a module boundary, and the
public imports users rely on keep working."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _private_imports(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("fastdpr")):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{path.relative_to(REPO)}:{node.lineno} imports {alias.name}")
    return found


@pytest.mark.parametrize("package", ["fastdpr", "export", "benchmarks"])
def test_no_private_name_is_imported_across_modules(package: str) -> None:
    assert _private_imports(REPO / package) == []


def test_public_imports_keep_working() -> None:
    code = ("from fastdpr import Retriever, Hit, FastDPRError, __version__\n"
            "from fastdpr.cli.main import main\n"
            "assert Retriever.__module__ == 'fastdpr.search.retriever', Retriever.__module__\n"
            "print(__version__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_the_cli_lists_the_export_command_without_importing_torch() -> None:
    code = ("import sys\nfrom click.testing import CliRunner\nfrom fastdpr.cli.main import main\n"
            "result = CliRunner().invoke(main, ['--help'])\nassert result.exit_code == 0, result.output\n"
            "assert '  export ' in result.output, result.output\n"
            "result = CliRunner().invoke(main, ['export', '--list-recipes'])\nassert result.exit_code == 0\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
