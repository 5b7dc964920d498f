"""benchmarks.md §8: MME parse table, acc/acc+ and the perception/cognition totals."""

from __future__ import annotations

import pytest

from mmaccel.eval.benchmarks import Sample, get_benchmark
from mmaccel.eval.benchmarks.mme import COGNITION, PERCEPTION, parse_mme

# response, official (llava), lmms-eval, VLMEvalKit ("unknown" for its Unknown)
PARSE_TABLE = [
    *[(r, "yes", "yes", "yes") for r in ("Yes", "yes.", "YES!", "Yes, there is a dog.")],
    *[(r, "no", "no", "no") for r in ("No.", "no, there is not")],
    *[(r, "no", "no", "unknown") for r in ("Not sure", "Nope", "None", "Noodles", "know")],
    *[(r, "yes", "yes", "unknown") for r in ("Yesterday", "yes and no")],
    ("y", "other", "yes", "unknown"),
    ("N", "other", "no", "unknown"),
    ("The answer is yes", "other", "other", "yes"),
    ("I don't know", "other", "other", "unknown"),
]


@pytest.mark.parametrize(("response", "official", "lmms_eval", "vlmevalkit"), PARSE_TABLE)
def test_mme_parse_table(response, official, lmms_eval, vlmevalkit):
    assert parse_mme(response, "llava") == official
    assert parse_mme(response, "lmms_eval") == lmms_eval
    assert parse_mme(response, "vlmevalkit") == vlmevalkit


def _pair(category: str, image: str, preds: tuple[str, str], golds: tuple[str, str] = ("Yes", "No")) -> list:
    samples = [
        Sample(
            id=f"{category}/{image}#{k}",
            question=f"Question {k}? Please answer yes or no.",
            answers=[golds[k]],
            meta={"category": category, "image_id": f"{category}/{image}"},
        )
        for k in range(2)
    ]
    return list(zip(samples, preds))


def test_mme_released_code_reasoning_pair():
    """code_reasoning 0020.png: GT Yes/No, LLaVA-1.5-13B answered Yes/Yes: 1 of 2 right, 0 toward acc+."""
    bench = get_benchmark("mme")
    rows = [bench.score(s, p) for s, p in _pair("code_reasoning", "0020.png", ("Yes", "Yes"))]
    result = bench.aggregate(rows)
    sub = result["subtasks"]["code_reasoning"]
    assert (sub["acc"], sub["acc_plus"], sub["score"]) == (50.0, 0.0, 50.0)
    assert result["cognition"] == 50.0
    assert result["perception"] == 0.0


def test_mme_acc_plus_groups_by_image_not_line_order():
    bench = get_benchmark("mme")
    items = _pair("existence", "a.jpg", ("Yes", "No")) + _pair("existence", "b.jpg", ("Yes", "Yes"))
    items = [items[0], items[2], items[3], items[1]]  # interleaved: consecutive-line pairing would be wrong
    rows = [bench.score(s, p) for s, p in items]
    sub = bench.aggregate(rows)["subtasks"]["existence"]
    assert sub["acc"] == 75.0
    assert sub["acc_plus"] == 50.0
    assert sub["score"] == 125.0


def test_mme_totals_and_other_answers():
    bench = get_benchmark("mme")
    rows = []
    for category in PERCEPTION + COGNITION:
        rows += [bench.score(s, p) for s, p in _pair(category, "x.png", ("Yes", "No"))]
    result = bench.aggregate(rows)
    assert result["perception"] == 2000.0
    assert result["cognition"] == 800.0
    assert "missing_subtasks" not in result
    other = bench.score(_pair("OCR", "y.png", ("maybe", "x"))[0][0], "maybe")
    assert other["parsed"] == "other"
    assert other["correct"] == 0.0
    assert bench.aggregate([other])["other_answers"] == 1
    assert "reasoning" in bench.aggregate(rows, "vlmevalkit")
