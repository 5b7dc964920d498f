"""benchmarks.md §6: GQA matching per protocol."""

from __future__ import annotations

import pytest

from mmaccel.eval.benchmarks import Sample, get_benchmark
from mmaccel.eval.benchmarks.gqa import gqa_match

# pred, gold, LLaVA, lmms-eval, VLMEvalKit
TABLE = [
    ("Yes", "yes", 1, 1, 1),
    ("Yes.", "yes", 1, 1, 0),
    ("yes..", "yes", 1, 1, 0),
    ("T-shirt", "t-shirt", 1, 1, 1),
    ("tshirt", "t-shirt", 0, 1, 0),
    ("No!", "no", 0, 1, 0),
    ("women's", "womens", 0, 1, 0),
    ("  Woman ", "woman", 0, 1, 1),
    ("The man", "man", 0, 0, 0),
    ("grey", "gray", 0, 0, 0),
]


@pytest.mark.parametrize(("pred", "gold", "llava", "lmms_eval", "vlmevalkit"), TABLE)
def test_gqa_match_table(pred, gold, llava, lmms_eval, vlmevalkit):
    assert gqa_match(pred, gold, "llava") == bool(llava)
    assert gqa_match(pred, gold, "lmms_eval") == bool(lmms_eval)
    assert gqa_match(pred, gold, "vlmevalkit") == bool(vlmevalkit)


def test_gqa_aggregate_binary_and_open():
    bench = get_benchmark("gqa")
    samples = [
        Sample(id="1", question="Is it overcast?", answers=["yes"], meta={"structural": "verify"}),
        Sample(id="2", question="What is it?", answers=["cat"], meta={"structural": "query"}),
    ]
    rows = [bench.score(samples[0], "Yes", "llava"), bench.score(samples[1], "dog", "llava")]
    result = bench.aggregate(rows, "llava")
    assert result["accuracy"] == 50.0
    assert result["binary"] == 100.0
    assert result["open"] == 0.0
