"""Run a model on the synthetic suites and score it with the real benchmarks' scorers.

:func:`generate_answers` is the one function that runs the model: batched greedy ``generate()`` with left
padding through the processor's chat template, for any LLaVA-style model and processor (the toy model or a
local checkpoint), and also inside ``mmaccel.apply(...)``. :func:`evaluate_suite` loads a suite with the real
loader, builds each question's prompt with the benchmark's own ``prompt()`` (protocol ``llava`` by default),
writes ``predictions.jsonl`` in the format ``mmaccel score`` reads, and scores that file with
:func:`~mmaccel.eval.benchmarks.score.score_predictions`, exactly as ``mmaccel score`` does.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmaccel.errors import ConfigError
from mmaccel.eval.benchmarks import Benchmark, Sample, get_benchmark
from mmaccel.eval.benchmarks.score import score_predictions
from mmaccel.toy.suites import get_suite, read_manifest, write_suite

__all__ = [
    "SuiteResult",
    "bootstrap_se",
    "evaluate_suite",
    "generate_answers",
    "prepare_suite",
    "request_key",
    "standard_error",
]

log = logging.getLogger(__name__)


def _open_image(image: Any):
    from PIL import Image

    if isinstance(image, (str, Path)):
        with Image.open(image) as handle:
            return handle.convert("RGB")
    return image.convert("RGB")


def request_key(image: Any, text: str) -> tuple[Any, str]:
    """Requests with equal keys get one generation: the same image file (or image object) and the same text."""
    return (str(image) if isinstance(image, (str, Path)) else id(image), text)


@torch.no_grad()
def generate_answers(
    model,
    processor,
    requests: Sequence[tuple[Any, str]],
    batch_size: int = 32,
    max_new_tokens: int = 8,
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Greedy answers to ``(image, text)`` requests, in order; ``image`` is a path or a PIL image.

    ``text`` is the user text after the image (a benchmark's ``prompt()``); it is wrapped in the processor's
    chat template with a generation prompt. Requests are sorted by length so that batches carry little
    padding, padded on the left, and identical requests (same image path and text) are generated once.
    ``progress(n)`` is called after each batch with the number of requests it answered.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size}: must be a positive number of prompts")
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens={max_new_tokens}: must be at least 1")
    keys = [request_key(image, text) for image, text in requests]
    first: dict[Any, int] = {}
    for index, key in enumerate(keys):
        first.setdefault(key, index)
    copies = Counter(first[key] for key in keys)  # unique request index -> how many requests it answers
    unique = sorted(first.values(), key=lambda index: -len(requests[index][1]))
    tokenizer = processor.tokenizer
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    answers: dict[int, str] = {}
    try:
        for start in range(0, len(unique), batch_size):
            chunk = unique[start : start + batch_size]
            texts = [
                processor.apply_chat_template(
                    [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": requests[i][1]}]}],
                    add_generation_prompt=True,
                )
                for i in chunk
            ]
            images = [_open_image(requests[i][0]) for i in chunk]
            inputs = processor(images=images, text=texts, return_tensors="pt", padding=True).to(model.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)  # [b, L + new]
            decoded = processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            answers.update(zip(chunk, (text.strip() for text in decoded)))
            if progress is not None:
                progress(sum(copies[index] for index in chunk))
    finally:
        tokenizer.padding_side = side
    return [answers[first[key]] for key in keys]


# Benchmarks whose headline is the mean of one per-row score (in [0, 1]): their standard error is analytic.
ROW_SCORES = {"gqa": "accuracy", "scienceqa_img": "correct", "textvqa": "accuracy", "vqav2": "accuracy"}


def standard_error(
    bench: Benchmark, rows: list[dict[str, Any]], units: list[str], protocol: str = "llava", draws: int = 200
) -> float:
    """Standard error of the headline: ``100 * sd / sqrt(n)`` for per-row means, else :func:`bootstrap_se`."""
    if bench.name in ROW_SCORES:
        values = np.array([row[ROW_SCORES[bench.name]] for row in rows], dtype=float)
        return float(100 * values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
    return bootstrap_se(bench, rows, units, protocol, draws)


def _unit(benchmark: str, sample: Sample) -> str:
    """The sampling unit a bootstrap resamples: the image (MME, POPE), the question (MMBench), else the row."""
    if benchmark == "mme":
        return sample.meta["image_id"]
    if benchmark == "pope":
        return str(sample.image)
    if benchmark == "mmbench":
        return str(int(sample.meta["index"]) % 1_000_000)
    return sample.id


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


def prepare_suite(name: str, root: str | Path, size: int | None = None) -> Path:
    """``root`` holding suite ``name`` at ``size``: reused when its manifest matches, written otherwise."""
    suite = get_suite(name)
    root = Path(root)
    manifest = read_manifest(root) if root.is_dir() else None
    wanted = suite.size if size is None else size
    if manifest is None or (manifest.get("suite"), manifest.get("size")) != (name, wanted):
        write_suite(name, root, size)
    return root


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
        units = [_unit(suite.benchmark, sample) for sample in samples]
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
