"""``mmaccel toy train|eval|suites|bench``: reproduce and measure the embedded toy model.

``suites`` writes the synthetic benchmark suites in the real benchmarks' formats; ``bench`` runs a model on them
and scores it with the real scorers.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from mmaccel.errors import ConfigError

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
    train.add_argument(
        "--guide-loss",
        type=float,
        default=None,
        help="weight of the attention guidance (default: shipped recipe, 0.5; 0 trains without it)",
    )
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
    _register_suites(commands)


def _register_suites(commands: argparse._SubParsersAction) -> None:
    """Add ``toy suites`` (write the synthetic suites) and ``toy bench`` (run and score a model on them)."""
    from mmaccel.toy.suites import list_suites

    names = list_suites()
    suites = commands.add_parser("suites", help="write the synthetic benchmark suites in the real data formats")
    suites.add_argument("--out", type=Path, required=True, help="folder; each suite goes to OUT/<suite>")
    suites.add_argument("--suite", action="append", choices=list_suites(video=True),
                        help="suite to write (repeat; default the image suites)")  # fmt: skip
    suites.add_argument("--size", type=int, default=None, help="items per suite (default: the full size)")
    suites.set_defaults(func=run_suites)

    bench = commands.add_parser("bench", help="run a model on the synthetic suites, score with the real scorers")
    bench.add_argument("--suite", action="append", choices=names, help="suite to run (repeat; default all)")
    bench.add_argument("--model", default="toy", help="'toy' or a checkpoint directory")
    bench.add_argument("--data", type=Path, default=None, help="suite folders DATA/<suite>, written if missing")
    bench.add_argument("--out", type=Path, default=None, help="predictions and metrics go to OUT/<suite>/")
    bench.add_argument("--size", type=int, default=None, help="items per suite (default: the full size)")
    bench.add_argument("--protocol", default="llava", choices=("llava", "lmms_eval", "vlmevalkit"))
    bench.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    bench.add_argument("--batch-size", type=int, default=32)
    bench.add_argument("--max-new-tokens", type=int, default=8)
    bench.add_argument("--bootstrap", type=int, default=200, help="bootstrap draws for the standard error (0: none)")
    bench.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    bench.set_defaults(func=run_bench)


def run_train(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from mmaccel.toy.training.evaluate import evaluate
    from mmaccel.toy.training.plot import plot_curve
    from mmaccel.toy.training.train import TrainConfig, run

    config = TrainConfig(seed=args.seed, threads=args.threads)
    if args.guide_loss is not None:
        if not args.guide_loss >= 0:
            raise ConfigError(f"--guide-loss must be >= 0 (0 trains without guidance); got {args.guide_loss}")
        config.guide_loss = args.guide_loss
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
                log.info("%s step %d/%d: %s", stage, step, total, _curve_line(record))
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


def _curve_line(record: dict) -> str:
    """One log line for a curve point: the training losses and the held-out accuracy per question type."""
    losses = " ".join(f"{name} {value:.3f}" for name, value in record.items() if name.startswith(("loss", "guide_")))
    heldout = " ".join(f"{name} {value:.1f}" for name, value in record["heldout"].items() if "/" not in name)
    return f"{losses} | held-out {heldout}"


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from mmaccel.loading import load
    from mmaccel.toy.training.evaluate import chance_levels, generate_latency, heldout_set, pruning_table

    torch.set_num_threads(args.threads)
    model, processor = load(args.model)
    start = time.perf_counter()
    if args.no_pruning:
        from mmaccel.toy.training.evaluate import evaluate

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
        from mmaccel.toy.training.data import TurnEncoder
        from mmaccel.toy.training.evaluate import SELECTIONS, generate_agreement, removal_agreement

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


def run_suites(args: argparse.Namespace) -> int:
    from mmaccel.toy.suites import list_suites, write_suite

    for name in args.suite or list_suites():
        manifest = write_suite(name, args.out / name, args.size)
        print(f"{name}: {manifest['size']} {manifest['unit']} -> {args.out / name}")
    return 0


def run_bench(args: argparse.Namespace) -> int:
    import tempfile

    import torch
    from rich.console import Console

    from mmaccel.eval.suites import prepare_suite
    from mmaccel.loading import load
    from mmaccel.toy.bench import evaluate_suite
    from mmaccel.toy.suites import list_suites

    for flag, value in (("--batch-size", args.batch_size), ("--max-new-tokens", args.max_new_tokens),
                        ("--threads", args.threads), ("--size", args.size)):  # fmt: skip
        if value is not None and value < 1:
            raise ConfigError(f"{flag} {value}: must be a positive integer")
    names = args.suite or list_suites()
    torch.set_num_threads(args.threads)
    model, processor = load(args.model)
    console = Console(width=120)
    with tempfile.TemporaryDirectory(prefix="mmaccel-suites-") as scratch:
        data = args.data or Path(scratch) / "data"
        out = args.out or Path(scratch) / "out"
        results = []
        for name in names:
            start = time.perf_counter()
            root = prepare_suite(name, data / name, args.size)
            written = time.perf_counter() - start
            result = evaluate_suite(model, processor, name, root, out / name, args.protocol, args.batch_size,
                                    args.max_new_tokens, args.bootstrap)  # fmt: skip
            results.append((result, written))
    console.print(_bench_table(results, args))
    if args.json:
        payload = [{**result.as_dict(), "data_seconds": written} for result, written in results]
        args.json.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return 0


def _bench_table(results: list, args: argparse.Namespace):
    """Rich table of the headline metric, standard errors and wall times of each suite."""
    from rich.table import Table

    from mmaccel.toy.suites import get_suite

    table = Table(title=f"{args.model} on the synthetic suites ({args.protocol} protocol, {args.threads} threads)")
    columns = ("suite", "questions", "generated", "metric", "value", "SE", "SE bound", "write s", "run s", "cpu s")
    for column in columns:
        table.add_column(column, justify="left" if column in ("suite", "metric") else "right")
    for result, written in results:
        bound = get_suite(result.suite).headline_se_bound(args.size)
        se = "" if result.se is None else f"{result.se:.2f}"
        cells = (result.headline, f"{result.value:.2f}", se, f"{bound:.2f}", f"{written:.1f}", f"{result.seconds:.1f}",
                 f"{result.cpu_seconds:.1f}")  # fmt: skip
        table.add_row(result.suite, str(result.questions), str(result.generated), *cells)
    questions = sum(result.questions for result, _ in results)
    generated = sum(result.generated for result, _ in results)
    written = sum(written for _, written in results)
    seconds = sum(result.seconds for result, _ in results)
    cpu = sum(result.cpu_seconds for result, _ in results)
    table.add_row("total", str(questions), str(generated), "", "", "", "", f"{written:.1f}", f"{seconds:.1f}",
                  f"{cpu:.1f}")  # fmt: skip
    return table
