"""The report of a results directory: ``report.md`` and ``report.html`` with tables and PNG plots.

Tables: accuracy (method x budget x benchmark; each benchmark's header names its headline, scale and sample
count; the percentage of the unmodified model where that model is at least two standard errors above the
benchmark's chance level) and efficiency (per method and budget, averaged over the benchmarks: visual tokens
entering the LLM, layer-averaged tokens, the layer average the budget requested and the one achieved, analytic
prefill FLOPs, KV-cache bytes, measured prefill time with its interquartile range and the speed-up over the
unmodified model, decode time, peak memory, and the torch threads and load average each run was timed under).
A budget the method cannot reach on this model (achieved tokens more than 5 % off the request) is marked
``† unreachable`` in both tables, one that gives the same tokens as another budget of the method ``*``, each with
a note. A speed-up whose interquartile interval holds 1.0 is marked ``~``, a timing taken while the load average
exceeded the usable cores ``!``. Plots: :mod:`mmaccel.eval.report_plots`.
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
from mmaccel.eval.report_plots import write_plots

__all__ = ["accuracy_table", "breakdown", "efficiency_table", "scale", "unreachable", "write_report"]

UNREACHABLE = "† unreachable"  # the mark of a budget the method cannot reach on this model
SAME = "*"  # the mark of a budget giving the same tokens as another budget of its method
SPREAD_OVERLAPS_ONE = "~"  # a speed-up whose interquartile interval holds 1.0
UNDER_LOAD = "!"  # timed while the 1-minute load average exceeded the usable cores

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
    """The unmodified model's headline per benchmark, for "% of base"; benchmarks where it is not at least two
    standard errors above the benchmark's chance level (``chance``, 0 when unknown) are left out, since a ratio to
    a base that guessing would reach means nothing."""
    base = {}
    for run in results:
        if run["method"] != BASELINE or not run["value"]:
            continue
        chance = run.get("chance") or 0.0
        if run["value"] > chance and run["value"] - chance >= 2 * (run["se"] or 0.0):
            base[run["benchmark"]] = run["value"]
    return base


def scale(run: dict[str, Any]) -> str:
    """The headline's scale: MME's perception and cognition are points, 200 per subtask of the group that the
    run scored (2000 and 800 on the full benchmark); every other headline is a percentage."""
    if run.get("scorer", "mme") == "mme" and run.get("headline") in ("perception", "cognition", "reasoning"):
        from mmaccel.eval.benchmarks.mme import COGNITION, PERCEPTION

        group = PERCEPTION if run["headline"] == "perception" else COGNITION
        subtasks = [name for name in run.get("metrics", {}).get("subtasks", {}) if name in group]
        return f"points of {200 * len(subtasks)}" if subtasks else "points"
    return "%"


def _header(benchmark: str, runs: list[dict[str, Any]]) -> str:
    """``benchmark (headline, scale, n=samples)`` from the benchmark's runs."""
    first = runs[0]
    if "headline" not in first:
        return benchmark
    counts = sorted({run["samples"] for run in runs if "samples" in run})
    n = "/".join(str(count) for count in counts)
    return f"{benchmark} ({first['headline']}, {scale(first)}, n={n})" if n else benchmark


def accuracy_table(results: list[dict[str, Any]]) -> list[list[str]]:
    benchmarks = list(dict.fromkeys(run["benchmark"] for run in results))
    index = {(r["benchmark"], r["method"], budget_label(r["budget"])): r for r in results}
    base = baseline_values(results)
    marks = _marks(results) if all("efficiency" in r for r in results) else {}
    headers = [_header(b, [r for r in results if r["benchmark"] == b]) for b in benchmarks]
    rows = [["method", "budget", *headers, "mean % of base"]]
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
        mark = marks.get((method, budget_label(budget)), "")
        rows.append([method, budget_label(budget) + mark, *cells, _fmt(_mean(relative), ".1f")])
    return rows


def efficiency_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (method, budget): efficiency figures averaged over the benchmarks, and mean relative accuracy."""
    base = baseline_values(results)
    bases = {r["benchmark"]: r for r in results if r["method"] == BASELINE}
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
            "prefill_iqr": _mean([_eff(r, "prefill_ms_per_sample", "iqr") for r in runs]),
            "speedup": _speedup(runs, bases),
            "threads": _threads(runs),
            "load": _load(runs),
            "decode_ms": _mean([_eff(r, "decode_ms_per_token", "median") for r in runs]),
            "peak_mib": _mean([(_eff(r, "peak_bytes", "max") or 0) / 2**20 for r in runs]),
            "relative_accuracy": _mean([100 * r["value"] / base[r["benchmark"]] for r in runs if base.get(r["benchmark"])]),  # noqa: E501
        })  # fmt: skip
    return rows


def _speedup(runs: list[dict[str, Any]], bases: dict[str, dict[str, Any]]) -> str:
    """Prefill speed-up over the unmodified model (ratio of medians, mean over benchmarks) and its interval from
    the interquartile ranges, ``1.85 [1.60-2.10]``; marked ``~`` when the interval holds 1.0."""
    ratios, lows, highs = [], [], []
    for run in runs:
        base = bases.get(run["benchmark"])
        if base is None or base is run:
            continue
        here = run["efficiency"].get("prefill_ms_per_sample") if "efficiency" in run else None
        there = base["efficiency"].get("prefill_ms_per_sample") if "efficiency" in base else None
        if not here or not there or not here.get("median"):
            continue
        ratios.append(there["median"] / here["median"])
        lows.append(there.get("q1", there["median"]) / max(here.get("q3", here["median"]), 1e-12))
        highs.append(there.get("q3", there["median"]) / max(here.get("q1", here["median"]), 1e-12))
    if not ratios:
        return "-"
    low, high = statistics.fmean(lows), statistics.fmean(highs)
    mark = f" {SPREAD_OVERLAPS_ONE}" if low <= 1.0 <= high else ""
    return f"{statistics.fmean(ratios):.2f} [{low:.2f}-{high:.2f}]{mark}"


def _threads(runs: list[dict[str, Any]]) -> str:
    """The torch threads the runs were timed with (several when they differ)."""
    threads = sorted({t for run in runs for t in (run.get("timing") or {}).get("threads", [])})
    return ",".join(map(str, threads)) or "-"


def _load(runs: list[dict[str, Any]]) -> str:
    """The highest 1-minute load average while the runs were timed, over the usable cores; ``!`` above them."""
    headers = [r.get("timing") or {} for r in runs]
    loads = [h["load_avg_max"] for h in headers if h.get("load_avg_max") is not None]
    if not loads:
        return "-"
    cores = max((h["cores"] for h in headers if h.get("cores")), default=None)
    mark = f" {UNDER_LOAD}" if any(h.get("under_load") for h in headers) else ""
    return f"{max(loads):.1f}/{cores if cores else '?'}{mark}"


EFFICIENCY_COLUMNS = (
    ("method", "method", "s"), ("budget", "budget", "s"), ("LLM visual tokens", "llm_tokens", ".1f"),
    ("layer-avg tokens", "equivalent_tokens", ".1f"), ("requested tokens", "requested_tokens", ".1f"),
    ("achieved tokens", "achieved_tokens", ".1f"), ("prefill GFLOPs", "prefill_gflops", ".3f"),
    ("KV KiB", "kv_kib", ".1f"), ("prefill ms/sample", "prefill_ms", ".2f"), ("IQR ms", "prefill_iqr", ".2f"),
    ("prefill speed-up [IQR]", "speedup", "s"), ("decode ms/token", "decode_ms", ".2f"),
    ("peak MiB", "peak_mib", ".0f"), ("threads", "threads", "s"), ("load/cores", "load", "s"),
    ("accuracy % of base", "relative_accuracy", ".1f"),
)  # fmt: skip


def efficiency_table(results: list[dict[str, Any]]) -> list[list[str]]:
    table = [[title for title, _, _ in EFFICIENCY_COLUMNS]]
    marks = _marks(results)
    for row in efficiency_rows(results):
        cells = [row[key] if spec == "s" else _fmt(row[key], spec) for _, key, spec in EFFICIENCY_COLUMNS]
        cells[1] += marks.get((row["method"], row["budget"]), "")
        table.append(cells)
    return table


def unreachable(results: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """(method, budget label) -> why the budget is out of the method's reach on this model: its mean achieved
    layer-averaged visual tokens are more than 5 % off the mean request (the runs' warning, as a row mark)."""
    notes = {}
    for row in efficiency_rows(results):
        requested, achieved = row["requested_tokens"], row["achieved_tokens"]
        if row["method"] != BASELINE and achieved is not None and off_budget(requested, achieved):
            notes[(row["method"], row["budget"])] = (
                f"asks for {requested:.1f} layer-averaged visual tokens and gets {achieved:.1f} "
                f"({100 * (achieved - requested) / requested:+.1f} %, more than {100 * TOLERANCE:.0f} % off)"
            )
    return notes


def _marks(results: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """(method, budget label) -> the text after its budget: `` † unreachable``, `` *`` or both."""
    out_of_reach, notes = unreachable(results), budget_notes(results)
    marks = {}
    for key, note in notes.items():
        same = "the same tokens as budget" in note
        marks[key] = (f" {UNREACHABLE}" if key in out_of_reach else "") + (f" {SAME}" if same else "")
    return marks


def budget_notes(results: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """(method, budget label) -> why the row is marked: its mean achieved layer-averaged visual tokens are
    more than 5 % off the mean request (both numbers), or equal another budget's of the same method."""
    rows = [row for row in efficiency_rows(results) if row["method"] != BASELINE]
    notes: dict[tuple[str, str], list[str]] = defaultdict(list)
    for key, note in unreachable(results).items():
        notes[key].append(f"unreachable on this model: {note}")
    for row in rows:
        achieved = row["achieved_tokens"]
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
    out_of_reach, notes = unreachable(results), []
    for (method, budget), note in budget_notes(results).items():
        symbols = ("†" if (method, budget) in out_of_reach else "") + ("\\*" if "the same tokens" in note else "")
        notes.append(f"{symbols} {method} {budget}: {note}.")
    return notes


def _timing_footnotes(results: list[dict[str, Any]]) -> list[str]:
    rows = efficiency_rows(results)
    notes = []
    if any(SPREAD_OVERLAPS_ONE in row["speedup"] for row in rows):
        notes.append(f"{SPREAD_OVERLAPS_ONE} the speed-up's interquartile interval holds 1.0: not distinguishable "
                     "from no speed-up at this spread.")  # fmt: skip
    if any(UNDER_LOAD in row["load"] for row in rows):
        notes.append(f"{UNDER_LOAD} timed while the 1-minute load average exceeded the usable cores: other "
                     "processes competed for the CPU, the times include waiting.")  # fmt: skip
    return notes


def _settings(results: list[dict[str, Any]]) -> str:
    """How the runs were timed, from the runs themselves (a rerun with other settings adds, never rewrites)."""
    headers = [r.get("timing") or {} for r in results]
    threads = sorted({t for h in headers for t in h.get("threads", [])})
    sizes = sorted({b for h in headers for b in h.get("batch_sizes", [])})
    if not any(h.get("timed") for h in headers):
        return "Runs were not timed."
    repeats = min((h.get("batches", 0) for h in headers if h), default=0)
    loaded = sum(1 for h in headers if h.get("under_load"))
    return (
        f"Timing: after a warm-up call, every batch of a run is timed and its first batch again until the run has "
        f"at least {repeats} timed batches; times are medians over them with their interquartile range (IQR). "
        f"Runs were timed with torch threads {', '.join(map(str, threads))} and batch size "
        f"{', '.join(map(str, sizes))} (each run's own in the efficiency table); {loaded} of {len(results)} runs "
        "were timed under load."
    )


def _markdown(table: list[list[str]]) -> str:
    lines = ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
    lines += ["| " + " | ".join(row) + " |" for row in table[1:]]
    return "\n".join(lines)


def _html_table(table: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(out: str | Path, results: list[dict[str, Any]] | None = None) -> Path:
    """Write ``report.md``, ``report.html`` and ``plots/*.png`` into ``out``; ``results`` default to its
    ``metrics.json``. Returns the path of ``report.md``."""
    out = Path(out)
    if results is None:
        results = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["runs"]
    environment = out / "environment.json"
    env = json.loads(environment.read_text(encoding="utf-8")) if environment.is_file() else {}
    plots = write_plots(results, out / "plots", efficiency_rows(results), unreachable(results))
    accuracy, efficiency = accuracy_table(results), efficiency_table(results)
    footnotes = _budget_footnotes(results)
    timing_notes = _timing_footnotes(results)
    device = f"{env.get('device', '?')} ({env.get('device_name', '')})"
    intro = (
        f"Device: {device}; processes: {env.get('processes', 1)}; torch {env.get('torch', '?')}, transformers "
        f"{env.get('transformers', '?')}. Accuracy: the benchmark's headline ± bootstrap standard error, on the "
        "scale its column names (percentage of the unmodified model where that model is at least two standard "
        "errors above chance). Efficiency: means over samples; prefill times per sample are the batch's time "
        "divided by its size; FLOPs are analytic (vision tower, projector, decoder, LM head). " + _settings(results)
    )
    notes = "\n".join(footnotes) + "\n" if footnotes else ""
    eff_notes = "\n".join(footnotes + timing_notes) + "\n" if footnotes or timing_notes else ""
    markdown = ["# mmaccel eval report", "", intro, "", "## Accuracy", "", _markdown(accuracy), "", notes,
                "## Efficiency (mean over benchmarks)", "", _markdown(efficiency), "", eff_notes,
                "## Plots", ""]  # fmt: skip
    markdown += [f"### {title}\n\n![{title}]({path})\n" for title, path in plots]
    (out / "report.md").write_text("\n".join(markdown) + "\n", encoding="utf-8")
    html_notes = "".join(f"<p>{html.escape(note.replace(chr(92), ''))}</p>" for note in footnotes)
    html_eff_notes = html_notes + "".join(f"<p>{html.escape(note)}</p>" for note in timing_notes)
    figures = "".join(
        f"<h3>{html.escape(t)}</h3><img src='{html.escape(p)}' alt='{html.escape(t)}'>" for t, p in plots
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>mmaccel eval report</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}img{max-width:100%}</style></head><body>"
        f"<h1>mmaccel eval report</h1><p>{html.escape(intro)}</p><h2>Accuracy</h2>{_html_table(accuracy)}"
        f"{html_notes}<h2>Efficiency (mean over benchmarks)</h2>{_html_table(efficiency)}{html_eff_notes}"
        f"<h2>Plots</h2>{figures}</body></html>"
    )
    (out / "report.html").write_text(page, encoding="utf-8")
    log.info("report: %s", out / "report.md")
    return out / "report.md"
