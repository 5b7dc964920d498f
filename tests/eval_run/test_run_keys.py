"""Run folders keyed by the canonical budget and options, duplicates refused, the lock on --out, and a suite
write that resumes after a kill."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mmaccel.cli import main
from mmaccel.errors import ConfigError
from mmaccel.eval.config import budget_label, parse_budgets
from mmaccel.eval.runner import evaluate


def test_one_token_and_the_whole_image_are_different_budgets_with_different_folders(small_config, toy):
    config = small_config(benchmarks=["shapes-gqa"], methods=["visionzip"], budgets="1,1.0", timing=False)
    assert config.budgets == [1, 1.0] and [type(b) for b in config.budgets] == [int, float]
    results = evaluate(config, loaded_model=toy)
    by_run = {r["run"]: r for r in results}
    assert set(by_run) == {"shapes-gqa/visionzip-1", "shapes-gqa/visionzip-1.0"}
    assert by_run["shapes-gqa/visionzip-1"]["efficiency"]["llm_input_tokens"]["mean"] == 1
    assert by_run["shapes-gqa/visionzip-1.0"]["efficiency"]["llm_input_tokens"]["mean"] == 64
    for run in by_run:
        assert (Path(config.out) / run / "predictions.jsonl").is_file()


def test_labels_are_canonical_and_distinct():
    assert [budget_label(b) for b in (1, 1.0, 0.5, 0.125, 0.1234567, 0.1234568, None)] == [
        "1", "1.0", "0.5", "0.125", "0.1234567", "0.1234568", "full",
    ]  # fmt: skip


@pytest.mark.parametrize("value", ["0.5,0.5", "64 64", [0.25, 0.250]])
def test_a_budget_given_twice_is_refused(value):
    with pytest.raises(ConfigError, match="given twice"):
        parse_budgets(value)


def test_duplicate_budgets_on_the_command_line_exit_2_and_write_nothing(capsys, tmp_path):
    code = main(["eval", "--benchmark", "shapes-gqa", "--method", "fastv", "--budget", "0.5,0.5", "--limit", "1",
                 "--out", str(tmp_path / "o")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "given twice" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_method_options_are_part_of_the_run_folder_and_other_options_add_runs(small_config, toy):
    config = small_config(benchmarks=["shapes-gqa"], methods=["fastv"], method_options={"fastv": {"k": 3}},
                          timing=False)  # fmt: skip
    [first] = evaluate(config, loaded_model=toy)
    assert first["run"] == "shapes-gqa/fastv-0.5-k=3" and first["options"] == {"k": 3}
    [second] = evaluate(config.with_overrides({"method_options": {"fastv": {"k": 1}}}), loaded_model=toy)
    assert second["run"] == "shapes-gqa/fastv-0.5-k=1"
    out = Path(config.out) / "shapes-gqa"
    assert sorted(p.name for p in out.iterdir()) == ["fastv-0.5-k=1", "fastv-0.5-k=3"]


def test_a_second_evaluation_on_a_locked_out_is_refused_and_runs_after_release(small_config, toy):
    from filelock import FileLock

    config = small_config(benchmarks=["shapes-gqa"], methods=["none"], timing=False)
    out = Path(config.out)
    out.mkdir(parents=True)
    with FileLock(str(out / ".lock")), pytest.raises(ConfigError, match="in use by another mmaccel eval"):
        evaluate(config, loaded_model=toy)
    assert sorted(p.name for p in out.iterdir() if p.name != ".lock") == []  # nothing written while locked
    [result] = evaluate(config, loaded_model=toy)  # released: runs
    assert result["samples"] == 1


def test_a_kill_while_a_suite_is_written_does_not_block_the_next_run(small_config, toy, monkeypatch):
    from mmaccel.toy.suites import registry

    suite = registry.SUITES["shapes-gqa"]

    def killed(root, number, size):
        suite.write(root, number, size)  # the files are there, the manifest is not: the kill came before it
        raise KeyboardInterrupt

    config = small_config(benchmarks=["shapes-gqa"], methods=["none"], timing=False)
    monkeypatch.setitem(registry.SUITES, "shapes-gqa", dataclasses.replace(suite, write=killed))
    with pytest.raises(KeyboardInterrupt):
        evaluate(config, loaded_model=toy)
    monkeypatch.setitem(registry.SUITES, "shapes-gqa", suite)
    [result] = evaluate(config, loaded_model=toy)  # resumes: the interrupted write is redone
    assert result["samples"] == 1
    data = Path(config.data)
    assert sorted(p.name for p in data.iterdir()) == ["shapes-gqa"]  # no partial folder left
    assert registry.read_manifest(data / "shapes-gqa")["size"] == 1


def test_the_command_line_reports_a_locked_out_with_exit_2(capsys, tmp_path):
    from filelock import FileLock

    out = tmp_path / "o"
    out.mkdir()
    with FileLock(str(out / ".lock")):
        code = main(["eval", "--benchmark", "shapes-gqa", "--method", "none", "--limit", "1", "--no-timing",
                     "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "in use by another mmaccel eval" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir() if p.name != ".lock") == []


def test_a_method_named_twice_is_refused(small_config):
    from mmaccel.eval.runner import plan_runs

    with pytest.raises(ConfigError, match="fastv more than once"):
        plan_runs(small_config(methods=["fastv", "fastv"]))
