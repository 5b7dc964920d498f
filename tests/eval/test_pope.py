"""benchmarks.md §7: POPE parse table, aggregate vector and per-item vector."""

from __future__ import annotations

import pytest

from mmaccel.eval.benchmarks import Sample, get_benchmark
from mmaccel.eval.benchmarks.pope import parse_pope

# response, LLaVA, lmms-eval (compared string; "yes"/"no" only when exact), VLMEvalKit
PARSE_TABLE = [
    ("Yes", "yes", "yes", "yes"),
    ("No", "no", "no", "no"),
    ("yes.", "yes", "yes.", "yes"),
    ("NO", "yes", "no", "no"),
    ("There is not a dog", "no", "there is not a dog", "unknown"),
    ("Not really", "yes", "not really", "unknown"),
    ("I do not see one. Yes.", "no", "i do not see one. yes.", "yes"),
    ("Yes, but no cat", "no", "yes, but no cat", "unknown"),
    ("Nope", "yes", "nope", "unknown"),
    ("Y", "yes", "y", "unknown"),
    ("", "yes", "", "unknown"),
]


@pytest.mark.parametrize(("response", "llava", "lmms_eval", "vlmevalkit"), PARSE_TABLE)
def test_pope_parse_table(response, llava, lmms_eval, vlmevalkit):
    assert parse_pope(response, "llava") == llava
    assert parse_pope(response, "lmms_eval") == lmms_eval
    assert parse_pope(response, "vlmevalkit") == vlmevalkit


PREDS = ["Yes", "No", "Yes.", "no", "No, there is not.", "Yes", "NO", "Yes"]
LABELS = ["yes", "no", "yes", "yes", "no", "no", "no", "yes"]
# protocol: acc, precision, recall, F1, yes_ratio (fractions, as in the reference table)
AGGREGATE = {
    "llava": (0.625, 0.6, 0.75, 0.666667, 0.625),
    "lmms_eval": (0.5, 0.666667, 0.666667, 0.666667, 0.5),
    "vlmevalkit": (0.75, 0.75, 0.75, 0.75, None),
}


@pytest.mark.parametrize("protocol", sorted(AGGREGATE))
def test_pope_aggregate_vector(protocol):
    bench = get_benchmark("pope")
    samples = [
        Sample(id=str(i), question="Is there a dog in the image?", answers=[label], meta={"category": "random"})
        for i, label in enumerate(LABELS)
    ]
    rows = [bench.score(s, p, protocol) for s, p in zip(samples, PREDS)]
    result = bench.aggregate(rows, protocol)
    acc, precision, recall, f1, yes_ratio = AGGREGATE[protocol]
    split = result["splits"]["random"]
    assert split["acc"] == pytest.approx(100 * acc)
    assert split["precision"] == pytest.approx(100 * precision, abs=1e-4)
    assert split["recall"] == pytest.approx(100 * recall, abs=1e-4)
    assert split["f1"] == pytest.approx(100 * f1, abs=1e-4)
    if yes_ratio is not None:
        assert split["yes_ratio"] == pytest.approx(100 * yes_ratio)
    assert result["mean_f1"] == pytest.approx(100 * f1, abs=1e-4)
    assert result["pooled"]["f1"] == pytest.approx(split["f1"])


def test_pope_mean_f1_is_mean_over_splits_with_prediction_yes_ratio():
    bench = get_benchmark("pope")
    rows = []
    for split, preds in (("adversarial", ["Yes", "Yes"]), ("popular", ["Yes", "No"]), ("random", ["No", "No"])):
        for i, (pred, label) in enumerate(zip(preds, ["yes", "no"])):
            sample = Sample(id=f"{split}{i}", question="q", answers=[label], meta={"category": split})
            rows.append(bench.score(sample, pred))
    result = bench.aggregate(rows)
    f1 = {s: m["f1"] for s, m in result["splits"].items()}
    assert f1 == pytest.approx({"adversarial": 100 * 2 / 3, "popular": 100.0, "random": 0.0})
    assert result["mean_f1"] == pytest.approx((200 / 3 + 100) / 3)
    assert result["headline"] == "mean_f1"
    assert result["splits"]["adversarial"]["yes_ratio"] == 100.0  # from predictions, not labels
    assert result["splits"]["random"]["precision"] == 0.0  # division by zero guarded


def test_pope_released_prediction_items():
    """LLaVA-1.5-13B's first six answers against the e3e39262 labels."""
    bench = get_benchmark("pope")
    items = [(1, "No", "yes"), (2, "No", "no"), (3, "Yes", "yes"), (4, "No", "no"), (5, "Yes", "yes"), (6, "No", "no")]
    rows = [
        bench.score(Sample(id=str(i), question="q", answers=[label], meta={"category": "adversarial"}), pred)
        for i, pred, label in items
    ]
    assert [row["correct"] for row in rows] == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
