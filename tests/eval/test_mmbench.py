"""benchmarks.md §10: MMBench extraction table and CircularEval grouping."""

from __future__ import annotations

import pytest

from mmaccel.eval.benchmarks import Sample, get_benchmark
from mmaccel.eval.benchmarks.mmbench import can_infer, lmms_eval_can_infer

CHOICES = {"A": "teddy bear", "B": "rabbit", "C": "cat", "D": "dog"}
F = None  # the reference's False: cannot tell

# prediction, VLMEvalKit <=2025-07, VLMEvalKit HEAD, lmms-eval
TABLE = [
    *[
        (p, "B", "B", "B")
        for p in ("B", "B.", "(B)", "B) rabbit", "B. rabbit", "Answer: B", "The answer is B.", "rabbit", "a rabbit")
    ],
    ("The correct answer is **C**.", "C", "C", F),
    ("A cat is sitting on the mat", "A", "C", "C"),
    ("B is correct since long ears are visible here", "B", F, "B"),
    ("D. dog. The image shows a dog next to a cat.", "D", F, "D"),
    ("A, B", F, F, "B"),
    ("Z", "Z", "Z", F),
    ("E", F, F, "E"),
    ("b", F, F, F),
    ("It is a cat or a dog", F, F, F),
]


@pytest.mark.parametrize(("prediction", "legacy", "head", "lmms_eval"), TABLE)
def test_mmbench_extraction_table(prediction, legacy, head, lmms_eval):
    assert can_infer(prediction, CHOICES, "legacy") == legacy
    assert can_infer(prediction, CHOICES, "head") == head
    assert lmms_eval_can_infer(prediction, CHOICES) == lmms_eval


def rotation(index: int, answer: str, options: dict[str, str] | None = None) -> Sample:
    return Sample(
        id=str(index),
        question="What animal is this?",
        answers=[answer],
        meta={"index": index, "options": options or CHOICES, "category": "object", "l2_category": "perception"},
    )


@pytest.mark.parametrize(
    ("passes", "hit"),
    [
        ([(241, "B", "B"), (1000241, "A", "A")], 100.0),  # group 241: both passes right
        ([(308, "A", "B"), (1000308, "B", "B")], 0.0),  # group 308: pass 0 wrong
        ([(295, "A", "C"), (1000295, "B", "D")], 0.0),  # group 295: both wrong
    ],
)
def test_mmbench_released_groups(passes, hit):
    bench = get_benchmark("mmbench")
    rows = [bench.score(rotation(index, answer), pred) for index, answer, pred in passes]
    result = bench.aggregate(rows)
    assert result["circular_accuracy"] == hit
    assert result["questions"] == 1


def test_mmbench_groups_by_index_mod_million_and_unparsed_fails_group():
    bench = get_benchmark("mmbench")
    rows = [
        bench.score(rotation(1, "A"), "A"),
        bench.score(rotation(2_000_001, "C"), "C"),
        bench.score(rotation(1_000_001, "B"), "B"),
        bench.score(rotation(2, "A"), "A"),
        bench.score(rotation(1_000_002, "D"), "I cannot tell"),
    ]
    result = bench.aggregate(rows)
    assert result["questions"] == 2
    assert result["circular_accuracy"] == 50.0
    assert result["pass_accuracy"] == 80.0
    assert result["unparsed"] == 1
    assert result["by_category"] == {"object": 50.0}


def test_mmbench_pluggable_judge_reads_unparsed_answers():
    bench = get_benchmark("mmbench")
    bench.judge = lambda prediction, options: "D"
    assert bench.score(rotation(2, "D"), "I cannot tell")["correct"] == 1.0
