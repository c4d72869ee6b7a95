"""The parity benchmark's ranked-id comparison (issue #14) on lists whose agreement is counted by hand."""

from __future__ import annotations

import sys

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))  # benchmarks/ runs from a checkout; it is not installed

from benchmarks.parity import agreement_rows, ranked_id_agreement

REFERENCE = [["a", "b", "c", "d"], ["e", "f", "g", "h"], ["i", "j", "k", "l"], ["m", "n", "o", "p"]]
SYSTEM = [
    ["a", "b", "c", "d"],  # identical at every depth
    ["e", "g", "f", "h"],  # ranks 2 and 3 swapped: same top-1, same top-3 set, different top-3 order
    ["j", "i", "k", "l"],  # ranks 1 and 2 swapped: differs at top-1, same set from top-2 on
    ["m", "n", "o", "x"],  # a different 4th passage: identical to depth 3, never at depth 4
]


def test_counts_identical_lists_and_identical_sets_per_depth() -> None:
    agreement = ranked_id_agreement(REFERENCE, SYSTEM, ks=(1, 2, 3, 4))
    assert agreement == {
        "1": {"identical_ranked": 3, "same_set": 3},
        "2": {"identical_ranked": 2, "same_set": 3},
        "3": {"identical_ranked": 2, "same_set": 4},
        "4": {"identical_ranked": 1, "same_set": 3},
    }


def test_identical_runs_agree_everywhere_and_lists_shorter_than_k_compare_whole() -> None:
    assert ranked_id_agreement(REFERENCE, REFERENCE, ks=(1, 100)) == {
        "1": {"identical_ranked": 4, "same_set": 4}, "100": {"identical_ranked": 4, "same_set": 4}}


def test_report_rows_give_counts_and_percentages() -> None:
    per_k = {k: {"identical_ranked": 3, "same_set": 4} for k in ("1", "5", "20", "100")}
    rows = agreement_rows({"reference": "pytorch-fp32-exact", "questions": 4, "systems": {"onnx-fp32-exact": per_k}})
    assert rows[2] == "| System | Top-1 | Top-5 | Top-20 | Top-100 |"
    assert rows[-1] == "| onnx-fp32-exact | " + " | ".join(["3 (75.00%) / 4"] * 4) + " |"
