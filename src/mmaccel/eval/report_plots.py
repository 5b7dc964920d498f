"""The report's PNG plots (matplotlib, Agg backend, no display needed).

Accuracy against layer-averaged visual tokens per benchmark, relative accuracy against measured prefill time
(the Pareto view), and per-question-type breakdowns where a benchmark's metrics have them (MME subtasks, VQAv2
answer types, GQA binary/open, POPE splits). Every series has its own colour and its own marker (bars: hatch),
from :func:`series_styles`, however many methods a directory holds; every axis is labelled, the accuracy axes
with the headline's scale; a budget the method cannot reach on this model is drawn hollow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmaccel.eval.config import BASELINE, budget_label

__all__ = ["BASELINE_LABEL", "series_styles", "write_plots"]

BASELINE_LABEL = "no method"
# 20 colours that differ in hue or lightness (tab20 reordered: the ten dark ones first), none black (the baseline's)
_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "d", "8", "H", "1", "2", "3", "4", "+", "x")
_HATCHES = ("", "//", "\\\\", "xx", "..", "oo", "--", "||", "++", "**")


def series_styles(names: list[str]) -> dict[str, dict[str, Any]]:
    """A distinct (colour, marker, hatch) per series name; the baseline is black with a star. Colours repeat only
    past 20 series, and then with another marker and hatch, so no two series ever look the same."""
    styles: dict[str, dict[str, Any]] = {}
    others = [name for name in dict.fromkeys(names) if name != BASELINE]
    if BASELINE in names:
        styles[BASELINE] = {"color": "black", "marker": "*", "hatch": ""}
    for index, name in enumerate(others):
        styles[name] = {
            "color": _COLOURS[index % len(_COLOURS)],
            "marker": _MARKERS[(index + index // len(_COLOURS)) % len(_MARKERS)],
            "hatch": _HATCHES[(index // len(_COLOURS) + index) % len(_HATCHES)],
        }
    return styles


def _axis_label(run: dict[str, Any]) -> str:
    from mmaccel.eval.report import scale

    unit = scale(run)
    return f"{run['headline']} ({unit})" if unit != "%" else f"{run['headline']} (%)"


def _eff(run: dict[str, Any], name: str) -> float | None:
    entry = run.get("efficiency", {}).get(name)
    return entry["mean"] if entry else None


def write_plots(
    results: list[dict[str, Any]],
    folder: Path,
    rows: list[dict[str, Any]],
    out_of_reach: dict[tuple[str, str], str],
) -> list[tuple[str, str]]:
    """Write the PNG plots into ``folder``; ``rows``: the report's efficiency rows, ``out_of_reach``: its
    unreachable budgets. Returns (title, file name relative to the report)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    methods = [m for m in dict.fromkeys(run["method"] for run in results) if m != BASELINE]
    styles = series_styles([BASELINE, *methods])
    written = [_accuracy_vs_tokens(plt, results, methods, styles, out_of_reach, folder)]
    if any(row["prefill_ms"] is not None for row in rows):
        written.append(_accuracy_vs_prefill(plt, rows, methods, styles, out_of_reach, folder))
    benchmarks = list(dict.fromkeys(run["benchmark"] for run in results))
    written += [w for b in benchmarks if (w := _breakdown(plt, results, b, styles, folder)) is not None]
    return written


def _point_style(style: dict[str, Any], hollow: bool) -> dict[str, Any]:
    face = "none" if hollow else style["color"]
    return {"color": style["color"], "marker": style["marker"], "markerfacecolor": face}


def _accuracy_vs_tokens(plt, results, methods, styles, out_of_reach, folder: Path) -> tuple[str, str]:
    benchmarks = list(dict.fromkeys(run["benchmark"] for run in results))
    columns = min(4, len(benchmarks))
    n_rows = -(-len(benchmarks) // columns)
    figure, axes = plt.subplots(n_rows, columns, figsize=(4 * columns, 3.2 * n_rows), squeeze=False)
    for axis, benchmark in zip(axes.flat, benchmarks):
        runs = [r for r in results if r["benchmark"] == benchmark]
        for method in methods:
            points = sorted(
                (_eff(r, "equivalent_tokens"), r["value"], budget_label(r["budget"]))
                for r in runs
                if r["method"] == method and _eff(r, "equivalent_tokens") is not None
            )
            if not points:
                continue
            style = styles[method]
            axis.plot([p[0] for p in points], [p[1] for p in points], color=style["color"], label=method)
            for x, y, budget in points:
                axis.plot([x], [y], linestyle="none", **_point_style(style, (method, budget) in out_of_reach))
        for r in runs:
            if r["method"] == BASELINE:
                axis.axhline(r["value"], color="black", linestyle="--", linewidth=1, label=BASELINE_LABEL)
        axis.set_title(benchmark)
        axis.set_xlabel("layer-averaged visual tokens")
        axis.set_ylabel(_axis_label(runs[0]))
    for axis in list(axes.flat)[len(benchmarks) :]:
        axis.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for handle, label in zip(handles, labels):
        if label in styles and label != BASELINE:
            handle.set_marker(styles[label]["marker"])
    figure.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)) or 1, fontsize=8)
    figure.tight_layout(rect=(0, 0.1, 1, 1))
    figure.savefig(folder / "accuracy_vs_tokens.png", dpi=90)
    plt.close(figure)
    title = "Accuracy against layer-averaged visual tokens (hollow: budget out of reach)"
    return (title, "plots/accuracy_vs_tokens.png")


def _accuracy_vs_prefill(plt, rows, methods, styles, out_of_reach, folder: Path) -> tuple[str, str]:
    figure, axis = plt.subplots(figsize=(7, 4.5))
    by_budget = sorted(rows, key=lambda row: -(row["equivalent_tokens"] or 0.0))  # measured times zigzag
    for method in [BASELINE, *methods]:
        points = [
            (row["prefill_ms"], row["relative_accuracy"], row["budget"])
            for row in by_budget
            if row["method"] == method and row["prefill_ms"] is not None and row["relative_accuracy"] is not None
        ]
        if not points:
            continue
        style = styles[method]
        size = 12 if method == BASELINE else 6
        label = BASELINE_LABEL if method == BASELINE else method
        axis.plot([p[0] for p in points], [p[1] for p in points], color=style["color"], marker=style["marker"],
                  markersize=size, label=label)  # fmt: skip
        for x, y, budget in points:
            if (method, budget) in out_of_reach:
                axis.plot([x], [y], linestyle="none", markersize=size, **_point_style(style, True))
    axis.set_xlabel("measured prefill time per sample, ms (median over batches)")
    axis.set_ylabel("accuracy, % of no method\n(mean over benchmarks)")
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    figure.savefig(folder / "accuracy_vs_prefill.png", dpi=90)
    plt.close(figure)
    return ("Accuracy against measured prefill time", "plots/accuracy_vs_prefill.png")


def _breakdown(plt, results, benchmark: str, styles, folder: Path) -> tuple[str, str] | None:
    from mmaccel.eval.report import breakdown

    runs = [r for r in results if r["benchmark"] == benchmark and breakdown(r["metrics"])]
    if not runs:
        return None
    smallest = min((r["budget"] for r in runs if r["budget"] is not None), default=None, key=float)
    chosen = [r for r in runs if r["method"] == BASELINE or r["budget"] == smallest]
    categories = list(breakdown(chosen[0]["metrics"]))
    figure, axis = plt.subplots(figsize=(max(6, 0.9 * len(categories) * len(chosen) / 3), 4))
    width = 0.8 / len(chosen)
    for offset, run in enumerate(chosen):
        values = breakdown(run["metrics"])
        style = styles[run["method"]]
        label = BASELINE_LABEL if run["method"] == BASELINE else f"{run['method']} {budget_label(run['budget'])}"
        axis.bar([i + offset * width for i in range(len(categories))], [values.get(c, 0.0) for c in categories],
                 width, label=label, color=style["color"], hatch=style["hatch"], edgecolor="white")  # fmt: skip
    axis.set_xticks([i + 0.4 - width / 2 for i in range(len(categories))], categories)
    axis.set_title(f"{benchmark}: per question type (budget {budget_label(smallest)})")
    axis.set_ylabel(_breakdown_label(chosen[0]))
    axis.legend(fontsize=7, ncol=3)
    figure.tight_layout()
    name = f"breakdown_{benchmark}.png"
    figure.savefig(folder / name, dpi=90)
    plt.close(figure)
    return (f"{benchmark} by question type", f"plots/{name}")


def _breakdown_label(run: dict[str, Any]) -> str:
    """MME's subtasks are scored 0-200 (acc + acc+), every other breakdown in percent."""
    return "subtask score (acc + acc+, of 200)" if run.get("scorer") == "mme" else "score per question type (%)"
