"""Chance level of a benchmark: the headline a model answering at random would get on the same samples.

A ratio to the unmodified model ("% of base") only means something when that model is clearly better than
guessing; the report prints it where the baseline is at least two standard errors above this level.

The level is estimated with the benchmark's own scorer on random answers, so it follows its rules exactly
(POPE's F1 per split, MME's acc + acc+, MMBench's circular evaluation): yes/no benchmarks answer ``Yes`` or ``No``
at random, multiple-choice benchmarks a random option letter of each question's own options. Open-ended
benchmarks (GQA, TextVQA, VQAv2) have no finite answer set; their chance level is taken as 0.
"""

from __future__ import annotations

import statistics
import string
from typing import Any

import numpy as np

__all__ = ["DRAWS", "chance_level", "random_answer"]

DRAWS = 16  # random answer sets averaged; the estimate's own error is far below a run's standard error
YES_NO = ("pope", "mme")


def random_answer(scorer: str, sample: Any, rng: np.random.Generator) -> str | None:
    """A random valid answer to ``sample`` of benchmark ``scorer``; ``None`` for an open-ended benchmark."""
    if scorer in YES_NO:
        return ("Yes", "No")[int(rng.integers(2))]
    meta = getattr(sample, "meta", {}) or {}
    if isinstance(meta.get("options"), dict) and meta["options"]:  # MMBench: letter -> option text
        letters = sorted(meta["options"])
    elif isinstance(meta.get("choices"), list) and meta["choices"]:  # ScienceQA: option texts in order
        letters = list(string.ascii_uppercase[: len(meta["choices"])])
    else:
        return None
    return letters[int(rng.integers(len(letters)))]


def chance_level(bench: Any, samples: list[Any], protocol: str = "llava", seed: int = 0) -> float | None:
    """The mean headline of ``bench`` over :data:`DRAWS` sets of random answers to ``samples`` (0.0 for an
    open-ended benchmark, ``None`` without samples)."""
    if not samples:
        return None
    rng = np.random.default_rng(seed)
    if random_answer(bench.name, samples[0], rng) is None:
        return 0.0
    values = []
    for _ in range(DRAWS):
        rows = [bench.score(sample, random_answer(bench.name, sample, rng) or "", protocol) for sample in samples]
        metrics = bench.aggregate(rows, protocol)
        values.append(float(metrics[metrics["headline"]]))
    return statistics.fmean(values)
