"""``python -m benchmarks latency``: the timing procedure (with fake systems and a fake clock, no timing),
warm-up selection, the system registry, the embedding agreement check (and that it fails a wrong system),
and a slow smoke run of a tiny random-weight shape end to end."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REPO_ROOT, require_export
from requires import require_module

sys.path.insert(0, str(REPO_ROOT))  # benchmarks/ runs from a checkout; it is not installed

from benchmarks.latency.agreement import CONTROL, MIN_CENTERED_COSINE, MIN_MEAN_CENTERED_COSINE, agreement
from benchmarks.latency.report import ratio_pairs
from benchmarks.latency.systems import DEFAULT_SYSTEMS, SYSTEMS, System
from benchmarks.latency.systems.base import K, ListSearch
from benchmarks.latency.timing import Measurements, Procedure, measure
from benchmarks.latency.workload import warmup_passages, warmup_questions
from fastdpr.corpus.reader import Passage


class FakeClock:
    """A clock that only moves when told to (sleep, or a fake system doing work)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeSystem(System):
    """Records every call; a query "takes" ``query_ms`` on the fake clock and reports parts worth 2 ms."""

    def __init__(self, name: str, clock: FakeClock, query_ms: float, log: list[tuple[str, str, str]]) -> None:
        self.name = name
        self.clock = clock
        self.query_ms = query_ms
        self.log = log
        self.attached: list[str] = []

    def encode_passages(self, passages: Sequence[tuple[str, str]]) -> np.ndarray:
        self.log.append((self.name, "encode", ",".join(title for title, _ in passages)))
        self.clock.now += 0.5
        return np.ones((len(passages), 4), dtype=np.float32)

    def attach(self, passages: list[Passage], vectors: np.ndarray) -> None:
        self.attached = [p.id for p in passages]

    def query(self, question: str) -> dict[str, float]:
        self.log.append((self.name, "query", question))
        self.clock.now += self.query_ms / 1000
        return {"tokenize": 0.0005, "encode": 0.001, "search": 0.0003, "fetch": 0.0002}

    def question_vectors(self, questions: Sequence[str]) -> np.ndarray:
        self.log.append((self.name, "embed", ",".join(questions)))
        return np.full((len(questions), 4), self.query_ms, dtype=np.float32)


def _passages(n: int, prefix: str) -> list[Passage]:
    return [Passage(id=f"{prefix}{i}", title=f"{prefix}{i}", text="text") for i in range(n)]


def _run(rounds: int = 2) -> tuple[dict[str, FakeSystem], list[tuple[str, str, str]], FakeClock, Measurements]:
    clock = FakeClock()
    log: list[tuple[str, str, str]] = []
    systems = {name: FakeSystem(name, clock, ms, log) for name, ms in (("a", 3.0), ("b", 5.0), ("c", 4.0))}
    measured = measure(systems, _passages(2, "p"), _passages(1, "w"), ["q1", "q2", "q3", "q4"], ["w1", "w2"],
                       Procedure(rounds=rounds, settle_s=0.02), clock=clock, sleep=clock.sleep)
    return systems, log, clock, measured


def test_every_system_gets_the_same_inputs_in_the_same_sequence() -> None:
    systems, log, _clock, _measured = _run()
    for name in ("a", "b", "c"):
        calls = [(kind, arg) for who, kind, arg in log if who == name]
        assert calls == [("encode", "w0"), ("encode", "p0,p1"), ("encode", "p0,p1"),
                         ("query", "w1"), ("query", "w2"),
                         ("query", "q1"), ("query", "q2"), ("query", "q3"), ("query", "q4"),
                         ("embed", "q1,q2,q3,q4")]  # after every timed call, for the agreement check only
        assert systems[name].attached == ["p0", "p1"]


def test_system_order_rotates_per_round_and_per_question() -> None:
    _systems, _log, _clock, measured = _run()
    assert measured.schedule == [
        ("throughput", 0, ("a", "b", "c")), ("throughput", 1, ("b", "c", "a")),
        ("warmup", 0, ("a", "b", "c")), ("warmup", 1, ("b", "c", "a")),
        # measured questions continue the rotation after the warm-up
        ("question", 0, ("c", "a", "b")), ("question", 1, ("a", "b", "c")),
        ("question", 2, ("b", "c", "a")), ("question", 3, ("c", "a", "b")),
    ]
    _s, log, _c, _m = _run()
    queried = [who for who, kind, _ in log if kind == "query"]
    assert queried[6:9] == ["c", "a", "b"]  # the first measured question, as scheduled


def test_each_call_is_timed_once_from_outside_and_warmup_is_kept_apart() -> None:
    _systems, _log, clock, measured = _run()
    totals, warmup = measured.totals_ms, measured.warmup_ms
    assert set(totals) == set(warmup) == {"a", "b", "c"}
    for name, ms in (("a", 3.0), ("b", 5.0), ("c", 4.0)):
        assert totals[name] == pytest.approx([ms] * 4)
        assert warmup[name] == pytest.approx([ms] * 2)
    parts = measured.parts_ms["b"]
    assert parts["encode"] == [1.0] * 4
    assert parts["other"] == pytest.approx([3.0] * 4)  # 5 ms call - 2 ms of reported parts
    assert measured.question_embeddings["b"].shape == (4, 4)  # the measured questions, every system
    rounds = measured.round_seconds
    assert {name: pytest.approx(seconds) for name, seconds in rounds.items()} == {n: [0.5, 0.5] for n in "abc"}
    # one settle pause before every timed call: 3 warm-up encodes + 6 rounds + 18 queries
    assert clock.sleeps == [0.02] * 27


def test_every_system_searches_the_same_background_after_its_own_passages() -> None:
    clock = FakeClock()
    systems = {name: FakeSystem(name, clock, 1.0, []) for name in ("a", "b")}
    background = (_passages(3, "bg"), np.zeros((3, 4), dtype=np.float32))
    measure(systems, _passages(2, "p"), _passages(1, "w"), ["q1"], ["w1"], Procedure(rounds=1), clock=clock,
            sleep=clock.sleep, background=background)
    assert all(s.attached == ["p0", "p1", "bg0", "bg1", "bg2"] for s in systems.values())


@pytest.mark.parametrize("ann", [False, True])
def test_a_peers_search_recall_is_measured_against_exact_search(ann: bool) -> None:
    rng = np.random.default_rng(0)
    peer = ListSearch(ann=ann)
    peer.attach(_passages(500, "p"), rng.normal(size=(500, 16)).astype(np.float32))
    questions = rng.normal(size=(5, 16)).astype(np.float32)
    assert len(peer.top(questions[0])) == K
    recall = peer.search_recall(questions)
    assert recall == 1.0 if not ann else 0.9 <= recall <= 1.0


def test_warmup_questions_cover_every_measured_length_from_spare_questions_first() -> None:
    measured = ["one two", "one two three", "x y z", "a b c d e"]
    spare = ["s1 s2 s3", "t1 t2", "u1 u2 u3", "v1 v2 v3 v4", "t3 t4", "w1 w2"]
    chosen, description = warmup_questions(measured, spare, lambda q: len(q.split()), per_length=2)
    assert chosen == ["t1 t2", "t3 t4", "s1 s2 s3", "u1 u2 u3", "a b c d e"]
    assert description == {"questions": 5, "per_length": 2, "lengths": [2, 5], "distinct_lengths": 3,
                           "taken_from_measured": 1}


def test_warmup_passages_span_the_length_range() -> None:
    passages = _passages(9, "p")
    lengths = [50, 10, 90, 30, 70, 20, 80, 40, 60]
    assert [p.id for p in warmup_passages(passages, lengths, 3)] == ["p1", "p0", "p2"]  # lengths 10, 50, 90


def test_registry_finds_every_adapter_and_ratios_compare_targets_with_baselines() -> None:
    assert DEFAULT_SYSTEMS == ("pytorch-fp32-padded", "pytorch-fp32-sorted", "optimum-ort-int8", "openvino-int8",
                               "fastdpr-fp32", "fastdpr-int8")
    assert SYSTEMS == ("pytorch-fp32-padded", "pytorch-fp32-sorted", "optimum-ort-int8", "optimum-ort-int8-hnsw",
                       "openvino-int8", "openvino-int8-bucketed", "fastdpr-fp32", "fastdpr-int8",
                       "fastdpr-int8-memory", "fastdpr-int8-onnxruntime-passages")
    assert ratio_pairs(["pytorch-fp32-sorted", "openvino-int8", "fastdpr-fp32", "fastdpr-int8"]) == [
        ("fastdpr-int8", "pytorch-fp32-sorted"), ("fastdpr-fp32", "pytorch-fp32-sorted"),
        ("openvino-int8", "pytorch-fp32-sorted"), ("fastdpr-int8", "openvino-int8"),
        ("fastdpr-int8", "fastdpr-fp32")]


def _near_parallel(n: int, dim: int, seed: int, spread: float = 0.01) -> np.ndarray:
    """Embeddings like a random-weight BERT's (0.02 init): one shared direction plus a small per-input part."""
    rng = np.random.default_rng(seed)
    common = np.random.default_rng(0).normal(size=dim)
    return (common + spread * rng.normal(size=(n, dim))).astype(np.float32)


def test_agreement_check_fails_a_wrong_system_that_plain_cosine_passes() -> None:
    """Issue #21: on near-parallel embeddings ``min_cosine > 0.95`` passed every system, right or wrong. The
    centered check passes a system that adds int8-sized noise and fails one that embeds other inputs, on
    both sides; and the run's own control (reference shifted by one input) fails it, so the check has
    power on that data."""
    reference = {"passages": _near_parallel(64, 32, seed=1), "questions": _near_parallel(16, 32, seed=2)}
    rng = np.random.default_rng(3)
    deviation = {side: (v - v.mean(0)).std() for side, v in reference.items()}
    close = {side: v + 0.05 * deviation[side] * rng.normal(size=v.shape) for side, v in reference.items()}
    wrong_questions = {"passages": reference["passages"], "questions": _near_parallel(16, 32, seed=4)}
    one_passage_swapped = reference["passages"].copy()
    one_passage_swapped[[0, 1]] = one_passage_swapped[[1, 0]]
    one_wrong = {"passages": one_passage_swapped, "questions": reference["questions"]}
    embeddings = {side: {"reference": reference[side], "int8-like": close[side], "wrong": wrong_questions[side],
                         "one-wrong": one_wrong[side]} for side in ("passages", "questions")}

    result = agreement(embeddings, "reference")

    wrong = result["systems"]["wrong"]
    assert wrong["questions"]["min_cosine"] > 0.95  # what the old check read: it passed
    assert wrong["questions"]["min_centered_cosine"] < MIN_CENTERED_COSINE
    assert wrong["passages"]["min_centered_cosine"] == pytest.approx(1.0)  # only its questions are wrong
    # Two passages of 64 swapped: the mean hardly moves, the least input's cosine does.
    swapped = result["systems"]["one-wrong"]["passages"]
    assert swapped["mean_centered_cosine"] > MIN_MEAN_CENTERED_COSINE > swapped["min_centered_cosine"]
    assert result["failed"] == ["one-wrong", "wrong"]
    for side in ("passages", "questions"):
        assert result["systems"]["int8-like"][side]["min_centered_cosine"] > MIN_CENTERED_COSINE
    assert result["control_fails"] is True
    assert result[CONTROL]["passages"]["min_cosine"] > 0.95  # the control passes plain cosine too


def test_agreement_check_fails_embeddings_that_cannot_tell_inputs_apart() -> None:
    """A model that gives every input the same vector has nothing to agree on: the check fails every system
    (the reference included) instead of passing them all, as plain cosine did."""
    same = np.ones((8, 4), dtype=np.float32)
    result = agreement({"passages": {"ref": same, "other": same.copy()}}, "ref")
    assert result["systems"]["other"]["passages"]["min_cosine"] == pytest.approx(1.0)
    assert result["failed"] == ["other", "ref"]


@pytest.mark.slow
def test_latency_command_on_a_tiny_shape(tmp_path: Path) -> None:
    require_export()
    require_module("optimum.onnxruntime", "the optimum peer needs optimum-onnx: pip install -e '.[export]'")
    require_module("openvino", "the OpenVINO peer needs the bench extra: pip install -e '.[bench]'")
    require_module("nncf", "the OpenVINO peer needs the bench extra: pip install -e '.[bench]'")
    require_module("matplotlib", "the bench extra: pip install -e '.[bench]'")
    from benchmarks.latency import PARTS, latency_command

    out = tmp_path / "results"
    result = CliRunner().invoke(latency_command, [
        "--shape", "l2-h128", "--initializer-range", "0.2", "--passages", "32", "--queries", "10", "--rounds", "1",
        "--out", str(out)])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"

    report = json.loads((out / "latency.json").read_text(encoding="utf-8"))
    for key in ("machine", "versions", "threads", "model", "workload", "systems", "ratios", "profile", "procedure"):
        assert key in report, key
    assert report["threads"] == 2
    assert report["model"]["random_weights"] is True
    assert report["model"]["shape"]["name"] == "l2-h128"
    assert report["workload"]["passages"]["count"] == 32
    assert report["workload"]["questions"]["count"] == 10
    assert report["workload"]["warmup"]["passages"] == 32
    assert set(report["systems"]) == set(DEFAULT_SYSTEMS)
    for name, system in report["systems"].items():
        assert "error" not in system, f"{name}: {system.get('error')}"
        assert system["passages_per_s"] > 0
        assert all(system["query_ms"][p] > 0 for p in ("p50", "p95", "p99"))
        assert set(system["breakdown_ms"]) == {*PARTS, "other"}
        assert all(system["breakdown_ms"][part] > 0 for part in PARTS), name
        assert system["warmup"]["questions"] == report["workload"]["warmup"]["questions"]["questions"]
    for comparison in ("fastdpr-int8 vs pytorch-fp32-padded", "fastdpr-int8 vs pytorch-fp32-sorted",
                       "fastdpr-int8 vs fastdpr-fp32", "optimum-ort-int8 vs pytorch-fp32-padded",
                       "fastdpr-int8 vs openvino-int8"):
        assert report["ratios"][comparison]["passages_per_s"] > 0
        assert report["ratios"][comparison]["query_p50"] > 0
    # Every system ran the same model, passages and questions: int8 may differ a little from PyTorch fp32,
    # nothing more. The model's weights are spread (--initializer-range 0.2) so that inputs differ, and the
    # run's control (the reference shifted by one input) proves the check could fail on these embeddings.
    check = report["agreement"]
    assert set(check["systems"]) == set(DEFAULT_SYSTEMS)
    assert all(set(sides) == {"passages", "questions"} for sides in check["systems"].values())
    assert check["failed"] == [], check["systems"]
    assert check["control_fails"] is True, check[CONTROL]
    assert report["model"]["shape"]["initializer_range"] == 0.2
    assert report["profile"]["op_types"] and report["profile"]["kernel_ms"] > 0

    markdown = (out / "latency.md").read_text(encoding="utf-8")
    assert "RANDOM WEIGHTS: speed only" in markdown
    assert all(name in markdown for name in DEFAULT_SYSTEMS)
    assert (out / "latency.png").stat().st_size > 0
