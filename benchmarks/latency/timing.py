"""The one timing procedure every system is measured by.

Throughput: every system encodes the same length-spanning warm-up passages once (not measured), then
the same passages once per round; the order of systems rotates each round.

Latency: every system answers the same warm-up questions (one per question length the measured set
holds, or more), then the same measured questions, one end-to-end call per question, in the same
sequence. For question ``i`` the systems run in the registry order rotated by ``i``, so no system is
always first (cold caches) or always after the same neighbour. The procedure times each call itself
(the same clock around the same kind of call for every system); the parts the adapter reports are
its breakdown of that call, and "other" is the rest of the call. Warm-up calls are timed too and
reported beside the measured ones, never mixed into them.

Before every timed call the procedure sleeps ``settle_s``: ONNX Runtime's intra-op threads (one pool
per session) and PyTorch's OpenMP threads keep spinning for a moment after a call, and without a pause
each system would be timed while the previous one's threads still burn the cores (measured: 2.5x
slower single-question ORT calls right after another session's call, back to normal after 5 ms).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from benchmarks.latency.systems.base import PARTS, System
from fastdpr.corpus.reader import Passage

#: The parts of a query in reports: the adapter's parts, then the rest of the measured call.
REPORTED_PARTS = (*PARTS, "other")


@dataclass(frozen=True)
class Procedure:
    """The settings of a measurement (the same for every system)."""

    rounds: int
    settle_s: float = 0.02


@dataclass
class Measurements:
    """Raw numbers per system, and the order the procedure ran them in (so it can be checked)."""

    round_seconds: dict[str, list[float]] = field(default_factory=dict)
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    #: Each system's embeddings of the measured questions (after the timed calls; untimed).
    question_embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    warmup_passages_seconds: dict[str, float] = field(default_factory=dict)
    warmup_ms: dict[str, list[float]] = field(default_factory=dict)
    totals_ms: dict[str, list[float]] = field(default_factory=dict)
    #: The process's CPU time over each measured call (ms): what the call cost, without the time it waited
    #: for a core on a loaded machine (which grows with the call's length and skews wall-clock ratios).
    cpu_ms: dict[str, list[float]] = field(default_factory=dict)
    parts_ms: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    #: (phase, index, system order) for every throughput round and every question, warm-up included.
    schedule: list[tuple[str, int, tuple[str, ...]]] = field(default_factory=list)


def rotated(names: Sequence[str], shift: int) -> tuple[str, ...]:
    """``names`` rotated left by ``shift`` places."""
    shift %= len(names)
    return tuple(names[shift:]) + tuple(names[:shift])


def measure(systems: Mapping[str, System], passages: list[Passage], warmup_passages: list[Passage],
            questions: Sequence[str], warmup_questions: Sequence[str], procedure: Procedure, *,
            clock: Callable[[], float] = time.perf_counter, sleep: Callable[[float], None] = time.sleep,
            log: Callable[[str], None] = lambda _line: None,
            background: tuple[list[Passage], np.ndarray] | None = None,
            cpu_clock: Callable[[], float] = time.process_time) -> Measurements:
    """Measure every system by the same procedure (module docstring); ``clock`` and ``sleep`` are
    parameters so the procedure itself can be tested without timing anything. ``background``: passages
    and vectors every system searches beside the measured passages (after its own embeddings of them)."""
    names = list(systems)
    result = Measurements()
    pairs = [(p.title, p.text) for p in passages]
    warmup_pairs = [(p.title, p.text) for p in warmup_passages]

    for name in names:
        sleep(procedure.settle_s)
        start = clock()
        systems[name].encode_passages(warmup_pairs)
        result.warmup_passages_seconds[name] = clock() - start
    for r in range(procedure.rounds):
        order = rotated(names, r)
        result.schedule.append(("throughput", r, order))
        for name in order:
            sleep(procedure.settle_s)
            start = clock()
            vectors = systems[name].encode_passages(pairs)
            seconds = clock() - start
            result.round_seconds.setdefault(name, []).append(seconds)
            result.embeddings.setdefault(name, vectors)
            log(f"[latency] round {r + 1}/{procedure.rounds} {name:20s} {len(pairs) / seconds:9.1f} passages/s")
    for name, system in systems.items():
        if background is None:
            system.attach(passages, result.embeddings[name])
        else:
            system.attach([*passages, *background[0]], np.concatenate([result.embeddings[name], background[1]]))

    log(f"[latency] warm-up: {len(warmup_questions)} questions per system, interleaved")
    for i, question in enumerate(warmup_questions):
        for name, total, _cpu, _parts in _one_question(systems, rotated(names, i), question, procedure, clock, sleep,
                                                       cpu_clock):
            result.warmup_ms.setdefault(name, []).append(total)
        result.schedule.append(("warmup", i, rotated(names, i)))
    log(f"[latency] {len(questions)} questions, one call each, interleaved")
    for i, question in enumerate(questions):
        # Continue the rotation where the warm-up stopped, so the first measured question is not always
        # answered by the same system first.
        order = rotated(names, len(warmup_questions) + i)
        for name, total, cpu, parts in _one_question(systems, order, question, procedure, clock, sleep, cpu_clock):
            result.totals_ms.setdefault(name, []).append(total)
            result.cpu_ms.setdefault(name, []).append(cpu)
            record = result.parts_ms.setdefault(name, {part: [] for part in REPORTED_PARTS})
            for part in PARTS:
                record[part].append(parts[part])
            record["other"].append(max(total - sum(parts[p] for p in PARTS), 0.0))
        result.schedule.append(("question", i, order))
    # For the agreement check only, after every timed call: the vectors each system's query path computes.
    for name, system in systems.items():
        result.question_embeddings[name] = system.question_vectors(list(questions))
    return result


def _one_question(systems: Mapping[str, System], order: Sequence[str], question: str, procedure: Procedure,
                  clock: Callable[[], float], sleep: Callable[[float], None], cpu_clock: Callable[[], float]
                  ) -> list[tuple[str, float, float, dict[str, float]]]:
    """Every system in ``order`` answers ``question`` once: (name, call ms, call CPU ms, parts ms)."""
    out = []
    for name in order:
        sleep(procedure.settle_s)
        start, cpu_start = clock(), cpu_clock()
        parts = systems[name].query(question)
        total_ms = (clock() - start) * 1000
        cpu_ms = (cpu_clock() - cpu_start) * 1000
        out.append((name, total_ms, cpu_ms, {part: seconds * 1000 for part, seconds in parts.items()}))
    return out
