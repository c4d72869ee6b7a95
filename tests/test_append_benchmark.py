"""``python -m benchmarks append --one-build`` and ``append-ab``: a tiny run of each reports every field."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from conftest import REPO_ROOT
from shared_data import shared_data_path

from benchmarks.append import append_ab_command, append_command

SQUAD = ("squad", "dev-v1.1.json")


def test_a_tiny_one_build_run_reports_every_field_and_reuses_its_build(tmp_path: Path, tiny_artifact: Path) -> None:
    out = tmp_path / "results" / "append.json"
    args = ["--artifact", str(tiny_artifact), "--label", "tiny", "--passages", "200", "--questions", "5",
            "--one-build", "--append-runs", "2", "--compare-artifact", str(tiny_artifact), "--compare-label", "again",
            "--compare-passages", "16", "--threads", "1", "--squad", str(shared_data_path(*SQUAD)),
            "--workdir", str(tmp_path / "work"), "--out", str(out)]
    built = CliRunner().invoke(append_command, [*args, "--stop-after-build"])
    assert built.exit_code == 0, built.output
    assert not out.exists()
    recorded = json.loads((tmp_path / "work" / "head-build.json").read_text())
    assert recorded["passages"] == 198 and recorded["wall_seconds"] > 0
    assert set(recorded["split_seconds"]) == {"encode_without_store", "store", "graph", "hash", "other"}

    result = CliRunner().invoke(append_command, args)
    assert result.exit_code == 0, result.output
    assert "reusing the build of 198 passages" in result.output
    data = json.loads(out.read_text())
    assert data["build"] == recorded  # built once
    append = data["append"]
    assert append["appended"] == 2 and append["indexed_after"] == 200 and len(append["runs"]) == 2
    assert append["int8_check"]["ran_here"] is False and append["int8_check"]["relied_on"] == "build"
    assert set(append["write_split_seconds"]) == {"rows", "graph", "hash"}
    assert set(append["graph_parts_seconds"]) == {"load", "add", "save", "load_average"}
    assert 0 <= append["recall_at_100_vs_exact"]["appended"] <= 1
    assert data["append_vs_build"]["wall"] == round(append["wall_seconds"] / recorded["wall_seconds"], 4)
    assert set(data["projection"]["models"]) == {"tiny", "again"}
    assert "PROJECTION (not measured)" in out.with_suffix(".md").read_text()
    assert "x86-" in out.with_suffix(".md").read_text()  # the CPU class is named

    ab = CliRunner().invoke(append_ab_command, ["--workdir", str(tmp_path / "work"), "--before", str(REPO_ROOT),
                                                "--rounds", "1", "--threads", "1",
                                                "--out", str(tmp_path / "results" / "ab.json")])
    assert ab.exit_code == 0, ab.output
    runs = json.loads((tmp_path / "results" / "ab.json").read_text())["runs"]
    assert [len(runs["before"]), len(runs["after"])] == [1, 1]
    assert "after / before" in (tmp_path / "results" / "ab.md").read_text()


def test_each_committed_report_is_what_its_renderer_makes_of_its_json() -> None:
    from benchmarks.append import render_ab_markdown, render_scale_markdown

    results = REPO_ROOT / "benchmarks" / "results" / "append-1m-x86-avx512-vnni"
    for name, render in (("l2-h128-1m", render_scale_markdown), ("before-after-1m", render_ab_markdown)):
        data = json.loads((results / f"{name}.json").read_text(encoding="utf-8"))
        assert (results / f"{name}.md").read_text(encoding="utf-8") == render(data), name
