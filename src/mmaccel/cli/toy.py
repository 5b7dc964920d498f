"""``mmaccel toy train`` and ``mmaccel toy eval``: reproduce and measure the embedded toy model."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``toy`` command and its ``train`` and ``eval`` subcommands."""
    parser = subparsers.add_parser("toy", help="train or evaluate the embedded toy model")
    commands = parser.add_subparsers(dest="toy_command", metavar="ACTION", required=True)

    train = commands.add_parser("train", help="train the toy model from a seed (CPU)")
    train.add_argument("--out", type=Path, required=True, help="output checkpoint directory")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--steps-vision", type=int, default=None, help="stage-1 steps (default: shipped recipe)")
    train.add_argument("--steps-llm", type=int, default=None, help="stage-2 steps (default: shipped recipe)")
    train.add_argument("--threads", type=int, default=2, help="torch CPU threads (results depend on it)")
    train.add_argument("--eval-per-type", type=int, default=0, help="held-out questions per type for the curve")
    train.set_defaults(func=run_train)

    evaluate = commands.add_parser("eval", help="held-out accuracy, pruning table and generate latency")
    evaluate.add_argument("--model", default="toy", help="'toy' or a checkpoint directory")
    evaluate.add_argument("--per-type", type=int, default=300, help="held-out questions per type")
    evaluate.add_argument("--no-pruning", action="store_true", help="skip the pruning ablations")
    evaluate.add_argument("--threads", type=int, default=2)
    evaluate.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    evaluate.add_argument(
        "--checks",
        action="store_true",
        help="also compare real generate() and physical token removal with the scoring (10 questions per type)",
    )
    evaluate.set_defaults(func=run_eval)


def run_train(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from mmaccel.toy.evaluate import evaluate
    from mmaccel.toy.plot import plot_curve
    from mmaccel.toy.train import TrainConfig, run

    config = TrainConfig(seed=args.seed, threads=args.threads)
    if args.steps_vision is not None:
        config.steps_vision = args.steps_vision
    if args.steps_llm is not None:
        config.steps_llm = args.steps_llm
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as bar:
        tasks = {
            "vision": bar.add_task("stage 1 vision", total=config.steps_vision, info=""),
            "llm": bar.add_task("stage 2 llava ", total=config.steps_llm, info=""),
        }

        def progress(stage: str, step: int, total: int, record: dict) -> None:
            info = f"loss {record['loss']:.3f}"
            if "heldout" in record:
                info += f" held-out {record['heldout']['all']:.1f}%"
            bar.update(tasks[stage], completed=step, info=info)

        tokenizer_holder: dict = {}

        def curve_eval(model):
            if "tokenizer" not in tokenizer_holder:
                from mmaccel.toy.tokenizer import build_tokenizer

                tokenizer_holder["tokenizer"] = build_tokenizer()
            return evaluate(model, tokenizer_holder["tokenizer"], per_type=args.eval_per_type)

        summary = run(config, args.out, progress, curve_eval if args.eval_per_type else None)
    try:
        plot_curve(summary["curve"], args.out / "curve.png")
    except Exception as error:  # plotting is optional
        log.warning("no learning-curve plot: %s", error)
    log.info(
        "trained in %.1f min (stage 1 %.1f min); saved to %s",
        summary["total_minutes"],
        summary["vision_minutes"],
        args.out,
    )
    return 0


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from mmaccel.loading import load
    from mmaccel.toy.evaluate import chance_levels, generate_latency, heldout_set, pruning_table

    torch.set_num_threads(args.threads)
    model, processor = load(args.model)
    start = time.perf_counter()
    if args.no_pruning:
        from mmaccel.toy.evaluate import evaluate

        tables = {"all@64": evaluate(model, processor.tokenizer, args.per_type)}
    else:
        tables = pruning_table(model, processor.tokenizer, args.per_type)
    chance = {kind: 100 * value for kind, value in chance_levels(heldout_set(args.per_type)).items()}
    latency_ms, answer, expected = generate_latency(model, processor)
    results = {
        "tables": tables,
        "chance": chance,
        "generate_ms": latency_ms,
        "eval_seconds": time.perf_counter() - start,
    }
    kinds = list(chance)
    print(f"{'setting':10} {'all':>5} " + " ".join(f"{kind[:8]:>8}" for kind in kinds))
    print(f"{'chance':10} {sum(chance.values()) / len(chance):5.1f} " + " ".join(f"{chance[k]:8.1f}" for k in kinds))
    for name, table in tables.items():
        print(f"{name:10} {table['all']:5.1f} " + " ".join(f"{table.get(k, float('nan')):8.1f}" for k in kinds))
    print(f"generate(): {latency_ms:.1f} ms per example (answer {answer!r}, expected {expected!r})")
    if args.checks:
        from mmaccel.toy.data import TurnEncoder
        from mmaccel.toy.evaluate import SELECTIONS, generate_agreement, removal_agreement

        subset = heldout_set(10)
        accuracy, agreement = generate_agreement(model, processor, subset, TurnEncoder(processor.tokenizer))
        results["generate_accuracy"], results["generate_agreement"] = accuracy, agreement
        print(f"generate(): {accuracy:.1f} % correct, agrees with the scoring on {agreement:.1f} %")
        for selection in SELECTIONS:
            agree = removal_agreement(model, processor, subset, selection, 16)
            results[f"removal_agreement_{selection}@16"] = agree
            print(f"{selection}@16: token removal agrees with masked scoring on {agree:.1f} %")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0
