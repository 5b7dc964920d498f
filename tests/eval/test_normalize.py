"""benchmarks.md §3.4: the three VQA normalisers, one row per input."""

from __future__ import annotations

import pytest

from mmaccel.eval.benchmarks.normalize import (
    CONTRACTIONS,
    evalai_normalize,
    official_normalize,
    vlmevalkit_normalize,
)

# input, official (§3.1), EvalAI (§3.2), VLMEvalKit (§3.3)
TABLE = [
    ("Yes.", "yes", "yes", "yes"),
    ("t-shirt", "t shirt", "t shirt", "t shirt"),
    ("1,000", "1000", "1000", "1000"),
    ("1,000-2000", "10002000", "1000 2000", "10002000"),
    ("5.", "5", "5", "5."),
    ("red,white", "red white", "redwhite", "red white"),
    ("it's", "it's", "it 's", "it's"),
    ("A dog.", "dog", "dog", "dog"),
    ("dont know", "don't know", "don't know", "don't know"),
    ("U.S.A.", "usa", "usa", "usa"),
    ("(a)", "", "", ""),
    ("an apple a day", "apple day", "apple day", "apple day"),
    ("ten", "10", "10", "10"),
    ("eleven", "eleven", "eleven", "eleven"),
    ("Im here", "im here", "im here", "im here"),
    ("oclock", "o'clock", "o'clock", "o'clock"),
    ("100%", "100%", "100%", "100%"),
    ("#1", "#1", "#1", "#1"),
]


@pytest.mark.parametrize(("text", "official", "evalai", "vlmevalkit"), TABLE)
def test_normalizers_match_reference_table(text, official, evalai, vlmevalkit):
    assert official_normalize(text) == official
    assert evalai_normalize(text) == evalai
    assert vlmevalkit_normalize(text) == vlmevalkit


def test_period_regex_keeps_decimals_and_removes_at_most_32_periods():
    assert official_normalize("3.5") == "3.5"
    assert official_normalize("one.two") == "onetwo"
    # count=re.UNICODE (32): the 33rd period survives in the official and EvalAI normalisers
    assert official_normalize("x" + "." * 33) == "x."
    assert evalai_normalize("x" + "." * 33) == "x."


def test_contractions_map_is_complete_with_its_quirks():
    assert len(CONTRACTIONS) == 120
    assert CONTRACTIONS["somebody'd"] == "somebodyd"
    assert official_normalize("somebody'd") == "somebodyd"
