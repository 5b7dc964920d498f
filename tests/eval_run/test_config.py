"""The evaluation config: budgets, YAML + flags, identity and fingerprint, bad values."""

from __future__ import annotations

import pytest

from mmaccel.errors import ConfigError
from mmaccel.eval.config import DEFAULT_BUDGETS, EvalConfig, load_config, parse_budgets


def test_parse_budgets_accepts_lists_strings_and_numbers():
    assert parse_budgets("0.5,0.25 64") == [0.5, 0.25, 64]
    assert parse_budgets([0.5, "32"]) == [0.5, 32]
    assert parse_budgets(0.125) == [0.125]
    assert isinstance(parse_budgets("64")[0], int)


@pytest.mark.parametrize("bad", ["0.5,x", "1.5", "0", "-3", "", [], None])
def test_parse_budgets_rejects_with_the_argument_named(bad):
    with pytest.raises(ConfigError, match="budget"):
        parse_budgets(bad)


def test_defaults_are_the_main_job():
    config = EvalConfig()
    assert config.model == "toy" and config.budgets == list(DEFAULT_BUDGETS)
    assert config.benchmarks == [] and config.methods == []  # all suites, none + every method


def test_yaml_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("limit: 5\nbudgets: [0.5, 32]\nbatch-size: 8\nmethods: fastv,visionzip\n")
    config = load_config(path, {"limit": 7})
    assert config.limit == 7  # the flag wins
    assert config.budgets == [0.5, 32] and config.batch_size == 8
    assert config.methods == ["fastv", "visionzip"]


@pytest.mark.parametrize(
    ("text", "match"),
    [("lmit: 3\n", "unknown key"), ("- 1\n", "mapping"), ("limit: [\n", "not valid YAML"), ("limit: -1\n", "limit")],
)
def test_bad_yaml(tmp_path, text, match):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_fingerprint_tracks_result_keys_only():
    base = EvalConfig()
    assert base.fingerprint() == EvalConfig().fingerprint()
    assert base.fingerprint() == base.with_overrides({"batch_size": 4, "out": "x", "methods": ["fastv"]}).fingerprint()
    for key, value in [("seed", 1), ("limit", 3), ("protocol", "lmms_eval"), ("max_new_tokens", 3)]:
        assert base.with_overrides({key: value}).fingerprint() != base.fingerprint(), key


@pytest.mark.parametrize(
    ("key", "value"), [("batch_size", 0), ("dtype", "float8"), ("threads", -1), ("method_options", {"fastv": 2})]
)
def test_bad_values(key, value):
    with pytest.raises(ConfigError, match=key):
        EvalConfig(**{key: value})


def test_the_main_job_plans_every_method_at_three_budgets_on_seven_suites():
    from mmaccel.eval.runner import plan_runs
    from mmaccel.methods.registry import list_methods
    from mmaccel.toy.suites import list_suites

    runs = plan_runs(EvalConfig())
    methods = [name for name in list_methods() if name != "downsample"]  # before the processor: only when named
    assert len(runs) == len(list_suites()) * (1 + 3 * len(methods))
    assert {run.method for run in runs} == {"none", *methods}
    assert all(EvalConfig().limit_for(run.benchmark) > 0 for run in runs)  # the main job never runs full suites
