"""Run a model over (benchmark, method, budget) combinations: batched, resumable, sharded, metered.

``evaluate(config)`` writes, under ``config.out``::

    config.yaml            the config of the directory (its result-determining keys must match on a rerun)
    environment.json       versions, device, threads, processes
    metrics.json           one entry per run: headline, bootstrap SE, all benchmark metrics, efficiency summary
    .lock                  held by the evaluation writing the directory (:mod:`mmaccel.eval.lock`)
    data/<suite>/          synthetic suites written at the configured size (unless ``data`` points elsewhere)
    <benchmark>/<run>/predictions.jsonl   one line per sample (see :func:`_record`)
    <benchmark>/<run>/timing.part-<rank>.jsonl   the re-timed first batches (``repeats``)
    <benchmark>/<run>/metrics.json

``<run>`` is :attr:`RunSpec.key`: method, canonical budget and the method's options.

Generation is greedy ``generate()`` with left padding through the processor's chat template, ``batch_size``
distinct requests at a time (samples with the same image and prompt share one generation), longest prompts
first. See :mod:`mmaccel.eval.distributed` for resume and sharding and :mod:`mmaccel.eval.meter` for what the
efficiency fields mean.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import random
import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmaccel.errors import ConfigError
from mmaccel.eval import distributed
from mmaccel.eval.checks import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    check_methods,
    check_model,
    check_out_dir,
    load_model,
    model_fingerprint,
)
from mmaccel.eval.config import BASELINE, EvalConfig, budget_label, options_label
from mmaccel.eval.lock import OutLock
from mmaccel.eval.meter import BatchClock, GenerationTimer, PeakMemory, sample_efficiency, summarize, timing_header

__all__ = ["ProgressHook", "RunSpec", "check_methods", "check_model", "check_out_dir", "evaluate", "plan_runs"]

log = logging.getLogger(__name__)
TIMING_PART = "timing.part-{rank}.jsonl"  # the timed repeats of a run's first batch (no predictions)


class ProgressHook:
    """Receives progress: ``start(total)`` distinct requests to answer, then ``advance(n, run)`` per batch."""

    def start(self, total: int) -> None:
        pass

    def advance(self, n: int, run: str) -> None:
        pass


@dataclass(frozen=True)
class RunSpec:
    """One run: ``benchmark`` as configured (a suite or a benchmark name), ``method`` (``none``), ``budget`` and
    the method's hyper-parameters ``options`` (sorted (name, value) pairs)."""

    benchmark: str
    scorer: str  # the registered benchmark that loads and scores it
    synthetic: bool
    method: str
    budget: float | int | None
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def key(self) -> str:
        """The run's folder name: method, canonical budget (``1`` tokens, ``1.0`` all) and options, if any."""
        options = options_label(dict(self.options))
        return f"{self.method}-{budget_label(self.budget)}" + (f"-{options}" if options else "")

    @property
    def name(self) -> str:
        return f"{self.benchmark}/{self.key}"


def default_methods(names: list[str]) -> list[str]:
    """The methods of a sweep that names none: all but those acting before the processor (``downsample``), which
    need a dynamic-resolution model and run only when named."""
    from mmaccel.methods.base import Stage
    from mmaccel.methods.registry import get_method

    return [name for name in names if get_method(name).stage != Stage.FRAMES]


def plan_runs(config: EvalConfig) -> list[RunSpec]:
    """Every run of ``config``, validated (names, budgets, hyper-parameters) before any model is loaded."""
    from mmaccel.eval.benchmarks import get_benchmark
    from mmaccel.eval.suites import find_suite, list_suites
    from mmaccel.methods.registry import build_method, list_methods

    benchmarks = config.benchmarks or list_suites()
    methods = config.methods or [BASELINE, *default_methods(list_methods())]
    for name, values in (("benchmark", benchmarks), ("method", methods)):
        twice = sorted({value for value in values if values.count(value) > 1})
        if twice:
            raise ConfigError(f"--{name} names {', '.join(twice)} more than once; each runs once")
    unknown_options = sorted(set(config.method_options) - set(methods))
    if unknown_options:
        raise ConfigError(f"method_options names {', '.join(unknown_options)}, which are not among the methods")
    runs: list[RunSpec] = []
    for benchmark in benchmarks:
        suite = find_suite(benchmark)
        if suite is not None:
            scorer, synthetic = suite.benchmark, True
        else:
            scorer, synthetic = get_benchmark(benchmark).name, False  # ConfigError lists the known benchmarks
            if config.data is None:
                raise ConfigError(
                    f"benchmark {benchmark!r} is a real benchmark: pass --data DIR with its files, or use a "
                    f"synthetic suite ({', '.join(list_suites())})"
                )
        get_benchmark(scorer).check(config.protocol)
        for method in methods:
            if method == BASELINE:
                runs.append(RunSpec(benchmark, scorer, synthetic, BASELINE, None))
                continue
            options = config.method_options.get(method, {})
            for budget in config.budgets:
                build_method(method, budget, **options)  # validates
                runs.append(RunSpec(benchmark, scorer, synthetic, method, budget, tuple(sorted(options.items()))))
    real = {run.benchmark for run in runs if not run.synthetic}
    if len(real) > 1 or (real and any(run.synthetic for run in runs)):
        raise ConfigError(
            f"--data holds one real benchmark; run {', '.join(sorted(real))} and the synthetic suites in separate "
            "commands"
        )
    return runs


def environment(config: EvalConfig, shard: distributed.Shard) -> dict[str, Any]:
    import transformers

    import mmaccel

    device = torch.device(config.device)
    return {
        "mmaccel": mmaccel.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": config.device,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "processes": shard.world,
    }


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class _Loaded:
    """A run's samples and its distinct requests."""

    bench: Any
    samples: list[Any]
    prompts: list[str]
    requests: list[int]  # per distinct request: the index of its first sample
    members: dict[int, list[int]]  # first sample index -> every sample index with that request
    _chance: dict[str, float | None] = field(default_factory=dict)

    def chance(self, protocol: str) -> float | None:
        """The benchmark's headline for random answers on these samples (cached; see :mod:`mmaccel.eval.chance`)."""
        from mmaccel.eval.chance import chance_level

        if protocol not in self._chance:
            self._chance[protocol] = chance_level(self.bench, self.samples, protocol)
        return self._chance[protocol]


def _load_run(config: EvalConfig, run: RunSpec, data_root: Path) -> _Loaded:
    from mmaccel.eval.benchmarks import get_benchmark
    from mmaccel.eval.generation import request_key
    from mmaccel.eval.suites import prepare_suite

    bench = get_benchmark(run.scorer)
    if run.synthetic:
        folder = prepare_suite(run.benchmark, data_root / run.benchmark, config.limit_for(run.benchmark) or None)
        samples = bench.load(folder)
    else:
        samples = bench.load(config.data, limit=config.limit_for(run.benchmark) or None)
    prompts = [bench.prompt(sample, config.protocol) for sample in samples]
    first: dict[Any, int] = {}
    members: dict[int, list[int]] = {}
    for index, (sample, prompt) in enumerate(zip(samples, prompts)):
        head = first.setdefault(request_key(sample.image, prompt), index)
        members.setdefault(head, []).append(index)
    requests = sorted(members, key=lambda index: (-len(prompts[index]), index))
    return _Loaded(bench, samples, prompts, requests, members)


def evaluate(
    config: EvalConfig, progress: ProgressHook | None = None, loaded_model: tuple[Any, Any] | None = None
) -> list[dict[str, Any]]:
    """Run every run of ``config`` and return the per-run metrics (rank 0; other processes return ``[]``).

    ``loaded_model``: an already loaded ``(model, processor)`` to use instead of loading ``config.model``.
    Everything that can be refused is refused before ``config.out`` is created or changed: names, budgets and
    hyper-parameters (:func:`plan_runs`), the model folder (loaded first), each method on that model
    (:func:`check_methods`) and a results directory of another config (:func:`check_out_dir`). Rank 0 then holds
    the directory's lock (:class:`~mmaccel.eval.lock.OutLock`) until the report's inputs are written.
    """
    progress = progress or ProgressHook()
    runs = plan_runs(config)
    if loaded_model is None:
        check_model(config.model)
    out = Path(config.out)
    shard = distributed.shard(config.device)
    if shard.device(config.device) != config.device:
        config = config.with_overrides({"device": shard.device(config.device)})
    try:
        if config.threads:
            torch.set_num_threads(config.threads)
        if loaded_model is None:
            loaded_model = load_model(config)
        model, processor = loaded_model
        check_methods(runs, model)
        data_root = Path(config.data) if config.data is not None else out / "data"
        firsts = list({run.benchmark: run for run in runs}.values())
        # real data is only read: a folder that does not match its benchmark is refused before --out is made
        loaded = {run.benchmark: _load_run(config, run, data_root) for run in firsts if not run.synthetic}
        if shard.is_main:
            check_out_dir(config, out)
            out.mkdir(parents=True, exist_ok=True)
        with OutLock(out) if shard.is_main else nullcontext():
            return _evaluate_locked(config, runs, loaded, progress, model, processor, out, shard)
    finally:
        shard.close()


def _evaluate_locked(config, runs, loaded, progress, model, processor, out: Path, shard) -> list[dict[str, Any]]:
    import yaml

    data_root = Path(config.data) if config.data is not None else out / "data"
    firsts = [run for run in {run.benchmark: run for run in runs}.values() if run.benchmark not in loaded]
    if shard.is_main:  # write the synthetic suites once, before the other processes read them
        check_out_dir(config, out)  # again: another evaluation may have written it while this one loaded
        loaded.update({run.benchmark: _load_run(config, run, data_root) for run in firsts})
        if not (out / CONFIG_FILE).is_file():
            (out / CONFIG_FILE).write_text(yaml.safe_dump(config.as_dict(), sort_keys=False), encoding="utf-8")
            weights = {"model": config.model, "model_weights": model_fingerprint(config.model)}
            (out / WEIGHTS_FILE).write_text(json.dumps(weights, indent=2) + "\n", encoding="utf-8")
    shard.barrier()
    if not shard.is_main:
        loaded.update({run.benchmark: _load_run(config, run, data_root) for run in firsts})
    todo = {run: _todo(run, loaded[run.benchmark], out, shard) for run in runs}
    shard.barrier()  # every process has read what is done before anyone appends
    total = sum(len(requests) for requests in todo.values())
    progress.start(total)
    for index, run in enumerate(run for run in runs if todo[run]):
        warm = config.batch_size if index == 0 else 2  # the process's first batch also grows its buffers
        _generate_run(config, run, loaded[run.benchmark], todo[run], model, processor, out, shard, progress, warm)
    shard.barrier()
    results = []
    if shard.is_main:
        env = environment(config, shard)
        (out / "environment.json").write_text(json.dumps(env, indent=2) + "\n", encoding="utf-8")
        results = [_finish_run(config, run, loaded[run.benchmark], out) for run in runs]
        summary = {"fingerprint": config.fingerprint(), "config": config.as_dict(), "runs": results}
        (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    shard.barrier()
    return results


def _run_dir(out: Path, run: RunSpec) -> Path:
    return out / run.benchmark / run.key


def _todo(run: RunSpec, data: _Loaded, out: Path, shard: distributed.Shard) -> list[int]:
    """This process's distinct requests (first sample indices) that still lack predictions."""
    done = distributed.done_records(_run_dir(out, run))
    mine = data.requests[shard.rank :: shard.world]
    return [index for index in mine if any(data.samples[member].id not in done for member in data.members[index])]


def _generate_run(config, run, data, todo, model, processor, out, shard, progress, warm: int = 2) -> None:
    import mmaccel
    from mmaccel.engine.visual import visual_tokens_per_row
    from mmaccel.models.registry import adapter_for
    from mmaccel.models.shape import describe, visual_work

    run_dir = _run_dir(out, run)
    run_dir.mkdir(parents=True, exist_ok=True)
    part = run_dir / distributed.PART.format(rank=shard.rank)
    distributed.read_records(part, repair=True)
    adapter = adapter_for(model)
    shape = describe(adapter)
    element_bytes = torch.empty((), dtype=model.dtype).element_size()
    token = uuid.uuid4().hex[:8]  # tells apart the batches of different processes and reruns
    _seed(config.seed)
    session = None
    if run.method != BASELINE:
        session = mmaccel.apply(model, run.method, budget=run.budget, **dict(run.options))
    tokenizer = processor.tokenizer
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        if config.timing:  # warm-up: the first call of a configuration pays one-off costs
            _generate(model, processor, data, todo[:warm], 2, None, session)
        for start in range(0, len(todo), config.batch_size):
            chunk = todo[start : start + config.batch_size]
            timer = GenerationTimer(config.device) if config.timing else None
            with PeakMemory(torch.device(config.device)) as memory, BatchClock() as clock:
                answers, inputs, new_tokens = _generate(
                    model, processor, data, chunk, config.max_new_tokens, timer, session
                )
            calls_stats = session.last_call.stats if session is not None else None
            records = []
            works = visual_work(adapter, inputs)  # per row: tiles, frames and patches through the tower
            visual_per_row = visual_tokens_per_row(adapter, inputs) if calls_stats is None else None
            for row, index in enumerate(chunk):
                if calls_stats is not None:
                    stats = calls_stats[row]
                else:
                    stats = _baseline_stats(visual_per_row[row], works[row], shape)
                text = int(inputs["attention_mask"][row].sum()) - stats.visual_tokens  # text, markers, newlines
                efficiency = sample_efficiency(stats, shape, text, new_tokens[row], element_bytes, works[row])
                efficiency = efficiency.as_dict()
                efficiency["timing"] = _timing(timer, len(chunk), f"{token}-{start}", memory, clock)
                efficiency["timing"]["batch_limit"] = config.batch_size
                for member in data.members[index]:
                    records.append(_record(data, member, answers[row], efficiency))
            distributed.append_records(part, records)
            progress.advance(len(chunk), run.name)
        if config.timing:
            _repeat_timing(config, run_dir / TIMING_PART.format(rank=shard.rank), token, todo, data, model,
                           processor, session, timed=-(-len(todo) // config.batch_size))  # fmt: skip
    finally:
        tokenizer.padding_side = side
        if session is not None:
            session.close()


def _baseline_stats(visual: int, work, shape):
    """The unmodified model's accounting: every visual token in every layer (structural tokens count as text, as
    in a session's stats)."""
    from mmaccel.engine.context import SampleStats

    return SampleStats(images=work.items, visual_tokens=visual, layer_tokens=[visual] * shape.decoder.layers)


def _repeat_timing(config, path: Path, token: str, todo, data, model, processor, session, timed: int) -> None:
    """Time the run's first batch again until the run has ``config.repeats`` timed batches; the answers of the
    repeats are dropped, their timing goes to ``path`` (one line per repeat)."""
    chunk = todo[: config.batch_size]
    lines = []
    for repeat in range(1, config.repeats - timed + 1):
        timer = GenerationTimer(config.device)
        with PeakMemory(torch.device(config.device)) as memory, BatchClock() as clock:
            _generate(model, processor, data, chunk, config.max_new_tokens, timer, session)
        timing = _timing(timer, len(chunk), f"{token}-0-repeat{repeat}", memory, clock)
        lines.append({**timing, "batch_limit": config.batch_size, "repeat": repeat})
    if lines:
        distributed.append_records(path, lines)


def _timing(
    timer: GenerationTimer | None, batch: int, batch_id: str, memory: PeakMemory, clock: BatchClock
) -> dict[str, Any]:
    timing: dict[str, Any] = {"batch": batch_id, "batch_size": batch, "peak_bytes": memory.peak_bytes}
    timing.update(clock.as_dict())
    if timer is not None and timer.prefill_ms is not None:
        timing["prefill_ms"] = timer.prefill_ms
        timing["prefill_ms_per_sample"] = timer.prefill_ms / batch
        timing["decode_ms_per_token"] = timer.decode_ms_per_token
    return timing


def _record(data: _Loaded, index: int, answer: str, efficiency: dict[str, Any]) -> dict[str, Any]:
    sample = data.samples[index]
    return {"id": sample.id, "prompt": data.prompts[index], "prediction": answer, "efficiency": efficiency}


def _generate(model, processor, data: _Loaded, chunk: list[int], max_new_tokens: int, timer, session=None):
    """Greedy answers of the requests ``chunk`` (first sample indices), the model inputs and tokens generated."""
    from mmaccel.eval.generation import generate_batch

    requests = [(data.samples[index].image, data.prompts[index]) for index in chunk]
    return generate_batch(model, processor, requests, max_new_tokens, timer, session)


def _finish_run(config: EvalConfig, run: RunSpec, data: _Loaded, out: Path) -> dict[str, Any]:
    """Merge the part files, score the predictions with the benchmark's scorer, write the run's metrics."""
    from mmaccel.eval.stats import bootstrap_se, sampling_unit

    run_dir = _run_dir(out, run)
    run_dir.mkdir(parents=True, exist_ok=True)
    records = distributed.merge_parts(run_dir, [sample.id for sample in data.samples])
    timing_parts = sorted(run_dir.glob(TIMING_PART.format(rank="*")))
    repeats = [line for path in timing_parts for line in distributed.read_records(path)]
    by_id = {record["id"]: record for record in records}
    missing = [sample.id for sample in data.samples if sample.id not in by_id]
    if missing:
        raise ConfigError(f"{run.name}: {len(missing)} samples have no prediction (first: {missing[0]}); rerun")
    started = time.perf_counter()
    rows = [data.bench.score(s, by_id[s.id]["prediction"], config.protocol) for s in data.samples]
    metrics = data.bench.aggregate(rows, config.protocol)
    units = [sampling_unit(run.scorer, sample) for sample in data.samples]
    se = bootstrap_se(data.bench, rows, units, config.protocol, draws=100) if len(set(units)) > 1 else None
    result = {
        "run": run.name,
        "benchmark": run.benchmark,
        "scorer": run.scorer,
        "method": run.method,
        "budget": run.budget,
        "options": dict(run.options),
        "samples": len(data.samples),
        "generations": len(data.requests),
        "headline": metrics["headline"],
        "value": metrics[metrics["headline"]],
        "se": se,
        "metrics": metrics,
        "chance": data.chance(config.protocol),
        "efficiency": summarize([record["efficiency"] for record in records], repeats),
        "timing": timing_header([record["efficiency"] for record in records], repeats),
    }
    (run_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    log.debug("%s scored in %.2f s", run.name, time.perf_counter() - started)
    return result
