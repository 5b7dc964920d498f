"""The report of a results directory: ``report.md`` and ``report.html`` with tables and PNG plots.

Tables: accuracy (method x budget x benchmark, with the percentage of the unmodified model) and efficiency
(per method and budget, averaged over the benchmarks: visual tokens entering the LLM, layer-averaged tokens,
the layer average the budget requested and the one achieved, analytic prefill FLOPs, KV-cache bytes, measured
prefill and decode time, peak memory). A budget whose achieved tokens are more than 5 % off its request, or
that gives the same tokens as another budget of the method, is marked ``*`` in both tables, with a note.
Plots (matplotlib, Agg backend, no display needed): accuracy against layer-averaged visual tokens per
benchmark, relative accuracy against measured prefill time (the Pareto view), and per-question-type breakdowns
where a benchmark's metrics have them (MME subtasks, VQAv2 answer types, GQA binary/open, POPE splits).
"""

from __future__ import annotations

import html
import json
import logging
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from mmaccel.engine.budget_check import TOLERANCE, off_budget
from mmaccel.eval.config import BASELINE, budget_label

__all__ = ["breakdown", "write_report"]

log = logging.getLogger(__name__)


def breakdown(metrics: dict[str, Any]) -> dict[str, float]:
    """Per-question-type values of a run's benchmark metrics ({} when the benchmark has none)."""
    if "binary" in metrics and "open" in metrics:  # GQA
        return {"binary": metrics["binary"], "open": metrics["open"]}
    for key in ("subtasks", "by_answer_type", "splits", "categories", "by_category"):
        value = metrics.get(key)
        if isinstance(value, dict) and value:
            out = {}
            for name, item in value.items():
                if isinstance(item, (int, float)):
                    out[name] = float(item)
                elif isinstance(item, dict):
                    for field in ("score", "accuracy", "f1"):
                        if isinstance(item.get(field), (int, float)):
                            out[name] = float(item[field])
                            break
            if out:
                return out
    return {}


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _eff(run: dict[str, Any], name: str, stat: str = "mean") -> float | None:
    entry = run["efficiency"].get(name)
    return entry[stat] if entry else None


def _configs(results: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    seen: dict[tuple[str, str], tuple[str, Any]] = {}
    for run in results:
        seen.setdefault((run["method"], budget_label(run["budget"])), (run["method"], run["budget"]))
    return list(seen.values())


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def baseline_values(results: list[dict[str, Any]]) -> dict[str, float]:
    """The unmodified model's headline per benchmark, for "% of base"; benchmarks where it is not clearly above
    zero (below two standard errors) are left out, since a ratio to a noisy near-zero base means nothing."""
    base = {}
    for run in results:
        if run["method"] == BASELINE and run["value"] and run["value"] > 2 * (run["se"] or 0.0):
            base[run["benchmark"]] = run["value"]
    return base


def accuracy_table(results: list[dict[str, Any]]) -> list[list[str]]:
    benchmarks = list(dict.fromkeys(run["benchmark"] for run in results))
    index = {(r["benchmark"], r["method"], budget_label(r["budget"])): r for r in results}
    base = baseline_values(results)
    marks = budget_notes(results) if all("efficiency" in r for r in results) else {}
    rows = [["method", "budget", *benchmarks, "mean % of base"]]
    for method, budget in _configs(results):
        cells, relative = [], []
        for benchmark in benchmarks:
            run = index.get((benchmark, method, budget_label(budget)))
            if run is None:
                cells.append("-")
                continue
            text = f"{run['value']:.1f}" + (f" ± {run['se']:.1f}" if run["se"] is not None else "")
            if base.get(benchmark):
                relative.append(100 * run["value"] / base[benchmark])
                text += f" ({relative[-1]:.0f}%)"
            cells.append(text)
        mark = " *" if (method, budget_label(budget)) in marks else ""
        rows.append([method, budget_label(budget) + mark, *cells, _fmt(_mean(relative), ".1f")])
    return rows


def efficiency_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (method, budget): efficiency figures averaged over the benchmarks, and mean relative accuracy."""
    base = baseline_values(results)
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for run in results:
        grouped[(run["method"], budget_label(run["budget"]))].append(run)
    rows = []
    for method, budget in _configs(results):
        runs = grouped[(method, budget_label(budget))]
        rows.append({
            "method": method,
            "budget": budget_label(budget),
            "llm_tokens": _mean([_eff(r, "llm_input_tokens") for r in runs]),
            "equivalent_tokens": _mean([_eff(r, "equivalent_tokens") for r in runs]),
            "requested_tokens": _mean([_eff(r, "requested_tokens") for r in runs]),
            "achieved_tokens": _mean([_eff(r, "achieved_tokens") for r in runs]),
            "prefill_gflops": _mean([(_eff(r, "prefill_flops") or 0) / 1e9 for r in runs]),
            "kv_kib": _mean([(_eff(r, "kv_bytes") or 0) / 1024 for r in runs]),
            "prefill_ms": _mean([_eff(r, "prefill_ms_per_sample", "median") for r in runs]),
            "decode_ms": _mean([_eff(r, "decode_ms_per_token", "median") for r in runs]),
            "peak_mib": _mean([(_eff(r, "peak_bytes", "max") or 0) / 2**20 for r in runs]),
            "relative_accuracy": _mean([100 * r["value"] / base[r["benchmark"]] for r in runs if base.get(r["benchmark"])]),  # noqa: E501
        })  # fmt: skip
    return rows


EFFICIENCY_COLUMNS = (
    ("method", "method", "s"), ("budget", "budget", "s"), ("LLM visual tokens", "llm_tokens", ".1f"),
    ("layer-avg tokens", "equivalent_tokens", ".1f"), ("requested tokens", "requested_tokens", ".1f"),
    ("achieved tokens", "achieved_tokens", ".1f"), ("prefill GFLOPs", "prefill_gflops", ".3f"),
    ("KV KiB", "kv_kib", ".1f"), ("prefill ms/sample", "prefill_ms", ".2f"), ("decode ms/token", "decode_ms", ".2f"),
    ("peak MiB", "peak_mib", ".0f"), ("accuracy % of base", "relative_accuracy", ".1f"),
)  # fmt: skip


def efficiency_table(results: list[dict[str, Any]]) -> list[list[str]]:
    table = [[title for title, _, _ in EFFICIENCY_COLUMNS]]
    marks = budget_notes(results)
    for row in efficiency_rows(results):
        cells = [row[key] if spec == "s" else _fmt(row[key], spec) for _, key, spec in EFFICIENCY_COLUMNS]
        cells[1] += " *" if (row["method"], row["budget"]) in marks else ""
        table.append(cells)
    return table


def budget_notes(results: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """(method, budget label) -> why the row is marked: its mean achieved layer-averaged visual tokens are
    more than 5 % off the mean request (both numbers), or equal another budget's of the same method."""
    rows = [row for row in efficiency_rows(results) if row["method"] != BASELINE]
    notes: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in rows:
        requested, achieved = row["requested_tokens"], row["achieved_tokens"]
        if achieved is not None and off_budget(requested, achieved):
            notes[(row["method"], row["budget"])].append(
                f"asks for {requested:.1f} layer-averaged visual tokens and gets {achieved:.1f} "
                f"({100 * (achieved - requested) / requested:+.1f} %, more than {100 * TOLERANCE:.0f} % off)"
            )
        same = [
            other["budget"]
            for other in rows
            if other is not row
            and other["method"] == row["method"]
            and other["achieved_tokens"] is not None
            and (other["achieved_tokens"], other["llm_tokens"]) == (achieved, row["llm_tokens"])
        ]
        if same:
            notes[(row["method"], row["budget"])].append(f"the same tokens as budget {', '.join(same)}")
    return {key: "; ".join(parts) for key, parts in notes.items()}


def _budget_footnotes(results: list[dict[str, Any]]) -> list[str]:
    return [f"\\* {method} {budget}: {note}." for (method, budget), note in budget_notes(results).items()]


def _markdown(table: list[list[str]]) -> str:
    lines = ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
    lines += ["| " + " | ".join(row) + " |" for row in table[1:]]
    return "\n".join(lines)


def _html_table(table: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _plots(results: list[dict[str, Any]], folder: Path) -> list[tuple[str, str]]:
    """Write the PNG plots; returns (title, file name relative to the report)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    benchmarks = list(dict.fromkeys(run["benchmark"] for run in results))
    methods = [m for m in dict.fromkeys(run["method"] for run in results) if m != BASELINE]
    columns = min(4, len(benchmarks))
    rows = -(-len(benchmarks) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows), squeeze=False)
    for axis, benchmark in zip(axes.flat, benchmarks):
        runs = [r for r in results if r["benchmark"] == benchmark]
        for method in methods:
            points = sorted((_eff(r, "equivalent_tokens"), r["value"]) for r in runs if r["method"] == method)
            if points:
                axis.plot(*zip(*points), marker="o", label=method)
        for r in runs:
            if r["method"] == BASELINE:
                axis.axhline(r["value"], color="black", linestyle="--", linewidth=1, label="no method")
        axis.set_title(benchmark)
        axis.set_xlabel("layer-averaged visual tokens")
        axis.set_ylabel(runs[0]["headline"])
    for axis in list(axes.flat)[len(benchmarks) :]:
        axis.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)) or 1, fontsize=8)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    figure.savefig(folder / "accuracy_vs_tokens.png", dpi=90)
    plt.close(figure)
    written.append(("Accuracy against layer-averaged visual tokens", "plots/accuracy_vs_tokens.png"))

    rows_eff = efficiency_rows(results)
    if any(row["prefill_ms"] is not None for row in rows_eff):
        figure, axis = plt.subplots(figsize=(7, 4.5))
        for method in [BASELINE, *methods]:
            # joined in budget order (most tokens first): measured times are noisy, sorting by them zigzags
            by_budget = sorted(rows_eff, key=lambda row: -(row["equivalent_tokens"] or 0.0))
            points = [
                (row["prefill_ms"], row["relative_accuracy"])
                for row in by_budget
                if row["method"] == method and row["prefill_ms"] is not None and row["relative_accuracy"] is not None
            ]
            if points:
                style = {"color": "black", "marker": "*", "markersize": 12} if method == BASELINE else {"marker": "o"}
                axis.plot(*zip(*points), label="no method" if method == BASELINE else method, **style)
        axis.set_xlabel("measured prefill time per sample, ms (median over batches)")
        axis.set_ylabel("accuracy, % of no method\n(mean over benchmarks)")
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(folder / "accuracy_vs_prefill.png", dpi=90)
        plt.close(figure)
        written.append(("Accuracy against measured prefill time", "plots/accuracy_vs_prefill.png"))

    for benchmark in benchmarks:
        runs = [r for r in results if r["benchmark"] == benchmark and breakdown(r["metrics"])]
        if not runs:
            continue
        smallest = min((r["budget"] for r in runs if r["budget"] is not None), default=None, key=float)
        chosen = [r for r in runs if r["method"] == BASELINE or r["budget"] == smallest]
        categories = list(breakdown(chosen[0]["metrics"]))
        figure, axis = plt.subplots(figsize=(max(6, 0.9 * len(categories) * len(chosen) / 3), 4))
        width = 0.8 / len(chosen)
        for offset, run in enumerate(chosen):
            values = breakdown(run["metrics"])
            label = "no method" if run["method"] == BASELINE else f"{run['method']} {budget_label(run['budget'])}"
            axis.bar([i + offset * width for i in range(len(categories))],
                     [values.get(c, 0.0) for c in categories], width, label=label)  # fmt: skip
        axis.set_xticks([i + 0.4 - width / 2 for i in range(len(categories))], categories)
        axis.set_title(f"{benchmark}: per question type (budget {budget_label(smallest)})")
        axis.legend(fontsize=7, ncol=3)
        figure.tight_layout()
        name = f"breakdown_{benchmark}.png"
        figure.savefig(folder / name, dpi=90)
        plt.close(figure)
        written.append((f"{benchmark} by question type", f"plots/{name}"))
    return written


def write_report(out: str | Path, results: list[dict[str, Any]] | None = None) -> Path:
    """Write ``report.md``, ``report.html`` and ``plots/*.png`` into ``out``; ``results`` default to its
    ``metrics.json``. Returns the path of ``report.md``."""
    out = Path(out)
    if results is None:
        results = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["runs"]
    environment = out / "environment.json"
    env = json.loads(environment.read_text(encoding="utf-8")) if environment.is_file() else {}
    plots = _plots(results, out / "plots")
    accuracy, efficiency = accuracy_table(results), efficiency_table(results)
    footnotes = _budget_footnotes(results)
    device = f"{env.get('device', '?')} ({env.get('device_name', '')}), torch threads {env.get('torch_threads', '?')}"
    intro = (
        f"Device: {device}; processes: {env.get('processes', 1)}; torch {env.get('torch', '?')}, transformers "
        f"{env.get('transformers', '?')}. Accuracy: the benchmark's headline ± bootstrap standard error "
        "(percentage of the unmodified model). Efficiency: means over samples, times are medians over batches "
        "divided by the batch size; FLOPs are analytic (vision tower, projector, decoder, LM head)."
    )
    notes = "\n".join(footnotes) + "\n" if footnotes else ""
    markdown = ["# mmaccel eval report", "", intro, "", "## Accuracy", "", _markdown(accuracy), "", notes,
                "## Efficiency (mean over benchmarks)", "", _markdown(efficiency), "", notes,
                "## Plots", ""]  # fmt: skip
    markdown += [f"### {title}\n\n![{title}]({path})\n" for title, path in plots]
    (out / "report.md").write_text("\n".join(markdown) + "\n", encoding="utf-8")
    html_notes = "".join(f"<p>{html.escape(note.replace(chr(92), ''))}</p>" for note in footnotes)
    figures = "".join(
        f"<h3>{html.escape(t)}</h3><img src='{html.escape(p)}' alt='{html.escape(t)}'>" for t, p in plots
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>mmaccel eval report</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}img{max-width:100%}</style></head><body>"
        f"<h1>mmaccel eval report</h1><p>{html.escape(intro)}</p><h2>Accuracy</h2>{_html_table(accuracy)}"
        f"{html_notes}<h2>Efficiency (mean over benchmarks)</h2>{_html_table(efficiency)}{html_notes}"
        f"<h2>Plots</h2>{figures}</body></html>"
    )
    (out / "report.html").write_text(page, encoding="utf-8")
    log.info("report: %s", out / "report.md")
    return out / "report.md"
