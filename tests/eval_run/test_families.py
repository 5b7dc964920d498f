"""``mmaccel eval --model DIR`` end to end on the tiny checkpoint of every family.

Each family's checkpoint (``python -m mmaccel.models.tiny FAMILY DIR``) runs a two-question synthetic suite
unmodified, under a pre-LLM method (``random``), an in-LLM method (``fastv``) and, where the family supports it,
an in-tower method (``tome``). The predictions, the per-sample token counts and the report must all be there,
and every method must leave the decoder fewer layer-averaged visual tokens than the unmodified model.
"""

from __future__ import annotations

import json

import pytest

from mmaccel.cli import main
from mmaccel.errors import NotSupportedError
from mmaccel.methods.registry import build_method
from mmaccel.models.tiny.checkpoint import CHECKPOINT_FAMILIES, build_checkpoint_model, write_checkpoint

SUITE = "shapes-gqa"
QUESTIONS = 2
PRE_LLM, IN_LLM, IN_TOWER = "random", "fastv", "tome"


def _supports(family: str, method: str) -> bool:
    from mmaccel.models.registry import adapter_for

    try:
        build_method(method, 0.5).validate(adapter_for(build_checkpoint_model(family)))
    except NotSupportedError:
        return False
    return True


def _records(run_dir) -> list[dict]:
    lines = (run_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


_RUNS: dict[str, tuple[list[str], object]] = {}


def _evaluate(family: str, tmp_path_factory) -> tuple[list[str], object]:
    """Run ``mmaccel eval`` once per family (shared by the tests below): the methods run and the output folder."""
    if family not in _RUNS:
        root = tmp_path_factory.mktemp(family)
        model_dir = write_checkpoint(family, root / "model")
        methods = ["none", PRE_LLM, IN_LLM] + ([IN_TOWER] if _supports(family, IN_TOWER) else [])
        argv = ["eval", "--model", str(model_dir), "--benchmark", SUITE, "--method", ",".join(methods),
                "--budget", "0.5", "--limit", str(QUESTIONS), "--max-new-tokens", "2", "--batch-size", "2",
                "--no-timing", "--out", str(root / "out"), "--data", str(root / "data")]  # fmt: skip
        assert main(argv) == 0
        _RUNS[family] = (methods, root / "out")
    return _RUNS[family]


def _tokens(out, method: str) -> list[dict]:
    folder = out / SUITE / f"{method}-{'full' if method == 'none' else '0.5'}"
    return [record["efficiency"]["tokens"] for record in _records(folder)]


@pytest.mark.parametrize("family", list(CHECKPOINT_FAMILIES))
def test_eval_runs_every_family_with_methods_of_each_stage(family, tmp_path_factory):
    methods, out = _evaluate(family, tmp_path_factory)
    if family == "llava":
        assert IN_TOWER in methods  # the CLIP tower of LLaVA-1.5 supports ToMe
    for method in methods:
        records = _records(out / SUITE / f"{method}-{'full' if method == 'none' else '0.5'}")
        assert len(records) == QUESTIONS, method
        assert all(isinstance(record["prediction"], str) for record in records)
        assert all(record["efficiency"]["new_tokens"] >= 1 for record in records)
    base = _tokens(out, "none")
    assert all(tokens["visual_tokens"] > 0 for tokens in base)
    assert all(tokens["equivalent_tokens"] == tokens["llm_input_tokens"] == tokens["visual_tokens"] for tokens in base)
    for method in methods[1:]:
        for tokens, reference in zip(_tokens(out, method), base):
            assert tokens["equivalent_tokens"] < reference["equivalent_tokens"], (method, tokens, reference)
            assert tokens["equivalent_tokens"] < tokens["visual_tokens"], (method, tokens)
    assert all(t["llm_input_tokens"] < t["visual_tokens"] for t in _tokens(out, PRE_LLM))  # fewer enter the LLM
    for tokens in _tokens(out, IN_LLM):  # all enter the LLM, later layers see fewer
        assert tokens["llm_input_tokens"] == tokens["visual_tokens"]
        assert tokens["layer_tokens"][0] == tokens["visual_tokens"] > tokens["layer_tokens"][-1]

    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert sorted(run["method"] for run in metrics["runs"]) == sorted(methods)
    assert all(run["samples"] == QUESTIONS for run in metrics["runs"])
    report = (out / "report.md").read_text(encoding="utf-8")
    assert all(method in report for method in methods)


@pytest.mark.parametrize("family", CHECKPOINT_FAMILIES)
def test_baseline_and_methods_count_the_same_images_and_visual_tokens(family, tmp_path_factory):
    methods, out = _evaluate(family, tmp_path_factory)
    base = [(tokens["images"], tokens["visual_tokens"]) for tokens in _tokens(out, "none")]
    for method in methods[1:]:
        assert [(tokens["images"], tokens["visual_tokens"]) for tokens in _tokens(out, method)] == base, method


def _efficiency(out, method: str) -> list[dict]:
    folder = out / SUITE / f"{method}-{'full' if method == 'none' else '0.5'}"
    return [record["efficiency"] for record in _records(folder)]


@pytest.mark.parametrize("family", list(CHECKPOINT_FAMILIES))
def test_eval_measures_flops_and_kv_bytes_on_every_family(family, tmp_path_factory):
    from mmaccel.models.shape import describe

    methods, out = _evaluate(family, tmp_path_factory)
    shape = describe(build_checkpoint_model(family))
    base = _efficiency(out, "none")
    for record in base:
        prompt = record["text_tokens"] + record["tokens"]["visual_tokens"]
        per_token = 2 * shape.decoder.layers * shape.decoder.kv_heads * shape.decoder.head_dim * 4  # float32 K, V
        assert record["kv_bytes"] == (prompt + record["new_tokens"] - 1) * per_token  # every prompt token cached
        assert record["prefill_flops"] > 0 and record["decode_flops"] > 0
    for method in methods[1:]:
        for record, reference in zip(_efficiency(out, method), base):
            assert record["prefill_flops"] < reference["prefill_flops"], (method, family)
            if record["new_tokens"] == reference["new_tokens"]:
                assert record["kv_bytes"] < reference["kv_bytes"], (method, family)  # pruned tokens are not held
