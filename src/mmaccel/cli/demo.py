"""``mmaccel demo``: every method at three budgets on a small LLaVA, with tokens, FLOPs and measured prefill."""

from __future__ import annotations

import argparse
import statistics
import time

from mmaccel.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run every method on a small random-weight LLaVA (no download)")
    parser.add_argument(
        "--budgets",
        type=float,
        nargs="+",
        default=[0.5, 0.25, 0.125],
        help="fractions of visual tokens kept (default: 0.5 0.25 0.125)",
    )
    parser.add_argument("--prompts", type=int, default=8, help="prompts per configuration (default: 8)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console
    from rich.table import Table

    import mmaccel
    from mmaccel.models.registry import adapter_for
    from mmaccel.models.shape import describe
    from mmaccel.models.tiny import tiny_inputs, tiny_llava

    if any(not 0 < b <= 1 for b in args.budgets):
        raise ConfigError(f"--budgets must be fractions in (0, 1], got {args.budgets}")
    torch.set_num_threads(1)
    model = tiny_llava()
    inputs = tiny_inputs(model, batch=args.prompts)
    shape = describe(model)
    n_text = inputs["input_ids"].shape[1] - model.config.image_seq_length

    def measure():
        with torch.no_grad():
            model(**inputs, logits_to_keep=1)  # warm-up
            times = []
            for _ in range(3):
                start = time.perf_counter()
                logits = model(**inputs, logits_to_keep=1).logits[:, -1]
                times.append(time.perf_counter() - start)
        return logits.argmax(-1), statistics.median(times) * 1e3

    base_tokens, base_ms = measure()
    table = Table(
        title=f"mmaccel demo: random-weight LLaVA, {args.prompts} prompts, "
        f"{model.config.image_seq_length} visual tokens per image"
    )
    for column in ("method", "budget", "tokens to LLM", "layer-avg tokens", "FLOPs", "prefill ms", "same top-1"):
        table.add_column(column, justify="right" if column != "method" else "left")
    table.add_row(
        "none",
        "1.0",
        str(model.config.image_seq_length),
        str(model.config.image_seq_length),
        "100%",
        f"{base_ms:.1f}",
        "100%",
    )
    full_flops = shape.prefill_flops(
        [n_text + model.config.image_seq_length] * shape.decoder.layers, 1, model.config.image_seq_length
    )
    adapter = adapter_for(model)
    for name in mmaccel.list_methods():
        reason = mmaccel.get_method(name)().unsupported_reason(adapter)
        if reason is not None:  # e.g. downsample on a fixed-resolution model
            table.add_row(name, "–", f"not supported: {reason}", "", "", "", "")
            continue
        for budget in args.budgets:
            with mmaccel.apply(model, name, budget=budget) as session:
                tokens, ms = measure()
            stats = session.last_call.stats[0]
            flops = stats.prefill_flops(shape, n_text)
            agree = (tokens == base_tokens).float().mean().item()
            table.add_row(
                name,
                str(budget),
                str(stats.llm_input_tokens),
                f"{stats.equivalent_tokens:.1f}",
                f"{100 * flops / full_flops:.0f}%",
                f"{ms:.1f}",
                f"{100 * agree:.0f}%",
            )
    Console().print(table)
    return 0
