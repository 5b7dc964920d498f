"""Per-call overhead of the methods' own code: aten ops, host syncs and prefill ms at batch 1, 8 and 32.

Model: random weights with LLaVA-1.5's visual token count (CLIP ViT/14 at 336 px: 576 patches + CLS) but narrow and
shallow (``--layers`` x ``--hidden`` Llama decoder, ``--vision-layers`` x ``--vision-hidden`` tower), so that the
methods' bookkeeping is visible next to the model's own work on a CPU. One prompt per row (BOS, 35 text tokens,
576 image tokens, 26 text tokens; ``benchmarks/geometry.py``), every row alike.

Per configuration and batch size:

- **aten ops**: every aten op dispatched by one prefill (``TorchDispatchMode``), model and method together;
- **scalar reads**: ``aten._local_scalar_dense`` (``.item()``, ``int(t)``, ``bool(t)``) plus ``Tensor.tolist``
  calls; each is a host sync on an accelerator;
- **shape syncs**: ops whose output size depends on the data (``nonzero``, ``unique``, ``masked_select``, boolean
  indexing): also host syncs on an accelerator, though not on a CPU;
- **ms**: median prefill time of ``--runs`` timed runs after ``--warmup`` warm-up runs, all configurations of one
  batch size timed in interleaved rounds.

Prefill = ``model(**inputs, logits_to_keep=1)`` under ``mmaccel.apply``, vision tower and projector included.
``--where`` also prints where in ``mmaccel`` the syncs of the largest batch come from.

    python benchmarks/hot_paths.py --threads 1            # the tables of docs/benchmarks.md
    python benchmarks/hot_paths.py --quick                # smoke run: batch 1 and 2, one timed run
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import platform
import statistics
import sys
import time
import traceback

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import mmaccel
from geometry import Size, build_inputs, build_model

METHODS = ("none", "fastv", "sparsevlm", "visionzip", "prumerge")  # in-LLM (Stage.LLM_PREFILL), then pre-LLM
SHAPE_SYNC_OPS = {"nonzero", "_unique2", "unique_dim", "unique_consecutive", "masked_select"}


def _is_bool_index(func, args) -> bool:
    if func.__name__ != "index.Tensor":
        return False
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1])


def _unsized_repeat(name: str, kwargs) -> bool:
    return name == "repeat_interleave" and (kwargs or {}).get("output_size") is None


def _call_site() -> str:
    """The innermost ``mmaccel`` frame of the current stack, as ``path:line function``."""
    for frame in reversed(traceback.extract_stack()):
        if "/mmaccel/" in frame.filename:
            return f"{frame.filename.split('/mmaccel/', 1)[1]}:{frame.lineno} {frame.name}"
    return "(outside mmaccel)"


class OpCounter(TorchDispatchMode):
    """Counts aten ops, scalar reads (``_local_scalar_dense``) and data-dependent-shape ops."""

    def __init__(self, where: bool = False) -> None:
        super().__init__()
        self.ops = 0
        self.scalar_reads = 0
        self.shape_syncs = 0
        self.where = where
        self.sites: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        name = func.overloadpacket.__name__
        if name == "_local_scalar_dense":
            self.scalar_reads += 1
            self._note("scalar read")
        elif name in SHAPE_SYNC_OPS or _is_bool_index(func, args) or _unsized_repeat(name, kwargs):
            self.shape_syncs += 1
            self._note(name)
        return func(*args, **(kwargs or {}))

    def _note(self, kind: str) -> None:
        if self.where:
            self.sites[f"{kind:12s} {_call_site()}"] += 1


class ToListCounter(TorchFunctionMode):
    """Counts ``Tensor.tolist`` calls, which read a tensor on the host without dispatching an aten op on a CPU."""

    def __init__(self, counter: OpCounter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.tolist:
            self.counter.scalar_reads += 1
            self.counter._note("tolist")
        return func(*args, **(kwargs or {}))


def method_context(model, method: str, budget: int):
    if method == "none":
        return contextlib.nullcontext()
    return mmaccel.apply(model, method, budget=budget)


def prefill(model, inputs) -> None:
    with torch.no_grad():
        model(**inputs, logits_to_keep=1)


def count(model, inputs, method: str, budget: int, where: bool) -> OpCounter:
    counter = OpCounter(where=where)
    with method_context(model, method, budget), ToListCounter(counter), counter:
        prefill(model, inputs)
    return counter


def time_batch(model, inputs, methods: list[str], budget: int, runs: int, warmup: int) -> dict[str, float]:
    """Median ms per method at one batch size, timed in interleaved rounds."""
    samples: dict[str, list[float]] = {method: [] for method in methods}
    for round_index in range(warmup + runs):
        for method in methods:
            with method_context(model, method, budget):
                start = time.perf_counter()
                prefill(model, inputs)
                seconds = time.perf_counter() - start
            if round_index >= warmup:
                samples[method].append(seconds * 1e3)
    return {method: statistics.median(values) for method, values in samples.items()}


def markdown(rows: dict, batches: list[int], header: str) -> str:
    first, last = batches[0], batches[-1]
    columns = [
        "method",
        *(f"aten ops b{b}" for b in batches),
        "extra ops per row vs none",
        *(f"scalar reads b{b}" for b in batches),
        *(f"shape syncs b{b}" for b in batches),
        *(f"ms b{b}" for b in batches),
    ]
    lines = [
        header,
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    base = rows.get("none")
    for method, row in rows.items():
        per_row = (row["ops"][last] - row["ops"][first]) / (last - first)
        if base is not None:
            per_row -= (base["ops"][last] - base["ops"][first]) / (last - first)
        cells = [
            *(str(row["ops"][b]) for b in batches),
            f"{abs(per_row):.0f}" if round(per_row) == 0 else f"{per_row:.0f}",
            *(str(row["scalar_reads"][b]) for b in batches),
            *(str(row["shape_syncs"][b]) for b in batches),
            *(f"{row['ms'][b]:.0f}" for b in batches),
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="batches 1 and 2, one timed run: a smoke test")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="default 1 8 32; --quick 1 2")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help="'none' is the model alone")
    parser.add_argument("--budget", type=int, default=64, help="visual tokens kept per image")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers (FastV prunes at 2)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--vision-layers", type=int, default=2)
    parser.add_argument("--vision-hidden", type=int, default=128)
    parser.add_argument("--runs", type=int, default=None, help="timed runs per configuration (default 5; --quick 1)")
    parser.add_argument("--warmup", type=int, default=None, help="default 1; --quick 0")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--where", action="store_true", help="print the mmaccel call sites of the syncs")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    batches = args.batches or ([1, 2] if args.quick else [1, 8, 32])
    runs = args.runs if args.runs is not None else (1 if args.quick else 5)
    warmup = args.warmup if args.warmup is not None else (0 if args.quick else 1)
    size = Size(
        layers=args.layers, hidden=args.hidden, vision_layers=args.vision_layers, vision_hidden=args.vision_hidden
    )
    model = build_model("llava", size, torch.float32, args.device)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"

    rows = {method: {"ops": {}, "scalar_reads": {}, "shape_syncs": {}, "ms": {}} for method in args.methods}
    for batch in batches:
        inputs = build_inputs(model, "llava", args.device, torch.float32, batch)
        for method in args.methods:
            counter = count(model, inputs, method, args.budget, args.where and batch == batches[-1])
            rows[method]["ops"][batch] = counter.ops
            rows[method]["scalar_reads"][batch] = counter.scalar_reads
            rows[method]["shape_syncs"][batch] = counter.shape_syncs
            if counter.sites:
                print(f"\n{method}, batch {batch}: syncs by call site", file=sys.stderr)
                for site, n in counter.sites.most_common():
                    print(f"  {n:6d}  {site}", file=sys.stderr)
        for method, ms in time_batch(model, inputs, args.methods, args.budget, runs, warmup).items():
            rows[method]["ms"][batch] = ms
        print(f"batch {batch} done", file=sys.stderr)

    header = (
        f"Device: {args.device} ({device_name}), {args.threads} thread(s), torch {torch.__version__}, float32; "
        f"LLaVA geometry, 576 visual tokens per image, 638 tokens per row; decoder {size.layers} x d={size.hidden}, "
        f"tower {size.vision_layers} x d={size.vision_hidden}; budget {args.budget}; median of {runs} interleaved "
        f"runs after {warmup} warm-up."
    )
    print(markdown(rows, batches, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
