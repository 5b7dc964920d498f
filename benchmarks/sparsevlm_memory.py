"""Memory of SparseVLM's scoring: the probe's rater rows vs full attention matrices (the reference's way).

Decoder with LLaVA-1.5-7B's attention geometry: 32 layers x 32 heads, one prompt of 576 image tokens and 62 text
tokens (L = 638), so every attention matrix has LLaVA-1.5-7B's shape (H x L x L); the hidden size is reduced
(``--hidden``, default 256 = 32 heads x 8) to keep the weights and the CPU time small, which does not change the
attention maps.
A 2-block CLIP tower at 336 px gives the 576 visual tokens. Float32 on CPU.

Two figures:

* the score tensors: bytes of the (B, H, R, L) float32 rater rows the probe computes at layers 2, 6 and 15
  (R raters, L the sequence entering the layer), against the (B, H, L, L) attention matrix of one layer, which
  the reference's attention returns in every layer, and against all 32 of them (``output_attentions=True``);
* the peak resident memory of one prefill above the memory before it, each configuration in a fresh process
  (Linux ``VmHWM`` after resetting it through ``/proc/self/clear_refs``): SDPA with no method, SparseVLM with
  the probe (SDPA), eager attention (one full matrix per layer at a time, as the reference computes them), and
  eager attention with ``output_attentions=True``.

    python benchmarks/sparsevlm_memory.py --out docs/benchmarks/sparsevlm-memory-cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

import mmaccel

IMAGE_TOKEN = 32000 - 1
CONFIGS = ("sdpa", "sparsevlm-probe", "eager", "eager-output-attentions")


def build(layers: int, heads: int, hidden: int) -> tuple[LlavaForConditionalGeneration, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    vision = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=336,
        patch_size=14,
    )
    text = LlamaConfig(
        vocab_size=32000,
        hidden_size=hidden,
        intermediate_size=int(hidden * 2.6875),
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=4096,
        pad_token_id=0,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=IMAGE_TOKEN,
        image_seq_length=576,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    model = LlavaForConditionalGeneration(config).eval()
    generator = torch.Generator().manual_seed(0)
    before = torch.randint(3, 30000, (35,), generator=generator)
    after = torch.randint(3, 30000, (26,), generator=generator)
    ids = torch.cat([torch.tensor([1]), before, torch.full((576,), IMAGE_TOKEN), after])[None]
    return model, {"input_ids": ids, "pixel_values": torch.randn(1, 3, 336, 336, generator=generator)}


def _status(field: str) -> int:
    """A ``/proc/self/status`` field in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(config: str, args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    model, inputs = build(args.layers, args.heads, args.hidden)
    model.set_attn_implementation("eager" if config.startswith("eager") else "sdpa")
    kwargs = {"output_attentions": True} if config == "eager-output-attentions" else {}
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current resident set
    before = _status("VmRSS")
    result: dict = {"config": config}
    with torch.no_grad():
        if config == "sparsevlm-probe":
            with mmaccel.apply(model, "sparsevlm", budget=args.budget) as session:
                model(**inputs, logits_to_keep=1)
            stats = session.last_call.stats[0]
            text = inputs["input_ids"].shape[1] - 576
            rows = []
            for layer, queries in session.last_call.llm_queries.items():
                length = text + stats.layer_tokens[layer]  # the sequence entering the probed layer
                rows.append({"layer": layer, "raters": queries.shape[1], "length": length})
            result["rater_rows"] = rows
            result["score_bytes"] = sum(4 * args.heads * r["raters"] * r["length"] for r in rows)
        else:
            out = model(**inputs, logits_to_keep=1, **kwargs)
            if out.attentions:
                result["score_bytes"] = sum(a.numel() * a.element_size() for a in out.attentions)
                result["matrix_bytes"] = out.attentions[0].numel() * out.attentions[0].element_size()
    result["peak_delta_bytes"] = _status("VmHWM") - before
    return result


def markdown(result: dict) -> str:
    mib = 2**20
    rows = {r["config"]: r for r in result["runs"]}
    probe = rows["sparsevlm-probe"]
    matrix = rows["eager-output-attentions"]["matrix_bytes"]
    lines = [
        f"Device: {result['device']}, {result['threads']} thread(s), float32; decoder {result['layers']} layers x "
        f"{result['heads']} heads (d={result['hidden']}), L = 638; SparseVLM budget {result['budget']} "
        f"(v1.5, layers 2, 6, 15); torch {result['torch']}.",
        "",
        "| what | size |",
        "|---|---|",
    ]
    for r in probe["rater_rows"]:
        lines.append(
            f"| probe rows at layer {r['layer']}: {result['heads']} heads x {r['raters']} raters x {r['length']} "
            f"keys | {4 * result['heads'] * r['raters'] * r['length'] / mib:.2f} MiB |"
        )
    lines += [
        f"| probe rows, all three layers | {probe['score_bytes'] / mib:.2f} MiB |",
        f"| one full attention matrix ({result['heads']} x 638 x 638) | {matrix / mib:.1f} MiB |",
        f"| all {result['layers']} layers' matrices (`output_attentions=True`) | "
        f"{rows['eager-output-attentions']['score_bytes'] / mib:.0f} MiB |",
        "",
        "| prefill | peak resident memory above the model |",
        "|---|---|",
    ]
    names = {
        "sdpa": "SDPA, no method",
        "sparsevlm-probe": "SparseVLM, probe rows (SDPA)",
        "eager": "eager attention (full matrix per layer, the reference's way)",
        "eager-output-attentions": "eager + `output_attentions=True`",
    }
    for config in CONFIGS:
        lines.append(f"| {names[config]} | {rows[config]['peak_delta_bytes'] / mib:.0f} MiB |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--budget", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", choices=CONFIGS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--render", type=Path, default=None, help="print the tables of an earlier --out file")
    args = parser.parse_args(argv)
    if args.render:
        print(markdown(json.loads(args.render.read_text())))
        return 0
    if args.child:
        print(json.dumps(child(args.child, args)))
        return 0
    common = [f"--{k}={getattr(args, k)}" for k in ("layers", "heads", "hidden", "budget", "threads")]
    runs = []
    for config in CONFIGS:
        done = subprocess.run(
            [sys.executable, __file__, "--child", config, *common], capture_output=True, text=True, check=True
        )
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{config}: peak +{runs[-1]['peak_delta_bytes'] / 2**20:.0f} MiB", file=sys.stderr)
    result = {
        "device": f"cpu ({platform.processor() or platform.machine()})",
        "threads": args.threads,
        "layers": args.layers,
        "heads": args.heads,
        "hidden": args.hidden,
        "budget": args.budget,
        "torch": torch.__version__,
        "runs": runs,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
