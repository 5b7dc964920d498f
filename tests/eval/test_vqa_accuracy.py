"""benchmarks.md §4 (VQAv2 per-question vectors) and §5 (TextVQA differences)."""

from __future__ import annotations

import pytest

from mmaccel.eval.benchmarks import Sample, get_benchmark
from mmaccel.eval.benchmarks.normalize import leave_one_out_accuracy
from mmaccel.eval.benchmarks.vqav2 import vqav2_accuracy


def answers(*counts: tuple[str, int]) -> list[str]:
    return [text for text, count in counts for _ in range(count)]


# pred, human answers, official (raw), LLaVA path, lmms-eval vqav2_val, VLMEvalKit vqa_score
VQAV2_TABLE = [
    ("yes", answers(("yes", 10)), 1.0, 1.0, 1.0, 1.0),
    ("Yes", answers(("yes", 10)), 0.0, 1.0, 1.0, 1.0),
    ("Yes.", answers(("yes", 10)), 0.0, 1.0, 1.0, 1.0),
    ("two", answers(("2", 10)), 0.0, 1.0, 1.0, 1.0),
    ("two", answers(("2", 9), ("two", 1)), 1.0, 1.0, 1.0, 1.0),
    ("red", answers(("red", 1), ("blue", 9)), 0.3, 0.3, 0.3, 0.3),
    ("red", answers(("red", 2), ("blue", 8)), 0.6, 0.6, 0.6, 0.6),
    ("red", answers(("red", 3), ("blue", 7)), 0.9, 0.9, 0.9, 0.9),
    ("red", answers(("red", 4), ("blue", 6)), 1.0, 1.0, 1.0, 1.0),
    ("the dog", answers(("dog", 2), ("cat", 8)), 0.6, 0.6, 0.6, 0.6),
    ("tshirt", answers(("t-shirt", 3), ("shirt", 7)), 0.0, 0.0, 0.0, 0.0),
    ("5.", answers(("5", 3), ("6", 7)), 0.9, 0.9, 0.9, 0.0),
    ("red,white", answers(("red white", 3), ("red", 7)), 0.9, 0.0, 0.9, 0.9),
    ("it's", answers(("it's", 3), ("it is", 7)), 0.9, 0.0, 0.9, 0.9),
    ("none", answers(("0", 3), ("1", 7)), 0.9, 0.9, 0.9, 0.9),
    ("stop", answers(("stop", 3), ("STOP", 7)), 1.0, 1.0, 1.0, 1.0),
]


@pytest.mark.parametrize(("pred", "gts", "official", "llava", "lmms_eval", "vlmevalkit"), VQAV2_TABLE)
def test_vqav2_per_question_vectors(pred, gts, official, llava, lmms_eval, vlmevalkit):
    assert vqav2_accuracy(pred, gts, "official") == pytest.approx(official)
    assert vqav2_accuracy(pred, gts, "llava") == pytest.approx(llava)
    assert vqav2_accuracy(pred, gts, "lmms_eval") == pytest.approx(lmms_eval)
    assert vqav2_accuracy(pred, gts, "vlmevalkit") == pytest.approx(vlmevalkit)


@pytest.mark.parametrize(("n", "expected"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_leave_one_out_closed_form(n, expected):
    assert leave_one_out_accuracy("x", ["x"] * n + ["y"] * (10 - n)) == pytest.approx(expected)


# TextVQA: LLaVA and lmms-eval use EvalAI on both sides; VLMEvalKit its own normaliser (§5 "Differences").
TEXTVQA_TABLE = [
    ("5.", answers(("5", 3), ("6", 7)), 0.9, 0.9, 0.0),
    ("red,white", answers(("red white", 3), ("red", 7)), 0.0, 0.0, 0.9),
    ("Yes", answers(("yes", 10)), 1.0, 1.0, 1.0),
    ("red", answers(("red", 2), ("blue", 8)), 0.6, 0.6, 0.6),
]


@pytest.mark.parametrize(("pred", "gts", "llava", "lmms_eval", "vlmevalkit"), TEXTVQA_TABLE)
def test_textvqa_per_question_vectors(pred, gts, llava, lmms_eval, vlmevalkit):
    bench = get_benchmark("textvqa")
    sample = Sample(id="1", question="what is written?", answers=gts)
    for protocol, expected in (("llava", llava), ("lmms_eval", lmms_eval), ("vlmevalkit", vlmevalkit)):
        assert bench.score(sample, pred, protocol)["accuracy"] == pytest.approx(expected), protocol


def test_vqav2_aggregate_reports_percent_and_answer_types():
    bench = get_benchmark("vqav2")
    samples = [
        Sample(id="1", question="q", answers=["yes"] * 10, meta={"answer_type": "yes/no"}),
        Sample(id="2", question="q", answers=answers(("2", 3), ("3", 7)), meta={"answer_type": "number"}),
    ]
    rows = [bench.score(samples[0], "Yes", "llava"), bench.score(samples[1], "two", "llava")]
    result = bench.aggregate(rows, "llava")
    assert result["accuracy"] == pytest.approx(95.0)
    assert result["by_answer_type"] == {"number": pytest.approx(90.0), "yes/no": pytest.approx(100.0)}
