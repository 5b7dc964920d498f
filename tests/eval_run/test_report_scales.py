"""The report: scales and sample counts in the headers, "% of base" only above chance, a distinct colour and
marker per series, labelled axes, a marked row for a budget out of reach."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmaccel.eval.report import accuracy_table, baseline_values, write_report


def _run(benchmark, method, budget, value, se, chance=None, **extra):
    return {"benchmark": benchmark, "method": method, "budget": budget, "value": value, "se": se,
            "chance": chance, **extra}  # fmt: skip


def test_headers_name_the_headline_its_scale_and_the_sample_count():
    from mmaccel.eval.benchmarks.mme import COGNITION, PERCEPTION

    subtasks = {name: {"score": 100.0} for name in (*PERCEPTION, *COGNITION)}
    results = [
        _run("mme", "none", None, 1500.0, 30.0, scorer="mme", headline="perception", samples=2374,
             metrics={"subtasks": subtasks}),
        _run("shapes-gqa", "none", None, 60.0, 3.0, scorer="gqa", headline="accuracy", samples=64, metrics={}),
    ]  # fmt: skip
    header = accuracy_table(results)[0]
    assert header[2] == "mme (perception, points of 2000, n=2374)"
    assert header[3] == "shapes-gqa (accuracy, %, n=64)"


def test_relative_accuracy_only_where_the_base_is_two_standard_errors_above_chance():
    results = [
        _run("pope", "none", None, 55.0, 3.0, chance=50.0),  # 1.7 SE above chance: a ratio would mislead
        _run("gqa", "none", None, 40.0, 3.0, chance=0.0),
        _run("pope", "fastv", 0.5, 68.0, 3.0, chance=50.0),
        _run("gqa", "fastv", 0.5, 20.0, 3.0, chance=0.0),
    ]
    assert baseline_values(results) == {"gqa": 40.0}
    fastv = next(row for row in accuracy_table(results) if row[0] == "fastv")
    assert "(" not in fastv[2] and fastv[3].endswith("(50%)") and fastv[-1] == "50.0"


def test_chance_levels_of_the_suites(tmp_path):
    from mmaccel.eval.benchmarks import get_benchmark
    from mmaccel.eval.chance import chance_level
    from mmaccel.eval.suites import find_suite, prepare_suite

    levels = {}
    for name in ("shapes-pope", "shapes-sqa", "shapes-gqa"):
        suite = find_suite(name)
        bench = get_benchmark(suite.benchmark)
        levels[name] = chance_level(bench, bench.load(prepare_suite(name, tmp_path / name, 8)))
    assert 40 < levels["shapes-pope"] < 60  # F1 of yes/no guessing
    assert 20 < levels["shapes-sqa"] < 55  # one of two to four options
    assert levels["shapes-gqa"] == 0.0


def test_every_series_has_its_own_colour_and_marker():
    from mmaccel.eval.report_plots import series_styles
    from mmaccel.methods.registry import list_methods

    names = ["none", *list_methods()]
    assert len(names) >= 11  # more series than a 10-colour cycle
    styles = series_styles(names)
    assert len({s["color"] for s in styles.values()}) == len(names)
    assert len({s["marker"] for s in styles.values()}) == len(names)
    many = series_styles([f"m{i}" for i in range(45)])
    assert len({(s["color"], s["marker"], s["hatch"]) for s in many.values()}) == 45


@pytest.fixture
def report(small_config, toy, monkeypatch):
    """A report of a small directory, with the y-axis label of every drawn axes of every saved figure."""
    import matplotlib.figure

    from mmaccel.eval.runner import evaluate

    labels: dict[str, list[str]] = {}
    save = matplotlib.figure.Figure.savefig

    def recording(figure, path, *args, **kwargs):
        labels[Path(path).name] = [axis.get_ylabel() for axis in figure.axes if axis.axison]
        return save(figure, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", recording)
    config = small_config(methods=["none", "visionzip", "pool"], budgets=[0.5, 11])
    evaluate(config, loaded_model=toy)
    return write_report(config.out).read_text(), labels


def test_every_plot_labels_its_y_axis_and_a_budget_out_of_reach_has_a_marked_row(report):
    text, labels = report
    assert {"accuracy_vs_tokens.png", "accuracy_vs_prefill.png", "breakdown_shapes-mme.png"} <= set(labels)
    for name, ylabels in labels.items():
        assert ylabels and all(ylabels), name
    assert "perception (points of" in " ".join(labels["accuracy_vs_tokens.png"])
    # the toy's 8 x 8 grid cannot pool to 11 tokens (it gives 10)
    assert "| pool | 11 † unreachable |" in text
    assert "† pool 11: unreachable on this model: asks for 11.0" in text
    assert "shapes-mme (perception, points of" in text and "n=10)" in text
