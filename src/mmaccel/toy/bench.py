"""Score a model on one synthetic suite, as ``mmaccel toy bench`` does, with the evaluation's own pieces.

:func:`evaluate_suite` loads a suite with the real loader, builds each question's prompt with the benchmark's own
``prompt()`` (protocol ``llava`` by default), answers with :func:`mmaccel.eval.generation.generate_answers`,
writes ``predictions.jsonl`` in the format ``mmaccel score`` reads, scores that file with
:func:`~mmaccel.eval.benchmarks.score.score_predictions`, exactly as ``mmaccel score`` does, and adds the standard
error of :func:`mmaccel.eval.stats.standard_error`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmaccel.eval.benchmarks import get_benchmark
from mmaccel.eval.benchmarks.score import score_predictions
from mmaccel.eval.generation import generate_answers, request_key
from mmaccel.eval.stats import sampling_unit, standard_error
from mmaccel.toy.suites import get_suite

__all__ = ["SuiteResult", "evaluate_suite"]

log = logging.getLogger(__name__)


@dataclass
class SuiteResult:
    """What :func:`evaluate_suite` measured on one suite."""

    suite: str
    benchmark: str
    headline: str
    value: float
    se: float | None
    questions: int
    generated: int
    seconds: float
    cpu_seconds: float
    predictions: str
    metrics: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.__dataclass_fields__}


def evaluate_suite(
    model,
    processor,
    name: str,
    data_dir: str | Path,
    out_dir: str | Path,
    protocol: str = "llava",
    batch_size: int = 32,
    max_new_tokens: int = 8,
    bootstrap_draws: int = 200,
    progress: Callable[[int], None] | None = None,
) -> SuiteResult:
    """Answer every question of suite ``name`` (read from ``data_dir``) and score it with the real scorer.

    Writes ``<out_dir>/predictions.jsonl`` (``{"id", "prediction", "prompt"}`` lines) and
    ``<out_dir>/metrics.json`` (what ``mmaccel score`` writes, plus the standard error of the headline:
    analytic for per-question means, a bootstrap of ``bootstrap_draws`` draws over images or questions for MME,
    POPE and MMBench; ``bootstrap_draws=0`` skips it).
    ``seconds`` (wall) and ``cpu_seconds`` (this process, all threads) cover loading, generation and scoring, not
    the bootstrap.
    """
    suite = get_suite(name)
    bench = get_benchmark(suite.benchmark)
    bench.check(protocol)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start, cpu_start = time.perf_counter(), time.process_time()
    samples = bench.load(data_dir)
    prompts = [bench.prompt(sample, protocol) for sample in samples]
    requests = [(sample.image, prompt) for sample, prompt in zip(samples, prompts)]
    answers = generate_answers(model, processor, requests, batch_size, max_new_tokens, progress)
    predictions = out_dir / "predictions.jsonl"
    with predictions.open("w", encoding="utf-8") as handle:
        for sample, prompt, answer in zip(samples, prompts, answers):
            handle.write(json.dumps({"id": sample.id, "prediction": answer, "prompt": prompt}) + "\n")
    scored = score_predictions(suite.benchmark, data_dir, predictions, protocol=protocol)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    metrics = scored["metrics"]
    headline = metrics["headline"]
    se = None
    if bootstrap_draws > 1:
        rows = [bench.score(sample, answer, protocol) for sample, answer in zip(samples, answers)]
        units = [sampling_unit(suite.benchmark, sample) for sample in samples]
        se = standard_error(bench, rows, units, protocol, bootstrap_draws)
    generated = len({request_key(image, text) for image, text in requests})
    result = SuiteResult(name, suite.benchmark, headline, metrics[headline], se, len(samples), generated, seconds,
                         cpu_seconds, str(predictions), metrics)  # fmt: skip
    (out_dir / "metrics.json").write_text(
        json.dumps({**scored, "suite": name, "standard_error": se, "seconds": seconds}, indent=2) + "\n",
        encoding="utf-8",
    )
    log.info("%s: %s %.2f (SE %s) in %.1f s", name, headline, result.value, se, seconds)
    return result
