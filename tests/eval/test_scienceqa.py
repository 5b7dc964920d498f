"""benchmarks.md §9: ScienceQA parse table (GT = B) and released examples."""

from __future__ import annotations

import pytest

from mmaccel.eval.benchmarks import Sample, get_benchmark
from mmaccel.eval.benchmarks.scienceqa import parse_scienceqa_llava


def sample(answer: int = 1, n_choices: int = 4) -> Sample:
    choices = ["apostrophe", "run-on", "comma", "period", "colon"][:n_choices]
    return Sample(id="1", question="Which is it?", answers=[str(answer)], meta={"choices": choices, "hint": ""})


# response, LLaVA parsed, LLaVA correct, lmms-eval correct (GT = B)
PARSE_TABLE = [
    ("B", "B", True, True),
    ("b", "FAILED", False, True),
    ("B.", "FAILED", False, True),
    ("B. apostrophe", "B", True, True),
    ("(B)", "FAILED", False, False),
    ("B)", "FAILED", False, False),
    ("Answer: B", "FAILED", False, False),
    ("The answer is B.", "B", True, False),
    ("The answer is B. The answer is B.", "FAILED", False, False),
    ("B is the run-on sentence.", "FAILED", False, False),
]


@pytest.mark.parametrize(("response", "parsed", "llava_correct", "lmms_correct"), PARSE_TABLE)
def test_scienceqa_parse_table(response, parsed, llava_correct, lmms_correct):
    bench = get_benchmark("scienceqa_img")
    assert parse_scienceqa_llava(response) == parsed
    assert bench.score(sample(), response, "llava")["correct"] == float(llava_correct)
    assert bench.score(sample(), response, "lmms_eval")["correct"] == float(lmms_correct)


def test_scienceqa_letter_beyond_choices_is_wrong():
    bench = get_benchmark("scienceqa_img")
    two = sample(answer=1, n_choices=2)
    row = bench.score(two, "E", "llava")
    assert row["parsed"] == "E"
    assert row["correct"] == 0.0
    assert bench.score(two, "E", "lmms_eval")["correct"] == 0.0


def test_scienceqa_vlmevalkit_can_infer_reads_leading_letter():
    bench = get_benchmark("scienceqa_img")
    assert bench.score(sample(), "B is the run-on sentence.", "vlmevalkit")["correct"] == 1.0


@pytest.mark.parametrize(
    ("response", "answer", "parsed", "correct"),
    [("A. acquired", 0, "A", True), ("E", 0, "E", False), ("Cinder", 0, "FAILED", False)],
)
def test_scienceqa_released_examples(response, answer, parsed, correct):
    """ids 93, 42/600 and 4991 of LLaVA-1.5-13B's released output."""
    bench = get_benchmark("scienceqa_img")
    row = bench.score(sample(answer=answer), response, "llava")
    assert (row["parsed"], row["correct"]) == (parsed, float(correct))


def test_scienceqa_aggregate():
    bench = get_benchmark("scienceqa_img")
    rows = [bench.score(sample(), p) for p in ("B", "b", "The answer is B.", "C")]
    result = bench.aggregate(rows)
    assert result["img_accuracy"] == 50.0
    assert result["failed"] == 1
