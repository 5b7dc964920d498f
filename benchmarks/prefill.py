"""Prefill speed of every method on a random-weight LLaVA with LLaVA-1.5 geometry, vs analytic FLOPs.

Model: CLIP ViT-L/14 at 336 px (24 blocks, d=1024, 576 patches + CLS) and a Llama decoder (``--layers``,
d=1024, SwiGLU 2816, 16 heads) with a 32000 vocabulary; the prompt has 576 image tokens and 61 text tokens.
Prefill = ``model(**inputs, logits_to_keep=1)`` including the vision tower and projector, as ``generate``'s
first step. Each configuration: warm-up runs, then the median of ``--runs`` timed runs (``torch.cuda.synchronize``
on GPU). Ratios are taken within one run of this script.

Also measured: FastV's scoring cost (FastV with the probe vs the same layer split handed the same keep indices,
no probe) and FastV as the reference implementations run it (eager attention + ``output_attentions=True``).

    python benchmarks/prefill.py --out docs/benchmarks/prefill-cpu.json
"""

from __future__ import annotations

import argparse
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
METHODS = ("fastv", "visionzip", "fastervlm", "pool", "random")


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


def timed(model, inputs, runs: int, warmup: int, **forward_kwargs) -> float:
    def once() -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            model(**inputs, logits_to_keep=1, **forward_kwargs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(warmup):
        once()
    return statistics.median(once() for _ in range(runs))


def predicted_flops(shape, stats, text_tokens: int) -> float:
    layer_tokens = [text_tokens + n for n in stats.layer_tokens]
    projected = stats.stages.get("vision_output", (stats.visual_tokens, stats.visual_tokens))[1]
    return shape.prefill_flops(layer_tokens, n_images=stats.images, projected_tokens=projected)


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
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)

    model = build_model(args.layers, args.vision_layers, dtype, args.device, args.hidden)
    inputs = build_inputs(args.device, dtype, args.batch)
    shape = llava_shape(model.config)
    text_tokens = inputs["input_ids"].shape[1] - 576
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    print(f"device: {args.device} ({device_name}), threads={args.threads}, dtype={args.dtype}", file=sys.stderr)

    baseline_s = timed(model, inputs, args.runs, args.warmup)
    baseline_flops = shape.prefill_flops([text_tokens + 576] * args.layers, n_images=1, projected_tokens=576)
    rows = [{"method": "none", "budget": 576, "prefill_ms": baseline_s * 1e3, "speedup": 1.0, "flops_speedup": 1.0}]
    print(f"none      576  {baseline_s * 1e3:9.1f} ms", file=sys.stderr)
    for method in args.methods:
        for budget in args.budgets:
            with mmaccel.apply(model, method, budget=budget) as session:
                seconds = timed(model, inputs, args.runs, args.warmup)
            flops = predicted_flops(shape, session.last_call.stats[0], text_tokens)
            row = {
                "method": method,
                "budget": budget,
                "prefill_ms": seconds * 1e3,
                "speedup": baseline_s / seconds,
                "flops_speedup": baseline_flops / flops,
            }
            rows.append(row)
            print(
                f"{method:9s} {budget:4d} {seconds * 1e3:9.1f} ms  x{row['speedup']:.2f} "
                f"(FLOPs x{row['flops_speedup']:.2f})",
                file=sys.stderr,
            )

    # FastV scoring cost: the same split with the same keep indices and no probe.
    probe_rows = []
    for budget in args.probe_budgets:
        with mmaccel.apply(model, "fastv", budget=budget) as session:
            with_probe = timed(model, inputs, args.runs, args.warmup)
        keep = session.last_call.llm_keep[2]
        preset = PresetLayerKeep(keep=keep, k=2, prompt_length=inputs["input_ids"].shape[1])
        with mmaccel.apply(model, preset):
            without_probe = timed(model, inputs, args.runs, args.warmup)
        model.set_attn_implementation("eager")
        with mmaccel.apply(model, preset):
            reference_style = timed(model, inputs, args.runs, args.warmup, output_attentions=True)
        model.set_attn_implementation("sdpa")
        probe_rows.append(
            {
                "budget": budget,
                "fastv_ms": with_probe * 1e3,
                "same_split_no_probe_ms": without_probe * 1e3,
                "probe_cost_pct": 100 * (with_probe - without_probe) / without_probe,
                "eager_output_attentions_ms": reference_style * 1e3,
            }
        )
        print(
            f"fastv probe cost at {budget}: {probe_rows[-1]['probe_cost_pct']:+.2f} %; eager+output_attentions "
            f"{reference_style * 1e3:.1f} ms",
            file=sys.stderr,
        )

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
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
