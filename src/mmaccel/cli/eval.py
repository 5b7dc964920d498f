"""``mmaccel eval``: the main job, or any (model, benchmark, method, budget) evaluation; see docs/evaluation.md.

With no arguments it runs the embedded toy model on the seven synthetic suites, the unmodified model plus every
registered method at 50 %, 25 % and 12.5 % of the visual tokens, and writes ``results/main``. Every option is a
flag and a key of a YAML ``--config`` file; flags given on the command line override the file.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

log = logging.getLogger(__name__)

# flag -> (config key, type, help); a flag left out keeps the file's value or the default.
FLAGS: dict[str, tuple[str, Any, str]] = {
    "--model": ("model", str, "'toy' (embedded) or a local Hugging Face checkpoint directory"),
    "--benchmark": ("benchmarks", str, "synthetic suites (shapes-pope, ...) or one real benchmark with --data"),
    "--method": ("methods", str, "method names, comma-separated; 'none' is the unmodified model"),
    "--budget": ("budgets", str, "fractions in (0, 1] or token counts, comma-separated (default 0.5,0.25,0.125)"),
    "--data": ("data", str, "real benchmark data folder, or where to write the synthetic suites"),
    "--limit": ("limit", int, "per benchmark: suite size in its unit, or first N samples; 0 = all"),
    "--protocol": ("protocol", str, "scoring protocol: llava, lmms_eval or vlmevalkit"),
    "--batch-size": ("batch_size", int, "distinct prompts per generate() call (default 32)"),
    "--max-new-tokens": ("max_new_tokens", int, "tokens generated per answer (default 8)"),
    "--out": ("out", str, "results directory (default results/main)"),
    "--device": ("device", str, "cpu, cuda, cuda:1, ..."),
    "--dtype": ("dtype", str, "auto, float32, float16 or bfloat16"),
    "--seed": ("seed", int, "seed of every run (default 0)"),
    "--threads": ("threads", int, "torch CPU threads (default: torch's choice)"),
    "--repeats": ("repeats", int, "timed batches per run at least; the first batch is re-timed (default 3)"),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate methods x budgets x benchmarks: accuracy, tokens, FLOPs, time; writes a report"
    )
    parser.add_argument("--config", default=None, help="YAML file of options (flags override it)")
    for flag, (_, kind, text) in FLAGS.items():
        parser.add_argument(flag, type=kind, default=None, help=text)
    parser.add_argument("--no-timing", action="store_true", help="skip warm-up and timing")
    parser.add_argument("--no-report", action="store_true", help="write metrics only, no report.md/plots")
    parser.set_defaults(func=run)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys of the flags given on the command line."""
    overrides = {}
    for flag, (key, _, _) in FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            overrides[key] = value
    if args.no_timing:
        overrides["timing"] = False
    return overrides


class _RichProgress:
    """A rich progress bar fed by the runner (rank 0 only)."""

    def __init__(self, progress) -> None:
        self.progress = progress
        self.task = None

    def start(self, total: int) -> None:
        self.task = self.progress.add_task("generating", total=total)

    def advance(self, n: int, run: str) -> None:
        self.progress.update(self.task, advance=n, description=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mmaccel.cli.checks import check_eval_config
    from mmaccel.eval.config import load_config
    from mmaccel.eval.runner import ProgressHook, evaluate, plan_runs

    config = load_config(args.config, overrides_from_args(args))
    check_eval_config(config)  # flags and --config values alike: names, budgets, device, threads, --out
    plan_runs(config)  # bad names and budgets fail here, before anything is loaded or written
    console = Console(stderr=True)
    main = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 reports
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not main) as bar:
        results = evaluate(config, _RichProgress(bar) if main else ProgressHook())
    if not main:
        return 0
    if not args.no_report:
        from mmaccel.eval.report import write_report

        write_report(config.out, results)
    out = Console()
    if not out.is_terminal:
        out = Console(width=160)  # a log file gets the whole table, not an 80-column cut
    out.print(results_table(results))
    out.print(f"results: {config.out}" + ("" if args.no_report else f" (report: {config.out}/report.md)"))
    return 0


def results_table(results: list[dict[str, Any]]):
    """The rich table of every configuration, averaged over the benchmarks (the report has every run)."""
    from rich.table import Table

    from mmaccel.eval.report import EFFICIENCY_COLUMNS, efficiency_rows

    benchmarks = len({r["benchmark"] for r in results})
    table = Table(title=f"mmaccel eval: mean over {benchmarks} benchmark(s); per run in report.md")
    for title, _, spec in EFFICIENCY_COLUMNS:
        table.add_column(title, justify="left" if spec == "s" else "right")
    for row in efficiency_rows(results):
        cells = [row[key] if spec == "s" else ("-" if row[key] is None else format(row[key], spec))
                 for _, key, spec in EFFICIENCY_COLUMNS]  # fmt: skip
        table.add_row(*cells)
    return table
