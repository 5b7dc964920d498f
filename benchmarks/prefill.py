"""Prefill speed of every method on a random-weight model with a family's real geometry, vs analytic FLOPs.

``--family llava`` (default): CLIP ViT-L/14 at 336 px (24 blocks, d=1024, 576 patches + CLS) and a Llama decoder
(``--layers``, d=``--hidden``, SwiGLU, 16 heads) with a 32000 vocabulary; the prompt has 576 image tokens and 62
text tokens. ``--family llava_next|llava_onevision|qwen2_vl|qwen2_5_vl``: that family's tower and tile or patch
grid (``benchmarks/geometry.py``), same decoder size and text. Only the methods the family supports run (the
README's support matrix). ``--quick``: narrow and shallow (4-layer d=256 decoder, 2-block d=128 tower, one run)
with the real token counts, small enough for a CPU smoke run.
Prefill = ``model(**inputs, logits_to_keep=1)`` including the vision tower and projector, as ``generate``'s
first step. Each configuration: warm-up runs, then the median of ``--runs`` timed runs (``torch.cuda.synchronize``
on GPU). Ratios are taken within one run of this script. FLOPs predictions cover LLaVA-1.5 only.

Also measured (LLaVA-1.5): FastV's scoring cost (FastV with the probe vs the same layer split handed the same keep
indices, no probe) and FastV as the reference implementations run it (eager attention + ``output_attentions``).

    python benchmarks/prefill.py --out docs/benchmarks/prefill-cpu.json
    python benchmarks/prefill.py --family qwen2_vl --quick
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import mmaccel
from geometry import FAMILIES, QUICK, Size, build_inputs, build_model
from mmaccel.errors import NotSupportedError
from mmaccel.methods.preset import PresetLayerKeep
from mmaccel.methods.registry import get_method
from mmaccel.models.registry import adapter_for
from mmaccel.models.shape import describe

METHODS = ("fastv", "visionzip", "fastervlm", "sparsevlm", "prumerge", "prumerge+", "pool", "random", "tome", "evit")
ADAPTIVE = ("prumerge", "prumerge+")  # also run with budget=None: the adaptive count of the paper
DEFAULT_BUDGETS = {"llava": [192, 128, 64]}  # others: the same fractions of their tokens per image
FRACTIONS = [0.333, 0.222, 0.111]


def time_once(model, inputs, **forward_kwargs) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        model(**inputs, logits_to_keep=1, **forward_kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run_round_robin(model, inputs, configs: dict, runs: int, warmup: int) -> dict[str, float]:
    """Median seconds per configuration, timed in interleaved rounds so that load drifts hit all alike.

    ``configs`` maps a name to ``(context_factory, forward_kwargs, attn_implementation)``.
    """
    samples: dict[str, list[float]] = {name: [] for name in configs}
    for round_index in range(warmup + runs):
        for name, (make_context, forward_kwargs, attn) in configs.items():
            model.set_attn_implementation(attn)
            with make_context():
                seconds = time_once(model, inputs, **forward_kwargs)
            if round_index >= warmup:
                samples[name].append(seconds)
        print(f"round {round_index + 1}/{warmup + runs} done", file=sys.stderr)
    model.set_attn_implementation("sdpa")
    return {name: statistics.median(values) for name, values in samples.items()}


def predicted_flops(shape, stats, text_tokens: int) -> float:
    return stats.prefill_flops(shape, text_tokens)


def markdown(result: dict) -> str:
    """The tables of docs/benchmarks.md from a result of this script."""
    n_image = result.get("image_tokens", 576)
    lines = [
        f"Family: {result.get('family', 'llava')}, {n_image} visual tokens per image. "
        f"Device: {result['device']}, {result['threads']} thread(s), {result['dtype']}, batch {result['batch']}; "
        f"decoder {result['layers']} x d={result['hidden']}, vision tower {result['vision_layers']} blocks; "
        f"median of {result['runs']} interleaved runs after {result['warmup']} warm-up.",
        "",
        "| method | budget | tokens to LLM | layer-avg tokens | prefill ms | measured speed-up | FLOPs speed-up |"
        " measured / predicted |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        tokens = row.get("llm_input_tokens", n_image)
        equivalent = row.get("equivalent_tokens", n_image)
        budget = row["budget"] or "adaptive"
        flops = row.get("flops_speedup")
        predicted = "–" if flops is None else f"x{flops:.2f}"
        ratio = "–" if flops is None else f"{row['speedup'] / flops:.2f}"
        lines.append(
            f"| {row['method']} | {budget} | {tokens} | {equivalent:.0f} | {row['prefill_ms']:.0f} | "
            f"x{row['speedup']:.2f} | {predicted} | {ratio} |"
        )
    if result["fastv_probe"]:
        lines += [
            "",
            "| FastV budget | FastV (probe) ms | same split, given indices ms | probe cost |"
            " eager + output_attentions ms |",
            "|---|---|---|---|---|",
        ]
    for row in result["fastv_probe"]:
        lines.append(
            f"| {row['budget']} | {row['fastv_ms']:.0f} | {row['same_split_no_probe_ms']:.0f} | "
            f"{row['probe_cost_pct']:+.1f} % | {row['eager_output_attentions_ms']:.0f} |"
        )
    return "\n".join(lines)


def budget_value(text: str) -> int | float:
    """``--budgets`` entries: an int (tokens per image) or a float fraction in (0, 1]."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def supported_methods(model, family: str, methods: list[str]) -> list[str]:
    """``methods`` that run on ``family`` (others are reported and skipped); a missing adapter is an error."""
    try:
        adapter = adapter_for(model)
    except NotSupportedError as error:
        raise SystemExit(f"--family {family}: this version of mmaccel has no adapter for it ({error})") from None
    kept = []
    for method in methods:
        reason = get_method(method)().unsupported_reason(adapter)
        if reason is None:
            kept.append(method)
        else:
            print(f"{method}: skipped, not supported on {family}: {reason}", file=sys.stderr)
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", default="llava", choices=FAMILIES, help="model family (geometry.py)")
    parser.add_argument("--quick", action="store_true", help="narrow, shallow model and one run: a CPU smoke test")
    parser.add_argument("--layers", type=int, default=None, help="decoder layers (default 8; --quick 4)")
    parser.add_argument("--hidden", type=int, default=None, help="decoder width (default 1024; --quick 256)")
    parser.add_argument("--vision-layers", type=int, default=None, help="default: the family's real depth")
    parser.add_argument("--vision-hidden", type=int, default=None, help="default: the family's real width")
    parser.add_argument("--probe-budgets", type=int, nargs="*", default=None, help="default: 64 on llava")
    parser.add_argument("--budgets", type=budget_value, nargs="+", default=None)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--runs", type=int, default=None, help="default 3; --quick 1")
    parser.add_argument("--warmup", type=int, default=None, help="default 1; --quick 0")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--render", type=Path, default=None, help="print the tables of an earlier --out file")
    args = parser.parse_args(argv)
    if args.render:
        print(markdown(json.loads(args.render.read_text())))
        return 0
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    base = QUICK if args.quick else Size()
    size = Size(
        layers=args.layers or base.layers,
        hidden=args.hidden or base.hidden,
        vision_layers=args.vision_layers or base.vision_layers,
        vision_hidden=args.vision_hidden or base.vision_hidden,
    )
    runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    warmup = args.warmup if args.warmup is not None else (0 if args.quick else 1)
    budgets = args.budgets or DEFAULT_BUDGETS.get(args.family, FRACTIONS)
    probe_budgets = args.probe_budgets if args.probe_budgets is not None else [64] * (args.family == "llava")

    model = build_model(args.family, size, dtype, args.device)
    methods = supported_methods(model, args.family, args.methods)
    inputs = build_inputs(model, args.family, args.device, dtype, args.batch)
    n_image = int((inputs["input_ids"][0] == model.config.image_token_id).sum())
    shape = describe(model) if args.family == "llava" else None
    text_tokens = inputs["input_ids"].shape[1] - n_image
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    print(f"device: {args.device} ({device_name}), threads={args.threads}, dtype={args.dtype}", file=sys.stderr)
    print(f"family: {args.family}, {n_image} visual tokens, {text_tokens} other tokens", file=sys.stderr)

    # Kept counts and keep indices come from one untimed call per method and budget.
    configs = {"none": (contextlib.nullcontext, {}, "sdpa")}
    stats = {}
    for method in methods:
        for budget in [*budgets, *([None] if method in ADAPTIVE else [])]:
            with mmaccel.apply(model, method, budget=budget) as session, torch.no_grad():
                model(**inputs, logits_to_keep=1)
            stats[(method, budget)] = session.last_call
            configs[f"{method}/{budget}"] = (
                functools.partial(mmaccel.apply, model, method, budget=budget),
                {},
                "sdpa",
            )
    for budget in probe_budgets:
        if ("fastv", budget) not in stats:
            raise SystemExit(f"--probe-budgets {budget} must be one of --budgets with fastv in --methods")
        keep = stats[("fastv", budget)].llm_keep[2]
        preset = PresetLayerKeep(keep=keep, k=2, prompt_length=inputs["input_ids"].shape[1])
        configs[f"fastv-same-split-no-probe/{budget}"] = (functools.partial(mmaccel.apply, model, preset), {}, "sdpa")
        configs[f"fastv-eager-output-attentions/{budget}"] = (
            functools.partial(mmaccel.apply, model, preset),
            {"output_attentions": True},
            "eager",
        )
    medians = run_round_robin(model, inputs, configs, runs, warmup)

    baseline_s = medians["none"]
    baseline_flops = None
    if shape is not None:
        baseline_flops = shape.prefill_flops(
            [text_tokens + n_image] * size.layers, n_images=1, projected_tokens=n_image
        )
    rows = [
        {
            "method": "none",
            "budget": n_image,
            "prefill_ms": baseline_s * 1e3,
            "speedup": 1.0,
            "flops_speedup": None if shape is None else 1.0,
        }
    ]
    for (method, budget), call in stats.items():
        seconds = medians[f"{method}/{budget}"]
        flops = None if shape is None else baseline_flops / predicted_flops(shape, call.stats[0], text_tokens)
        rows.append(
            {
                "method": method,
                "budget": budget,
                "prefill_ms": seconds * 1e3,
                "speedup": baseline_s / seconds,
                "flops_speedup": flops,
                "llm_input_tokens": call.stats[0].llm_input_tokens,
                "equivalent_tokens": call.stats[0].equivalent_tokens,
            }
        )
    probe_rows = []
    for budget in probe_budgets:
        with_probe = medians[f"fastv/{budget}"]
        without_probe = medians[f"fastv-same-split-no-probe/{budget}"]
        probe_rows.append(
            {
                "budget": budget,
                "fastv_ms": with_probe * 1e3,
                "same_split_no_probe_ms": without_probe * 1e3,
                "probe_cost_pct": 100 * (with_probe - without_probe) / without_probe,
                "eager_output_attentions_ms": medians[f"fastv-eager-output-attentions/{budget}"] * 1e3,
            }
        )
    for row in rows:
        flops = "–" if row["flops_speedup"] is None else f"x{row['flops_speedup']:.2f}"
        print(
            f"{row['method']:10s} {row['budget'] or 'adaptive':>8} {row['prefill_ms']:9.1f} ms  x{row['speedup']:.2f} "
            f"(FLOPs {flops})",
            file=sys.stderr,
        )
    for row in probe_rows:
        print(f"fastv probe cost at {row['budget']}: {row['probe_cost_pct']:+.2f} %", file=sys.stderr)

    result = {
        "family": args.family,
        "image_tokens": n_image,
        "device": f"{args.device} ({device_name})",
        "threads": args.threads,
        "dtype": args.dtype,
        "batch": args.batch,
        "layers": size.layers,
        "hidden": size.hidden,
        "vision_layers": model.config.vision_config.num_hidden_layers
        if hasattr(model.config.vision_config, "num_hidden_layers")
        else model.config.vision_config.depth,
        "runs": runs,
        "warmup": warmup,
        "torch": torch.__version__,
        "rows": rows,
        "fastv_probe": probe_rows,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
