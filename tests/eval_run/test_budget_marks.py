"""Requested and achieved tokens in the records, and the report's mark on budgets that miss or repeat."""

from __future__ import annotations

import json
from pathlib import Path

from mmaccel.eval.report import accuracy_table, budget_notes, efficiency_table, write_report


def _run(method, budget, requested, achieved, llm=None, value=50.0):
    mean = lambda x: None if x is None else {"mean": x, "median": x, "max": x, "n": 1}  # noqa: E731
    efficiency = {
        "llm_input_tokens": mean(llm if llm is not None else achieved),
        "equivalent_tokens": mean(achieved),
        "requested_tokens": mean(requested),
        "achieved_tokens": mean(achieved),
    }
    return {"benchmark": "b", "method": method, "budget": budget, "value": value, "se": 1.0, "efficiency": efficiency}


def test_rows_off_budget_or_repeating_another_budget_are_marked():
    results = [
        _run("none", None, None, 64.0),
        _run("fastv", 0.5, 40.0, 40.0),  # on budget
        _run("fastv", 0.3, 28.8, 28.0),  # 2.8 % off: on budget
        _run("sparsevlm", 0.25, 16.0, 16.0),
        _run("sparsevlm", 0.125, 8.0, 16.0),  # collapsed onto 0.25's plan
        _run("pool", 11, 11.0, 10.0),
    ]
    notes = budget_notes(results)
    assert set(notes) == {("sparsevlm", "0.125"), ("sparsevlm", "0.25"), ("pool", "11")}
    assert notes[("sparsevlm", "0.125")] == (
        "unreachable on this model: asks for 8.0 layer-averaged visual tokens and gets 16.0 "
        "(+100.0 %, more than 5 % off); the same tokens as budget 0.25"
    )
    assert notes[("sparsevlm", "0.25")] == "the same tokens as budget 0.125"
    assert notes[("pool", "11")].startswith(
        "unreachable on this model: asks for 11.0 layer-averaged visual tokens and gets 10.0 (-9.1 %"
    )
    budgets = {row[0] + " " + row[1] for row in accuracy_table(results)[1:]}
    assert {
        "fastv 0.5",
        "fastv 0.3",
        "sparsevlm 0.25 *",
        "sparsevlm 0.125 † unreachable *",
        "pool 11 † unreachable",
    } <= budgets
    table = efficiency_table(results)
    header = table[0]
    row = next(r for r in table if r[0] == "pool")
    assert row[1] == "11 † unreachable"
    assert (row[header.index("requested tokens")], row[header.index("achieved tokens")]) == ("11.0", "10.0")


def test_results_without_token_records_are_not_marked():
    results = [{"benchmark": "b", "method": "fastv", "budget": 0.5, "value": 1.0, "se": None}]
    assert accuracy_table(results)[1][1] == "0.5"


def test_runner_records_both_counts_and_the_report_marks_the_pool_budget_no_grid_holds(small_config, toy):
    from mmaccel.eval.runner import evaluate

    # The toy model's 64 tokens are an 8 x 8 grid: 11 tokens (prime) pool to 10, the same tokens as budget 10.
    config = small_config(benchmarks=["shapes-gqa"], methods=["pool"], budgets=[10, 11])
    results = evaluate(config, loaded_model=toy)
    by_budget = {r["budget"]: r for r in results}
    lines = [json.loads(line) for line in (Path(config.out) / by_budget[11]["run"] / "predictions.jsonl").open()]
    for line in lines:
        tokens = line["efficiency"]["tokens"]
        assert (tokens["requested_tokens"], tokens["achieved_tokens"]) == (11.0, 10.0)
    assert by_budget[11]["efficiency"]["requested_tokens"]["mean"] == 11.0
    assert by_budget[10]["efficiency"]["achieved_tokens"]["mean"] == 10.0
    text = write_report(config.out).read_text()
    assert "| pool | 11 † unreachable * |" in text and "| pool | 10 * |" in text
    assert (
        "†\\* pool 11: unreachable on this model: asks for 11.0 layer-averaged visual tokens and gets 10.0 (-9.1 %"
        in text
    )
    assert "the same tokens as budget 10" in text
