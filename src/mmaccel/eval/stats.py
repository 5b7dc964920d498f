"""Standard errors of a benchmark's headline metric: analytic for per-row means, else a bootstrap over units.

A bootstrap resamples whole *units* (:func:`sampling_unit`): MME's image (its acc+ pairs two questions per
image), POPE's image (three splits share it), MMBench's question (CircularEval rotates it), else the row.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmaccel.eval.benchmarks import Benchmark, Sample

__all__ = ["ROW_SCORES", "bootstrap_se", "sampling_unit", "standard_error"]

# Benchmarks whose headline is the mean of one per-row score (in [0, 1]): their standard error is analytic.
ROW_SCORES = {"gqa": "accuracy", "scienceqa_img": "correct", "textvqa": "accuracy", "vqav2": "accuracy"}


def sampling_unit(benchmark: str, sample: Sample) -> str:
    """What a bootstrap of ``benchmark`` (a registered benchmark name) resamples for ``sample``."""
    if benchmark == "mme":
        return str(sample.meta.get("image_id", sample.id))
    if benchmark == "pope":
        return str(sample.image)
    if benchmark == "mmbench":
        return str(int(sample.meta["index"]) % 1_000_000)
    return sample.id


def standard_error(
    bench: Benchmark, rows: list[dict[str, Any]], units: list[str], protocol: str = "llava", draws: int = 200
) -> float:
    """Standard error of the headline: ``100 * sd / sqrt(n)`` for per-row means, else :func:`bootstrap_se`."""
    if bench.name in ROW_SCORES:
        values = np.array([row[ROW_SCORES[bench.name]] for row in rows], dtype=float)
        return float(100 * values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
    return bootstrap_se(bench, rows, units, protocol, draws)


def bootstrap_se(
    bench: Benchmark, rows: list[dict[str, Any]], units: list[str], protocol: str = "llava", draws: int = 100
) -> float:
    """Bootstrap standard error of the headline of ``bench.aggregate(rows)``, resampling whole units.

    Resampled copies of a unit get distinct image ids and circular groups, so MME's acc+ and MMBench's
    CircularEval still see each copy as one image or question.
    """
    by_unit: dict[str, list[dict[str, Any]]] = {}
    for row, unit in zip(rows, units):
        by_unit.setdefault(unit, []).append(row)
    groups = list(by_unit.values())
    rng = np.random.default_rng(0)
    values = []
    for _ in range(draws):
        sample: list[dict[str, Any]] = []
        for copy, index in enumerate(rng.integers(0, len(groups), size=len(groups))):
            for row in groups[int(index)]:
                if "image_id" in row or "group" in row:
                    row = dict(row)
                    for key in ("image_id", "group"):
                        if key in row:
                            row[key] = (row[key], copy)
                sample.append(row)
        metrics = bench.aggregate(sample, protocol)
        values.append(metrics[metrics["headline"]])
    return float(np.std(values, ddof=1))
