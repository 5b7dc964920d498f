"""``mmaccel score``: score an existing prediction file against local benchmark data.

Reads LLaVA answer files (``question_id``/``text``) and mmaccel ``predictions.jsonl`` (``id``/``prediction``),
joins them to the questions by id, prints the metrics and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from mmaccel.errors import DataError

log = logging.getLogger(__name__)

PROTOCOL_CHOICES = ("llava", "lmms_eval", "vlmevalkit", "official")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score",
        help="score an existing prediction file (LLaVA answer file or mmaccel predictions.jsonl)",
        description="Score an existing prediction file against local benchmark data, joined by question id.",
    )
    parser.add_argument("--benchmark", required=True, help="mme, mmbench, pope, scienceqa_img, textvqa, gqa, vqav2")
    parser.add_argument("--data", required=True, type=Path, help="benchmark folder (LLaVA layout or lmms-lab parquet)")
    parser.add_argument("--predictions", required=True, type=Path, help="JSONL prediction file")
    parser.add_argument(
        "--protocol",
        default=None,
        choices=PROTOCOL_CHOICES,
        help="reference to score like (default: llava for image benchmarks, official for video benchmarks)",
    )
    parser.add_argument("--split", default=None, help="split, subset or file to score (default: the standard one)")
    parser.add_argument("--out", type=Path, default=None, help="metrics JSON (default: next to the predictions)")
    parser.add_argument(
        "--missing",
        default="error",
        choices=("error", "wrong", "skip"),
        help="questions without a prediction: fail (default), score as wrong, or leave out",
    )
    parser.add_argument(
        "--unknown", default="error", choices=("error", "ignore"), help="predictions whose id matches no question"
    )
    parser.set_defaults(func=run)


def check_prediction_path(path: Path) -> None:
    """The prediction file exists and is a file (a folder is named as one, with the file it may hold)."""
    if path.is_dir():
        inside = path / "predictions.jsonl"
        hint = f" such as {inside}" if inside.is_file() else ""
        raise DataError(f"--predictions {path} is a folder; give the JSONL prediction file{hint}")
    if not path.is_file():
        raise DataError(f"--predictions {path}: file not found")


def default_out_path(predictions: Path, benchmark: str, protocol: str) -> Path:
    return predictions.with_name(f"{predictions.stem}.{benchmark}.{protocol}.metrics.json")


def run(args: argparse.Namespace) -> int:
    from mmaccel.cli.checks import check_output_file
    from mmaccel.eval.benchmarks import get_benchmark
    from mmaccel.eval.benchmarks.score import score_predictions

    check_prediction_path(args.predictions)
    args.protocol = args.protocol or getattr(get_benchmark(args.benchmark), "default_protocol", "llava")
    out = args.out or default_out_path(args.predictions, args.benchmark, args.protocol)
    check_output_file("--out", out)
    result = score_predictions(
        args.benchmark,
        args.data,
        args.predictions,
        protocol=args.protocol,
        split=args.split,
        on_missing=args.missing,
        on_unknown=args.unknown,
    )
    out = args.out or default_out_path(args.predictions, result["benchmark"], args.protocol)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print_result(result, out)
    return 0


def flatten(metrics: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted name, value)`` for every number in ``metrics``, nested dicts included."""
    rows = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(flatten(value, name + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append((name, value))
    return rows


def print_result(result: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    metrics = result["metrics"]
    dataset, predictions = result["dataset"], result["predictions"]
    title = f"{result['benchmark']} ({result['protocol']} protocol): {dataset.get('version', '')}"
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    headline = metrics.get("headline")
    for name, value in flatten(metrics):
        text = str(value) if isinstance(value, int) else f"{value:.2f}"
        table.add_row(f"[bold]{name}[/bold]" if name == headline else name, text)
    console.print(table)
    if dataset.get("missing_splits"):
        missing = ", ".join(dataset["missing_splits"])
        console.print(
            f"[bold]not scored[/bold]: no file of split(s) {missing} in {dataset.get('path')}", highlight=False
        )
    console.print(
        f"reference: {result['reference']}\n"
        f"data: {dataset.get('path')} ({dataset.get('layout')} layout, split {dataset.get('split')}, "
        f"{dataset.get('size')} questions)\n"
        f"predictions: {predictions['matched']} matched, {predictions['missing']} missing, "
        f"{predictions['unknown']} unknown ({predictions['format']} format)\n"
        f"metrics written to {out}",
        highlight=False,
        soft_wrap=True,
    )
