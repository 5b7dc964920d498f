"""Prefill speed of every method on a random-weight LLaVA with LLaVA-1.5 geometry, vs analytic FLOPs.

Model: CLIP ViT-L/14 at 336 px (24 blocks, d=1024, 576 patches + CLS) and a Llama decoder (``--layers``,
d=1024, SwiGLU 2816, 16 heads) with a 32000 vocabulary; the prompt has 576 image tokens and 62 text tokens.
Prefill = ``model(**inputs, logits_to_keep=1)`` including the vision tower and projector, as ``generate``'s
first step. Each configuration: warm-up runs, then the median of ``--runs`` timed runs (``torch.cuda.synchronize``
on GPU). Ratios are taken within one run of this script.

Also measured: FastV's scoring cost (FastV with the probe vs the same layer split handed the same keep indices,
no probe) and FastV as the reference implementations run it (eager attention + ``output_attentions=True``).

    python benchmarks/prefill.py --out docs/benchmarks/prefill-cpu.json
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
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

import mmaccel
from mmaccel.methods.preset import PresetLayerKeep
from mmaccel.ops.flops import llava_shape

IMAGE_TOKEN = 32000 - 1
METHODS = ("fastv", "visionzip", "fastervlm", "sparsevlm", "prumerge", "prumerge+", "pool", "random", "tome", "evit")
ADAPTIVE = ("prumerge", "prumerge+")  # also run with budget=None: the adaptive count of the paper


def build_model(layers: int, vision_layers: int, dtype: torch.dtype, device: str, hidden: int):
    torch.manual_seed(0)
    vision = CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=vision_layers,
        num_attention_heads=16,
        image_size=336,
        patch_size=14,
        projection_dim=768,
    )
    text = LlamaConfig(
        vocab_size=32000,
        hidden_size=hidden,
        intermediate_size=int(hidden * 2.75) // 256 * 256,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        max_position_embeddings=4096,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=IMAGE_TOKEN,
        image_seq_length=576,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    model = LlavaForConditionalGeneration(config).to(device=device, dtype=dtype).eval()
    model.set_attn_implementation("sdpa")
    return model


def build_inputs(device: str, dtype: torch.dtype, batch: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    before = torch.randint(3, 30000, (35,), generator=generator)
    after = torch.randint(3, 30000, (26,), generator=generator)
    ids = torch.cat([torch.tensor([1]), before, torch.full((576,), IMAGE_TOKEN), after])[None].repeat(batch, 1)
    pixels = torch.randn(batch, 3, 336, 336, generator=generator)
    return {"input_ids": ids.to(device), "pixel_values": pixels.to(device=device, dtype=dtype)}


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
    lines = [
        f"Device: {result['device']}, {result['threads']} thread(s), {result['dtype']}, batch {result['batch']}; "
        f"decoder {result['layers']} x d={result['hidden']}, vision tower {result['vision_layers']} blocks; "
        f"median of {result['runs']} interleaved runs after {result['warmup']} warm-up.",
        "",
        "| method | budget | tokens to LLM | layer-avg tokens | prefill ms | measured speed-up | FLOPs speed-up |"
        " measured / predicted |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        tokens = row.get("llm_input_tokens", 576)
        equivalent = row.get("equivalent_tokens", 576)
        budget = row["budget"] or "adaptive"
        lines.append(
            f"| {row['method']} | {budget} | {tokens} | {equivalent:.0f} | {row['prefill_ms']:.0f} | "
            f"x{row['speedup']:.2f} | x{row['flops_speedup']:.2f} | {row['speedup'] / row['flops_speedup']:.2f} |"
        )
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--probe-budgets", type=int, nargs="+", default=[64])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--vision-layers", type=int, default=24)
    parser.add_argument("--budgets", type=int, nargs="+", default=[192, 128, 64])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
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

    model = build_model(args.layers, args.vision_layers, dtype, args.device, args.hidden)
    inputs = build_inputs(args.device, dtype, args.batch)
    shape = llava_shape(model.config)
    text_tokens = inputs["input_ids"].shape[1] - 576
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    print(f"device: {args.device} ({device_name}), threads={args.threads}, dtype={args.dtype}", file=sys.stderr)

    # Kept counts and keep indices come from one untimed call per method and budget.
    configs = {"none/576": (contextlib.nullcontext, {}, "sdpa")}
    stats = {}
    for method in args.methods:
        for budget in [*args.budgets, *([None] if method in ADAPTIVE else [])]:
            with mmaccel.apply(model, method, budget=budget) as session, torch.no_grad():
                model(**inputs, logits_to_keep=1)
            stats[(method, budget)] = session.last_call
            configs[f"{method}/{budget}"] = (
                functools.partial(mmaccel.apply, model, method, budget=budget),
                {},
                "sdpa",
            )
    for budget in args.probe_budgets:
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
    medians = run_round_robin(model, inputs, configs, args.runs, args.warmup)

    baseline_s = medians["none/576"]
    baseline_flops = shape.prefill_flops([text_tokens + 576] * args.layers, n_images=1, projected_tokens=576)
    rows = [{"method": "none", "budget": 576, "prefill_ms": baseline_s * 1e3, "speedup": 1.0, "flops_speedup": 1.0}]
    for (method, budget), call in stats.items():
        seconds = medians[f"{method}/{budget}"]
        flops = predicted_flops(shape, call.stats[0], text_tokens)
        rows.append(
            {
                "method": method,
                "budget": budget,
                "prefill_ms": seconds * 1e3,
                "speedup": baseline_s / seconds,
                "flops_speedup": baseline_flops / flops,
                "llm_input_tokens": call.stats[0].llm_input_tokens,
                "equivalent_tokens": call.stats[0].equivalent_tokens,
            }
        )
    probe_rows = []
    for budget in args.probe_budgets:
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
        print(
            f"{row['method']:10s} {row['budget'] or 'adaptive':>8} {row['prefill_ms']:9.1f} ms  x{row['speedup']:.2f} "
            f"(FLOPs x{row['flops_speedup']:.2f})",
            file=sys.stderr,
        )
    for row in probe_rows:
        print(f"fastv probe cost at {row['budget']}: {row['probe_cost_pct']:+.2f} %", file=sys.stderr)

    result = {
        "device": f"{args.device} ({device_name})",
        "threads": args.threads,
        "dtype": args.dtype,
        "batch": args.batch,
        "layers": args.layers,
        "hidden": args.hidden,
        "vision_layers": args.vision_layers,
        "runs": args.runs,
        "warmup": args.warmup,
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
