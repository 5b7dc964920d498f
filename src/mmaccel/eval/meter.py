"""Efficiency of each sample: visual tokens per stage, analytic FLOPs, KV-cache bytes, measured time and memory.

Counts come from the session's per-sample :class:`~mmaccel.engine.context.SampleStats`; FLOPs from the model's
:class:`~mmaccel.ops.flops.ModelShape` (vision tower, projector, decoder and LM head; formulas in
:mod:`mmaccel.ops.flops`) and the sample's :class:`~mmaccel.ops.flops.VisualWork` (the tiles, frames and patches
its inputs put through the tower, :func:`mmaccel.models.shape.visual_work`). Time is measured inside the model's
own ``generate()`` by a streamer (:class:`GenerationTimer`): ``generate`` hands it the prompt before the first
forward and every new token after each step, so the time to the second hand-over is the prefill with the first
token (TTFT) and the later gaps are decode steps. On CUDA the timer synchronises the device before reading the clock.

What the timing holds: the vision tower, the method's own work (its scoring, gathers and the prompt rebuild, all
inside the hooks the method needs) and the language model. What it does not hold: no timing hook is added to the
model (the streamer is called by ``generate`` between steps, as for any streamed generation), the unmodified
baseline runs with no hook at all, and the per-sample accounting that feeds this module reads the session's
records after ``generate`` returns. Pre-processing (images, chat template, tokenizer) happens before the clock
starts.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmaccel.engine.context import SampleStats
from mmaccel.ops.flops import ModelShape, VisualWork

__all__ = [
    "BatchClock",
    "GenerationTimer",
    "PeakMemory",
    "kv_cache_bytes",
    "sample_efficiency",
    "sample_prefill_flops",
    "summarize",
    "timing_header",
]


class GenerationTimer:
    """A ``generate(streamer=...)`` streamer that records when the prompt and each new token are handed over.

    ``prefill_ms``: from the prompt hand-over to the first token (the prefill forward, TTFT);
    ``decode_ms_per_token``: the mean gap between later tokens (``None`` with a single new token).
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.stamps: list[float] = []

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def put(self, value: torch.Tensor) -> None:
        self._sync()
        self.stamps.append(time.perf_counter())

    def end(self) -> None:
        pass

    @property
    def prefill_ms(self) -> float | None:
        return 1e3 * (self.stamps[1] - self.stamps[0]) if len(self.stamps) >= 2 else None

    @property
    def decode_ms_per_token(self) -> float | None:
        if len(self.stamps) < 3:
            return None
        return 1e3 * (self.stamps[-1] - self.stamps[1]) / (len(self.stamps) - 2)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


OTHER_LOAD = 0.5  # cores' worth of other processes' runnable work above which a timing counts as taken under load


def load_average() -> float | None:
    """The 1-minute load average (runnable processes, averaged), or ``None`` where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


class BatchClock:
    """``with BatchClock() as clock:`` measures a block's wall time and the process's CPU time (every thread),
    and records the settings it ran under: torch threads, usable cores and the 1-minute load average at its end.

    CPU time well above wall time means several threads computed; CPU time well below wall time on a CPU device
    means the process waited (for other processes on a loaded machine, or for I/O).
    """

    def __enter__(self) -> BatchClock:
        self.wall_ms = self.cpu_ms = 0.0
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc_info) -> None:
        self.wall_ms = 1e3 * (time.perf_counter() - self._wall)
        self.cpu_ms = 1e3 * (time.process_time() - self._cpu)
        self.load_avg = load_average()
        self.threads = torch.get_num_threads()
        self.cores = usable_cores()

    def as_dict(self) -> dict[str, Any]:
        return {
            "wall_ms": self.wall_ms, "cpu_ms": self.cpu_ms, "load_avg": self.load_avg, "threads": self.threads,
            "cores": self.cores,
        }  # fmt: skip


def _rss_peak_bytes() -> int | None:
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


@dataclass
class PeakMemory:
    """Peak memory of a block: the CUDA allocator's peak on GPU, the process's peak RSS on CPU.

    On Linux the RSS high-water mark is reset at the start (``/proc/self/clear_refs``); where it cannot be reset
    the value is the process's peak so far, and ``source`` says so.
    """

    device: torch.device
    peak_bytes: int | None = None
    source: str = ""

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.source = "cuda max_memory_allocated"
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
                self.source = "process peak RSS (VmHWM, reset per run)"
            except OSError:
                self.source = "process peak RSS (VmHWM since start)"
        return self

    def __exit__(self, *exc_info) -> None:
        if self.device.type == "cuda":
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
        else:
            self.peak_bytes = _rss_peak_bytes()


def kv_cache_bytes(shape: ModelShape, layer_tokens: list[int], element_bytes: int) -> int:
    """Bytes of keys and values held for one sample with ``layer_tokens`` cached tokens per decoder layer."""
    return shape.kv_bytes(layer_tokens, element_bytes)


def _layer_visual(stats: SampleStats, shape: ModelShape) -> list[int]:
    return stats.layer_tokens or [stats.visual_tokens] * shape.decoder.layers


def sample_prefill_flops(stats: SampleStats, shape: ModelShape, work: VisualWork, text_tokens: int) -> float:
    """Analytic prefill FLOPs of one sample: ``work`` its vision side, ``text_tokens`` its non-visual prompt
    tokens (every prompt token the stats do not count as visual: text, vision start/end markers, anyres
    newlines). Each decoder layer runs on ``text_tokens`` + the visual tokens the stats record for it; the
    projector on the tokens a pre-LLM method kept where the family reduces at its input (LLaVA-1.5), else on
    all of ``work``'s; the tower blocks on ``stats.tower_tokens`` when a method reduced inside the tower."""
    projected = stats.projected_tokens if shape.reduces_before_projector else None
    return shape.prefill_flops(
        [text_tokens + n for n in _layer_visual(stats, shape)],
        projected_tokens=projected,
        tower_tokens=stats.tower_tokens or None,
        work=work,
    )


@dataclass
class SampleEfficiency:
    """The efficiency record of one sample (one line of ``predictions.jsonl`` holds it under ``efficiency``)."""

    tokens: dict[str, Any]
    text_tokens: int
    new_tokens: int
    prefill_flops: float
    decode_flops: float
    kv_bytes: int
    timing: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "text_tokens": self.text_tokens,
            "new_tokens": self.new_tokens,
            "prefill_flops": self.prefill_flops,
            "decode_flops": self.decode_flops,
            "kv_bytes": self.kv_bytes,
            "timing": self.timing,
        }


def sample_efficiency(
    stats: SampleStats,
    shape: ModelShape,
    text_tokens: int,
    new_tokens: int,
    element_bytes: int,
    work: VisualWork | None = None,
) -> SampleEfficiency:
    """Counts, FLOPs and KV bytes of one sample.

    ``text_tokens``: the sample's non-visual prompt tokens (padding excluded; see :func:`sample_prefill_flops`);
    ``new_tokens``: tokens generated (the first comes from the prefill, the others from decode steps); ``work``:
    the sample's vision side (default: ``stats.images`` images of a fixed-resolution model). KV bytes are
    those held when generation ends: per layer the prompt tokens that layer kept plus the generated ones (the
    last token's own key and value are never written, as in ``generate``).
    """
    work = work if work is not None else shape.fixed_work(stats.images)
    layer_cache = [text_tokens + n for n in _layer_visual(stats, shape)]  # per layer, cached after prefill
    decode_steps = max(new_tokens - 1, 0)
    return SampleEfficiency(
        tokens=stats.as_dict(),
        text_tokens=text_tokens,
        new_tokens=new_tokens,
        prefill_flops=sample_prefill_flops(stats, shape, work, text_tokens),
        decode_flops=shape.decode_flops(layer_cache, decode_steps) if decode_steps else 0.0,
        kv_bytes=kv_cache_bytes(shape, [n + decode_steps for n in layer_cache], element_bytes),
    )


# Per-sample quantities that a run's metrics summarise: name -> path in the efficiency record.
SUMMARY_FIELDS: dict[str, tuple[str, ...]] = {
    "visual_tokens": ("tokens", "visual_tokens"),
    "llm_input_tokens": ("tokens", "llm_input_tokens"),
    "equivalent_tokens": ("tokens", "equivalent_tokens"),
    "requested_tokens": ("tokens", "requested_tokens"),
    "achieved_tokens": ("tokens", "achieved_tokens"),
    "text_tokens": ("text_tokens",),
    "new_tokens": ("new_tokens",),
    "prefill_flops": ("prefill_flops",),
    "decode_flops": ("decode_flops",),
    "kv_bytes": ("kv_bytes",),
    "prefill_ms": ("timing", "prefill_ms"),
    "prefill_ms_per_sample": ("timing", "prefill_ms_per_sample"),
    "decode_ms_per_token": ("timing", "decode_ms_per_token"),
    "peak_bytes": ("timing", "peak_bytes"),
    "wall_ms": ("timing", "wall_ms"),
    "cpu_ms": ("timing", "cpu_ms"),
    "load_avg": ("timing", "load_avg"),
}


def _get(record: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(record, dict) or key not in record:
            return None
        record = record[key]
    return record


def timed_batches(records: list[dict[str, Any]], repeats: list[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """The timing of every batch: one per distinct ``batch`` id of ``records`` (efficiency dicts, whose
    timing repeats on each sample of a batch), plus ``repeats`` (timing dicts of re-timed batches)."""
    batches: dict[Any, dict[str, Any]] = {}
    for timing in [record.get("timing") or {} for record in records] + list(repeats):
        if timing.get("batch") is not None:
            batches.setdefault(timing["batch"], timing)
    return list(batches.values())


def spread(values: list[float]) -> dict[str, float]:
    """Mean, median, maximum, quartiles (``q1``, ``q3``), interquartile range and count of ``values``."""
    if len(values) > 1:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = q3 = values[0]
    return {
        "mean": statistics.fmean(values), "median": statistics.median(values), "max": max(values), "q1": q1,
        "q3": q3, "iqr": q3 - q1, "n": len(values),
    }  # fmt: skip


def summarize(records: list[dict[str, Any]], repeats: list[dict[str, Any]] = ()) -> dict[str, dict[str, float]]:
    """Mean, median and maximum of every :data:`SUMMARY_FIELDS` quantity over ``records`` (efficiency dicts).

    Timing fields are per batch and repeated on every sample of the batch, so they are summarised over the
    timed batches (:func:`timed_batches`, with the re-timed ``repeats``), with their quartiles and IQR;
    samples without timing are skipped.
    """
    batches = timed_batches(records, repeats)
    summary: dict[str, dict[str, float]] = {}
    for name, path in SUMMARY_FIELDS.items():
        if path[0] == "timing":
            values = [float(b[path[1]]) for b in batches if b.get(path[1]) is not None]
        else:
            values = [float(v) for v in (_get(r, path) for r in records) if v is not None]
        if values:
            summary[name] = spread(values)
    return summary


def timing_header(records: list[dict[str, Any]], repeats: list[dict[str, Any]] = ()) -> dict[str, Any]:
    """The conditions a run was timed under, from its own timed batches (not the directory's latest settings):
    torch threads and ``--batch-size`` values seen, usable cores, the highest 1-minute load average, total wall
    and process CPU seconds, and ``under_load`` when that load exceeded the cores while other processes held more
    than half a core (the load less this run's own parallelism, CPU seconds over wall seconds): times then
    include waiting. The run's own threads alone never flag it: on an otherwise idle 2-core machine an evaluation
    with 2 threads keeps the load at about 2."""
    batches = timed_batches(records, repeats)
    if not batches:
        return {}
    loads = [b["load_avg"] for b in batches if b.get("load_avg") is not None]
    cores = max((b["cores"] for b in batches if b.get("cores")), default=None)
    peak_load = max(loads) if loads else None
    wall_s = sum(b.get("wall_ms") or 0.0 for b in batches) / 1e3
    cpu_s = sum(b.get("cpu_ms") or 0.0 for b in batches) / 1e3
    own = cpu_s / wall_s if wall_s > 0 else 0.0  # this run's average parallelism
    contended = peak_load is not None and cores is not None and peak_load > cores and peak_load - own > OTHER_LOAD
    return {
        "timed": any(b.get("prefill_ms") is not None for b in batches),
        "batches": len(batches),
        "threads": sorted({b["threads"] for b in batches if b.get("threads") is not None}),
        "batch_sizes": sorted({b.get("batch_limit", b.get("batch_size")) for b in batches} - {None}),
        "cores": cores,
        "load_avg_max": peak_load,
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "under_load": contended,
    }
