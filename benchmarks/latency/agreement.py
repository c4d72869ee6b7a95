"""Do all systems run the same model? Their passage AND question embeddings against a reference system's.

Plain cosine cannot tell: embeddings of a random-weight BERT (BERT's 0.02 init) all point nearly the same
way, so even a system that gave every input another input's vector scored min cosine 1.0000 on l2-h128
(issue #21). The check therefore compares *centered* embeddings: each vector minus the reference's mean
vector over the same inputs, i.e. only the part that distinguishes one input from another. And every run
measures a **control** on its own data, the reference's vectors shifted by one input (a deliberately
wrong system): the check has power on that data only if the control fails it, and the report says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Least centered cosine of any input, and least mean over the inputs, of a system that runs the
#: reference's model (both sides). Measured on l2-h128 with spread random weights (``--initializer-range
#: 0.2``, 32 SQuAD passages, 10 questions, x86-avx2, 2026-12-04): the int8 systems' least per-input value
#: was 0.61 (OpenVINO's passages; fastdpr-int8 0.94, optimum 0.89) and least mean 0.89; the control's
#: largest per-input value was -0.53 and its means -0.03 / -0.17. The limits sit between the two.
MIN_CENTERED_COSINE = 0.5
MIN_MEAN_CENTERED_COSINE = 0.8
#: The name of the control in ``agreement``: the reference's own vectors, each paired with the next input's.
CONTROL = "control: reference shifted by one input"
SIDES = ("passages", "questions")


def cosines(vectors: np.ndarray, reference: np.ndarray, center: np.ndarray | None = None) -> np.ndarray:
    """Row-wise cosine of ``vectors`` and ``reference`` (after subtracting ``center`` from both)."""
    a, b = np.asarray(vectors, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if center is not None:
        a, b = a - center, b - center
    norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    result: np.ndarray = (a * b).sum(1) / norms
    return result


def side_agreement(vectors: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Plain and centered cosine (min, mean) of one system's embeddings of some inputs against the reference's."""
    plain = cosines(vectors, reference)
    centered = cosines(vectors, reference, reference.mean(0))
    return {"min_cosine": round(float(plain.min()), 6), "mean_cosine": round(float(plain.mean()), 6),
            "min_centered_cosine": round(float(centered.min()), 6),
            "mean_centered_cosine": round(float(centered.mean()), 6)}


def fails(values: dict[str, float], minimum: float, mean: float) -> bool:
    """Whether one side's cosines fall below either limit."""
    return values["min_centered_cosine"] < minimum or values["mean_centered_cosine"] < mean


def agreement(embeddings: dict[str, dict[str, np.ndarray]], reference: str,
              minimum: float = MIN_CENTERED_COSINE, mean: float = MIN_MEAN_CENTERED_COSINE) -> dict[str, Any]:
    """``embeddings[side][system]`` (side: passages, questions) against ``reference``'s: per system and side
    the cosines, the control, which systems fail, and whether the check could fail at all on this data."""
    systems: dict[str, dict[str, dict[str, float]]] = {}
    control: dict[str, dict[str, float]] = {}
    for side in SIDES:
        by_system = embeddings.get(side, {})
        if reference not in by_system:
            continue
        ref = by_system[reference]
        for name, vectors in by_system.items():
            systems.setdefault(name, {})[side] = side_agreement(vectors, ref)
        if len(ref) > 1:
            control[side] = side_agreement(np.roll(ref, 1, axis=0), ref)
    failed = sorted(name for name, sides in systems.items()
                    if any(fails(values, minimum, mean) for values in sides.values()))
    return {
        "reference": reference,
        "metric": "centered cosine: each embedding minus the reference's mean embedding over the same inputs",
        "min_centered_cosine": minimum,
        "min_mean_centered_cosine": mean,
        "systems": systems,
        CONTROL: control,
        "failed": failed,
        "control_fails": bool(control) and any(fails(values, minimum, mean) for values in control.values()),
    }


def summary_line(result: dict[str, Any]) -> str:
    """One Markdown line: every system's least centered cosine per side, the verdict and the control."""
    parts = []
    for name, sides in result["systems"].items():
        shown = " / ".join(f"{sides[s]['min_centered_cosine']:.4f}" for s in SIDES if s in sides)
        parts.append(f"{name} {shown}")
    control = " / ".join(f"{v['min_centered_cosine']:.4f}" for v in result[CONTROL].values())
    verdict = "FAILED: " + ", ".join(result["failed"]) if result["failed"] else "all systems agree"
    power = "the control fails it, so the check can fail here" if result["control_fails"] else (
        "the control PASSES it: the check has no power on these embeddings")
    return (f"Embedding check against {result['reference']} (least centered cosine, passages / questions; "
            f"limits {result['min_centered_cosine']} per input, {result['min_mean_centered_cosine']} on average): "
            + ", ".join(parts) + f"; control {control}. "
            f"{verdict}; {power}.")
