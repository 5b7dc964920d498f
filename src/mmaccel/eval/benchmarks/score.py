"""Score an existing prediction file against local benchmark data (what ``mmaccel score`` runs)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mmaccel.eval.benchmarks.predictions import join_predictions, read_predictions
from mmaccel.eval.benchmarks.registry import get_benchmark

__all__ = ["score_predictions"]

log = logging.getLogger(__name__)


def score_predictions(
    benchmark: str,
    data_dir: str | Path,
    predictions_path: str | Path,
    protocol: str = "llava",
    split: str | None = None,
    on_missing: str = "error",
    on_unknown: str = "error",
) -> dict[str, Any]:
    """Load ``benchmark`` from ``data_dir``, join the predictions by id, score and aggregate them.

    Returns ``{"benchmark", "protocol", "dataset", "predictions", "metrics"}``: the dataset facts (layout,
    version, size), the join report (counts and first ids of missing and unknown predictions) and the metrics
    of :meth:`Benchmark.aggregate` (percentages on a 0-100 scale, MME in score points).
    """
    bench = get_benchmark(benchmark)
    bench.check(protocol)
    records = read_predictions(predictions_path)
    samples = bench.load(data_dir, split=split, images=False)
    info = bench.dataset_info()
    excluded = frozenset(info.pop("excluded_ids", ()))
    pairs, report = join_predictions(bench, samples, records, predictions_path, on_missing, on_unknown, excluded)
    rows = [
        bench.score(sample, prediction, protocol) if prediction is not None else bench.score_missing(sample, protocol)
        for sample, prediction in pairs
    ]
    metrics = bench.aggregate(rows, protocol)
    return {
        "benchmark": bench.name,
        "protocol": protocol,
        "reference": bench.references.get(protocol, ""),
        "dataset": info,
        "predictions": report.as_dict(),
        "metrics": metrics,
    }
