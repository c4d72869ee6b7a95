"""Issue #14: a missing dependency, program or data file skips a test locally but FAILS the run under CI=true.

Each case runs pytest in a fresh interpreter on a small test file that makes a requirement unavailable
(``sys.modules[name] = None`` makes ``import name`` raise, as if the package were not installed) and then
asks for it the way the real tests do: the export extra through ``conftest.require_export`` at module level
(as ``test_export.py``), a package inside a test (as ``test_benchmark_latency.py``), a program (valgrind),
and shared data (``shared_data_path``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent

CASES = {
    "export extra at module level": """
        sys.modules["torch"] = None  # as if the export extra were not installed (torch is asked for first)
        from conftest import require_export
        require_export()

        def test_needs_export():
            pass
    """,
    "package inside a test": """
        sys.modules["optimum"] = None
        from requires import require_module

        def test_needs_optimum():
            require_module("optimum.onnxruntime", "the export extra")
    """,
    "program": """
        from requires import require_program

        def test_needs_a_program():
            require_program("fastdpr-no-such-program", "apt-get install nothing")
    """,
    "shared data": """
        from shared_data import shared_data_path

        def test_needs_data():
            shared_data_path("no-such-dir", "missing.json")
    """,
}


def run_pytest(tmp_path: Path, body: str, ci: str | None) -> subprocess.CompletedProcess[str]:
    test_file = tmp_path / "test_case.py"
    test_file.write_text(f"import sys\nsys.path.insert(0, {str(TESTS_DIR)!r})\n" + textwrap.dedent(body),
                         encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    # -p no:cacheprovider: nothing written next to the test file; --rootdir keeps the repo's ini out of it.
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--rootdir",
                           str(tmp_path), str(test_file)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("case", list(CASES))
def test_a_missing_requirement_fails_under_ci(tmp_path: Path, case: str) -> None:
    proc = run_pytest(tmp_path, CASES[case], ci="true")
    assert proc.returncode in (1, 2), proc.stdout + proc.stderr  # 1: a test failed, 2: collection failed
    assert "CI=true: a missing requirement fails the run" in proc.stdout, proc.stdout
    assert "skipped" not in proc.stdout.splitlines()[-1]
    assert "passed" not in proc.stdout.splitlines()[-1]


@pytest.mark.parametrize("case", list(CASES))
def test_a_missing_requirement_skips_locally_with_its_reason(tmp_path: Path, case: str) -> None:
    proc = run_pytest(tmp_path, CASES[case], ci=None)
    # 5: "no tests collected", when the only module was skipped whole at import time (as test_export.py is).
    assert proc.returncode in (0, 5), proc.stdout + proc.stderr
    last = proc.stdout.splitlines()[-1]
    assert "1 skipped" in last and "failed" not in last and "error" not in last, proc.stdout
    assert "SKIPPED" in proc.stdout and ("needs " in proc.stdout or "is missing" in proc.stdout), proc.stdout


def test_other_ci_spellings_count_and_false_does_not(tmp_path: Path) -> None:
    assert run_pytest(tmp_path, CASES["program"], ci="1").returncode == 1
    assert run_pytest(tmp_path, CASES["program"], ci="TRUE").returncode == 1
    assert run_pytest(tmp_path, CASES["program"], ci="false").returncode == 0


def test_a_present_requirement_runs_the_test(tmp_path: Path) -> None:
    body = """
        from requires import require_module, require_program

        def test_present():
            assert require_module("json", "stdlib").dumps([1]) == "[1]"
            assert require_program(sys.executable, "python").endswith(("python", "python3"))
    """
    proc = run_pytest(tmp_path, body, ci="true")
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout
