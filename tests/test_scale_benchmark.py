"""The scale benchmark: its SYNTHETIC corpus generator, and a tiny end-to-end run (seconds)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from shared_data import shared_data_path

from benchmarks.synthetic_corpus import write_synthetic_corpus
from fastdpr.corpus.reader import read_corpus

SQUAD = ("squad", "dev-v1.1.json")


def test_the_generator_is_deterministic_and_writes_a_valid_dpr_tsv(tmp_path: Path) -> None:
    squad = shared_data_path(*SQUAD)
    first, again, other = tmp_path / "a.tsv", tmp_path / "b.tsv", tmp_path / "c.tsv"
    info = write_synthetic_corpus(squad, first, 2000, seed=0)
    write_synthetic_corpus(squad, again, 2000, seed=0)
    write_synthetic_corpus(squad, other, 2000, seed=1)
    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    assert info["synthetic"] is True and "SYNTHETIC" in info["note"] and info["passages"] == 2000
    assert first.read_text(encoding="utf-8").startswith("id\ttext\ttitle\n")  # DPR's header

    reader = read_corpus(first, "auto", strict=True)  # strict: any malformed row would fail here
    passages = list(reader)
    assert reader.format == "dpr-tsv"
    assert [p.id for p in passages] == [str(i) for i in range(1, 2001)]
    assert all(p.title and p.text for p in passages)
    # A prefix of a bigger corpus is the smaller corpus: a benchmark slice is the start of the big file.
    write_synthetic_corpus(squad, again, 500, seed=0)
    assert again.read_bytes() == b"".join(first.read_bytes().splitlines(keepends=True)[:501])


def test_the_generator_has_dpr_passage_lengths(tmp_path: Path) -> None:
    path = tmp_path / "corpus.tsv"
    write_synthetic_corpus(shared_data_path(*SQUAD), path, 3000, seed=0)
    words = Counter(len(p.text.split()) for p in read_corpus(path))
    assert max(words) == 100 and min(words) >= 1
    # DPR cuts articles into 100-word passages: most have exactly 100 words, each article's last is shorter
    # (about 1 passage in 7.7 with 6.5 passages per article on average).
    assert 0.80 <= words[100] / 3000 <= 0.93
    assert sum(words.values()) == 3000
    titles = Counter(p.title for p in read_corpus(path))
    assert len(titles) == 48  # every SQuAD dev article is used
    assert "Super Bowl 50" in titles


def test_a_tiny_scale_run_reports_every_field(tmp_path: Path, tiny_artifact: Path) -> None:
    from benchmarks.scale import scale_command

    out = tmp_path / "results" / "scale.json"
    result = CliRunner().invoke(scale_command, [
        "--artifact", str(tiny_artifact), "--label", "tiny (RANDOM WEIGHTS)", "--passages", "300",
        "--shard-size", "120", "--systems", "local", "--squad", str(shared_data_path(*SQUAD)),
        "--questions", "20", "-k", "10", "--threads", "1", "--workdir", str(tmp_path / "work"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert set(report) >= {"benchmark", "date_utc", "synthetic_corpus", "note", "model", "machine", "versions",
                           "settings", "command", "systems", "same_index_across_systems", "seen_id_set",
                           "finished_utc"}
    assert report["synthetic_corpus"]["synthetic"] is True and report["synthetic_corpus"]["passages"] == 300
    assert report["machine"]["int8_class"]["int8_class"]
    build = report["systems"]["local"]["build"]
    assert build["passages"] == 300 and build["shards"] == 3  # 120 + 120 + 60
    for key in ("wall_seconds", "encode_passages_per_s", "peak_memory_bytes_tree_pss", "peak_memory_bytes_driver"):
        assert build[key] > 0, key
    assert build["hnsw_graph_seconds"] >= 0  # rounded to 10 ms: 120-passage graphs can take less
    assert len(build["loadavg_before"]) == len(build["loadavg_after"]) == 3
    assert set(build["disk"]["by_kind_bytes_per_passage"]) >= {"vectors", "hnsw", "passages", "encoder"}
    # 32 float32 per passage, plus each of the 3 shards' 128-byte .npy header: 128 + 3 * 128 / 300
    assert build["disk"]["by_kind_bytes_per_passage"]["vectors"] == 129.3
    assert re.fullmatch(r"[0-9a-f]{64}", build["content_sha256"]["vectors"])
    serve = report["systems"]["local"]["serve"]
    assert serve["questions"] == 20 and serve["k"] == 10
    assert serve["cold_start_seconds"] > 0 and serve["peak_rss_bytes"] > 0
    assert set(serve["query_ms"]) == set(serve["search_ms"]) == {"p50", "p99", "mean"}
    assert 0.0 <= serve["recall_vs_exact"] <= 1.0
    assert 0.0 <= serve["unsharded"]["recall_vs_exact"] <= 1.0 and serve["unsharded"]["graph_seconds"] >= 0
    for sweep in (serve["recall_by_ef"], serve["unsharded"]["recall_by_ef"]):
        assert list(sweep) == ["100", "200", "800", "1600"]
        assert all(0.0 <= row["recall_vs_exact"] <= 1.0 and row["ms_per_question"] > 0 for row in sweep.values())
        # A wider search never finds fewer of the exact neighbours in graphs this small (120 and 300 nodes).
        assert sweep["1600"]["recall_vs_exact"] >= sweep["100"]["recall_vs_exact"]
    assert report["seen_id_set"]["passages"] == 300 and report["seen_id_set"]["bytes_per_passage"] > 50
    markdown = out.with_suffix(".md").read_text()
    assert "SYNTHETIC" in markdown and "recall@10" in markdown
    assert "| local, sharded | " in markdown and "| local, one unsharded graph | " in markdown


@pytest.mark.parametrize("systems", ["", "local,gpu"])
def test_unknown_systems_are_refused(tmp_path: Path, tiny_artifact: Path, systems: str) -> None:
    from benchmarks.scale import scale_command

    result = CliRunner().invoke(scale_command, [
        "--artifact", str(tiny_artifact), "--label", "x", "--passages", "10", "--shard-size", "5",
        "--systems", systems, "--workdir", str(tmp_path), "--out", str(tmp_path / "r.json")])
    assert result.exit_code == 2 and "systems must be among local, ray" in result.output
