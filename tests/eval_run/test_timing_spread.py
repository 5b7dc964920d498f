"""Timings per run: repeated measurement with median and IQR, wall and CPU time, load and threads recorded per
run; the report flags timings taken under load and speed-ups whose spread holds 1.0."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mmaccel.eval.report import efficiency_table, write_report
from mmaccel.eval.runner import evaluate


def test_each_run_has_repeats_quartiles_wall_cpu_load_and_threads(small_config, toy):
    config = small_config(benchmarks=["shapes-gqa"], methods=["none"], repeats=3)  # one batch of one request
    [result] = evaluate(config, loaded_model=toy)
    prefill = result["efficiency"]["prefill_ms_per_sample"]
    assert prefill["n"] == 3  # the single batch, timed again twice
    assert prefill["q1"] <= prefill["median"] <= prefill["q3"] and prefill["iqr"] == prefill["q3"] - prefill["q1"]
    header = result["timing"]
    assert header["batches"] == 3 and header["threads"] == [torch.get_num_threads()] and header["batch_sizes"] == [4]
    assert header["wall_s"] > 0 and header["cpu_s"] > 0 and header["cores"] >= 1
    assert header["load_avg_max"] >= 0 and isinstance(header["under_load"], bool)
    repeats = [json.loads(line) for line in (Path(config.out) / result["run"] / "timing.part-0.jsonl").open()]
    assert [line["repeat"] for line in repeats] == [1, 2]


def test_a_rerun_with_other_threads_keeps_the_settings_earlier_runs_were_timed_under(small_config, toy):
    threads = torch.get_num_threads()
    config = small_config(benchmarks=["shapes-gqa"], methods=["none"], repeats=1, threads=1)
    try:
        evaluate(config, loaded_model=toy)
        results = evaluate(config.with_overrides({"methods": ["none", "visionzip"], "threads": 2, "batch_size": 2}),
                           loaded_model=toy)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    by_method = {r["method"]: r["timing"] for r in results}
    assert by_method["none"]["threads"] == [1] and by_method["none"]["batch_sizes"] == [4]
    assert by_method["visionzip"]["threads"] == [2] and by_method["visionzip"]["batch_sizes"] == [2]
    table = efficiency_table(results)
    column = table[0].index("threads")
    assert {row[0]: row[column] for row in table[1:]} == {"none": "1", "visionzip": "2"}
    text = write_report(config.out).read_text()
    assert "torch threads 1, 2 and batch size 2, 4" in text


def _run(method, median, q1, q3, load=0.5, cores=2, under_load=False):
    prefill = {"mean": median, "median": median, "max": q3, "q1": q1, "q3": q3, "iqr": q3 - q1, "n": 5}
    timing = {"threads": [2], "batch_sizes": [8], "cores": cores, "load_avg_max": load, "under_load": under_load,
              "batches": 5, "wall_s": 1.0, "cpu_s": 1.5}  # fmt: skip
    budget = None if method == "none" else 0.5
    return {"benchmark": "b", "method": method, "budget": budget, "value": 50.0, "se": 1.0,
            "efficiency": {"prefill_ms_per_sample": prefill}, "timing": timing}  # fmt: skip


def test_speed_ups_within_the_spread_and_timings_under_load_are_flagged():
    results = [
        _run("none", 10.0, 9.0, 11.0),
        _run("fastv", 5.0, 4.5, 5.5),  # 2x, interval [1.64, 2.44]: clear
        _run("pool", 9.0, 7.0, 12.0, load=3.5, under_load=True),  # 1.11x, interval [0.75, 1.57]: holds 1.0
    ]
    table = efficiency_table(results)
    header = table[0]
    rows = {row[0]: row for row in table[1:]}
    speed, load = header.index("prefill speed-up [IQR]"), header.index("load/cores")
    assert rows["fastv"][speed] == "2.00 [1.64-2.44]"
    assert rows["pool"][speed] == "1.11 [0.75-1.57] ~"
    assert rows["pool"][load] == "3.5/2 !" and rows["fastv"][load] == "0.5/2"
    assert rows["pool"][header.index("IQR ms")] == "5.00"


def test_under_load_means_other_processes_held_the_cores():
    from mmaccel.eval.meter import timing_header

    def header(load, wall_ms, cpu_ms):
        timing = {"batch": "b1", "load_avg": load, "cores": 2, "threads": 2, "wall_ms": wall_ms, "cpu_ms": cpu_ms}
        return timing_header([{"timing": timing}])

    assert not header(1.2, 100.0, 190.0)["under_load"]  # below the cores
    assert not header(2.1, 100.0, 190.0)["under_load"]  # the run's own two threads: 2.1 - 1.9 of others
    assert header(3.4, 100.0, 120.0)["under_load"]  # 2.2 cores' worth of other work: the run waited
    assert header(2.6, 100.0, 190.0)["under_load"]  # above the cores with 0.7 of other work
