"""The runner on the toy model: files, per-sample stats, resume after a kill, refusal of another config, report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmaccel.errors import ConfigError
from mmaccel.eval import distributed
from mmaccel.eval.runner import ProgressHook, evaluate


class _Counting(ProgressHook):
    def __init__(self, stop_after: int | None = None) -> None:
        self.total = None
        self.done = 0
        self.stop_after = stop_after

    def start(self, total: int) -> None:
        self.total = total

    def advance(self, n: int, run: str) -> None:
        self.done += n
        if self.stop_after is not None and self.done >= self.stop_after:
            raise KeyboardInterrupt  # what a kill between two batches leaves behind


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def finished(toy, tmp_path_factory):
    """One complete small run, shared by the tests that only read it."""
    from mmaccel.eval.config import EvalConfig

    root = tmp_path_factory.mktemp("finished")
    config = EvalConfig(
        benchmarks=["shapes-gqa", "shapes-mme"], methods=["none", "visionzip", "fastv"], budgets=[0.5], limit=1,
        batch_size=4, max_new_tokens=4, out=str(root / "out"), data=str(root / "data"),
    )  # fmt: skip
    progress = _Counting()
    results = evaluate(config, progress, loaded_model=toy)
    return config, results, progress


def test_files_and_one_line_per_sample(finished):
    config, results, progress = finished
    out = Path(config.out)
    for name in ("config.yaml", "environment.json", "metrics.json"):
        assert (out / name).is_file(), name
    env = json.loads((out / "environment.json").read_text())
    assert env["torch"] and env["transformers"] and env["device"] == "cpu"
    assert len(results) == 6
    assert progress.total == sum(r["generations"] for r in results)
    for result in results:
        run_dir = out / result["run"]
        lines = _lines(run_dir / "predictions.jsonl")
        assert len(lines) == result["samples"] == len({line["id"] for line in lines})
        assert not distributed.part_files(run_dir)
        assert (run_dir / "metrics.json").is_file()
        for line in lines:
            assert set(line) == {"id", "prompt", "prediction", "efficiency"}
            timing = line["efficiency"]["timing"]
            assert timing["prefill_ms"] > 0 and timing["batch_size"] >= 1


def test_per_sample_tokens_and_flops_follow_the_method(finished):
    _, results, _ = finished
    by_run = {r["run"]: r for r in results}
    base = by_run["shapes-gqa/none-full"]["efficiency"]
    zipped = by_run["shapes-gqa/visionzip-0.5"]["efficiency"]
    fastv = by_run["shapes-gqa/fastv-0.5"]["efficiency"]
    visual = base["visual_tokens"]["mean"]
    assert base["llm_input_tokens"]["mean"] == base["equivalent_tokens"]["mean"] == visual
    assert zipped["llm_input_tokens"]["mean"] == visual / 2
    assert fastv["llm_input_tokens"]["mean"] == visual and fastv["equivalent_tokens"]["mean"] < visual
    for eff in (zipped, fastv):
        assert eff["prefill_flops"]["mean"] < base["prefill_flops"]["mean"]
        assert eff["kv_bytes"]["mean"] < base["kv_bytes"]["mean"]


def test_rerun_of_a_finished_directory_generates_nothing(finished, toy):
    config, results, _ = finished
    before = {r["run"]: (Path(config.out) / r["run"] / "predictions.jsonl").read_bytes() for r in results}
    progress = _Counting()
    again = evaluate(config.with_overrides({"batch_size": 2}), progress, loaded_model=toy)  # speed keys may change
    assert progress.total == 0
    assert [r["value"] for r in again] == [r["value"] for r in results]
    for run, data in before.items():
        assert (Path(config.out) / run / "predictions.jsonl").read_bytes() == data


@pytest.mark.parametrize(("key", "value"), [("seed", 1), ("limit", 2), ("max_new_tokens", 3)])
def test_a_different_config_is_refused_naming_the_key(finished, toy, key, value):
    config, _, _ = finished
    with pytest.raises(ConfigError, match=key):
        evaluate(config.with_overrides({key: value}), loaded_model=toy)


def test_resume_after_a_kill_loses_and_duplicates_nothing(small_config, toy):
    config = small_config(benchmarks=["shapes-mme"], methods=["visionzip"], batch_size=2)
    with pytest.raises(KeyboardInterrupt):
        evaluate(config, _Counting(stop_after=4), loaded_model=toy)
    run_dir = Path(config.out) / "shapes-mme" / "visionzip-0.5"
    part = run_dir / "predictions.part-0.jsonl"
    written = part.read_text()
    assert len(written.splitlines()) == 4 and not (run_dir / "metrics.json").exists()
    with part.open("a") as handle:  # a kill in the middle of a write
        handle.write('{"id": "torn", "predi')
    progress = _Counting()
    [result] = evaluate(config, progress, loaded_model=toy)
    assert progress.total == result["generations"] - 4
    lines = _lines(run_dir / "predictions.jsonl")
    assert sorted(line["id"] for line in lines) == sorted({line["id"] for line in lines})
    assert len(lines) == result["samples"] == 10
    kept = {json.loads(line)["id"]: json.loads(line) for line in written.splitlines()}
    for line in lines:  # the predictions made before the kill are kept as they were
        if line["id"] in kept:
            assert line == kept[line["id"]]


def test_report_files(finished):
    from mmaccel.eval.report import write_report

    config, _, _ = finished
    out = Path(config.out)
    report = write_report(out)
    text = report.read_text()
    assert "## Accuracy" in text and "## Efficiency" in text and "visionzip" in text
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert {"accuracy_vs_tokens.png", "accuracy_vs_prefill.png", "breakdown_shapes-mme.png"} <= set(pngs)
    for name in pngs:
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plots/{name}" in text
    page = (out / "report.html").read_text()
    assert page.count("<img") == len(pngs) and "<table>" in page


def test_a_non_empty_foreign_directory_is_refused(small_config, toy, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        evaluate(small_config(out=str(foreign)), loaded_model=toy)


def test_predictions_of_other_weights_are_refused(small_config, toy):
    config = small_config(benchmarks=["shapes-gqa"], methods=["none"], timing=False)
    evaluate(config, loaded_model=toy)
    stamp = Path(config.out) / "model.json"
    recorded = json.loads(stamp.read_text())
    assert len(recorded["model_weights"]) == 16
    stamp.write_text(json.dumps({**recorded, "model_weights": "0" * 16}))  # as if the checkpoint was retrained
    with pytest.raises(ConfigError, match="model weights"):
        evaluate(config, loaded_model=toy)


def test_a_real_benchmark_folder_with_limit(toy, tmp_path):
    """``--benchmark gqa --data DIR``: the real loader reads DIR (here a suite in GQA's layout), first N samples."""
    from mmaccel.eval.config import EvalConfig
    from mmaccel.toy.suites import write_suite

    data = tmp_path / "gqa"
    write_suite("shapes-gqa", data, 5)
    before = sorted(p.name for p in data.rglob("*"))
    config = EvalConfig(benchmarks=["gqa"], methods=["none"], limit=3, data=str(data), out=str(tmp_path / "o"),
                        timing=False)  # fmt: skip
    [result] = evaluate(config, loaded_model=toy)
    assert result["run"] == "gqa/none-full" and result["samples"] == 3
    assert sorted(p.name for p in data.rglob("*")) == before  # nothing written into the data folder
