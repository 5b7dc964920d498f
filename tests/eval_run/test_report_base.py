""" "% of base" leaves out benchmarks where the unmodified model is not clearly above zero."""

from __future__ import annotations

from mmaccel.eval.report import accuracy_table, baseline_values


def _run(benchmark, method, budget, value, se):
    return {"benchmark": benchmark, "method": method, "budget": budget, "value": value, "se": se}


def test_noisy_near_zero_baselines_are_left_out_of_the_relative_accuracy():
    results = [
        _run("a", "none", None, 50.0, 5.0),
        _run("b", "none", None, 2.0, 1.5),  # within two standard errors of zero
        _run("c", "none", None, 0.0, 0.0),
        _run("a", "fastv", 0.5, 40.0, 5.0),
        _run("b", "fastv", 0.5, 0.0, 0.0),
        _run("c", "fastv", 0.5, 0.0, 0.0),
    ]
    assert baseline_values(results) == {"a": 50.0}
    table = accuracy_table(results)
    fastv = next(row for row in table if row[0] == "fastv")
    assert fastv[-1] == "80.0"  # only benchmark a counts
    assert "(" not in fastv[3]  # no ratio printed against b's noisy base
