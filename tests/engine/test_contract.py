"""The contract every registered method keeps, on tiny LLaVA models (CPU, random weights)."""

from __future__ import annotations

import pytest
import torch

import mmaccel
from method_matrix import METHOD_MATRIX, PARTIAL_BUDGET
from tiny_models import (
    GENERATE_KWARGS,
    TOKENS_PER_IMAGE,
    batch_inputs,
    prompt_ids,
    single_inputs,
    tiny_llava,
)

METHODS = sorted(METHOD_MATRIX)


def test_matrix_covers_every_registered_method():
    assert sorted(METHOD_MATRIX) == mmaccel.list_methods()


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def model(request):
    return tiny_llava(attn=request.param)


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def _hook_count(model) -> int:
    return sum(
        len(m._forward_pre_hooks) + len(m._forward_hooks) + len(m._forward_pre_hooks_with_kwargs)
        for m in model.modules()
    )


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("budget", [1.0, TOKENS_PER_IMAGE])
def test_keep_all_budget_is_bit_identical(model, method, budget):
    inputs = single_inputs(n_images=2)
    expected = _logits(model, inputs)
    expected_tokens = model.generate(**inputs, max_new_tokens=6, **GENERATE_KWARGS)
    with mmaccel.apply(model, method, budget=budget, **METHOD_MATRIX[method]) as session:
        got = _logits(model, inputs)
        tokens = model.generate(**inputs, max_new_tokens=6, **GENERATE_KWARGS)
    assert torch.equal(got, expected)
    assert torch.equal(tokens, expected_tokens)
    for stats in session.last_call.stats:
        assert stats.llm_input_tokens == stats.visual_tokens == 2 * TOKENS_PER_IMAGE


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("budget", [PARTIAL_BUDGET, 0.25])
def test_kept_count_equals_budget(model, method, budget):
    inputs = single_inputs(n_images=2)
    with mmaccel.apply(model, method, budget=budget, **METHOD_MATRIX[method]) as session:
        out = model.generate(**inputs, max_new_tokens=4, **GENERATE_KWARGS)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4
    kept = budget if isinstance(budget, int) else round(budget * TOKENS_PER_IMAGE)
    stats = session.last_call.stats[0]
    assert stats.visual_tokens == 2 * TOKENS_PER_IMAGE
    if hasattr(session.method, "layer_plan"):  # the budget is a layer average: each layer as the method plans
        plan = session.method.layer_plan(TOKENS_PER_IMAGE, len(stats.layer_tokens))
        assert stats.layer_tokens == [2 * n for n in plan]
        assert stats.llm_input_tokens == 2 * TOKENS_PER_IMAGE
        assert stats.equivalent_tokens == pytest.approx(2 * sum(plan) / len(plan))
        assert [out for _, out in stats.stages.values()] == [
            2 * plan[layer] for layer in session.method.prune_layers(len(plan))
        ]
        return
    ((stage_in, stage_out),) = stats.stages.values()
    assert (stage_in, stage_out) == (2 * TOKENS_PER_IMAGE, 2 * kept)
    assert stats.layer_tokens[-1] == 2 * kept
    if METHOD_MATRIX[method].get("k") is not None:
        k = METHOD_MATRIX[method]["k"]
        assert stats.layer_tokens == [2 * TOKENS_PER_IMAGE] * k + [2 * kept] * (len(stats.layer_tokens) - k)
        n_layers = len(stats.layer_tokens)
        assert stats.equivalent_tokens == pytest.approx((k * 32 + (n_layers - k) * 2 * kept) / n_layers)
    else:
        assert stats.llm_input_tokens == stats.equivalent_tokens == 2 * kept


@pytest.mark.parametrize("method", METHODS)
def test_batch_of_two_equals_two_single_runs(model, method):
    prompts = [prompt_ids(1, text_before=2, text_after=4, seed=1), prompt_ids(2, text_before=5, text_after=7, seed=2)]
    batch = batch_inputs(prompts, [1, 2], seed=5)
    singles = [
        batch_inputs([prompts[0]], [1], seed=5),
        {**batch_inputs([prompts[1]], [2], seed=5), "pixel_values": batch["pixel_values"][1:]},
    ]
    singles[0]["pixel_values"] = batch["pixel_values"][:1]
    kwargs = METHOD_MATRIX[method]
    with mmaccel.apply(model, method, budget=PARTIAL_BUDGET, **kwargs):
        out = model.generate(
            **batch, max_new_tokens=6, output_logits=True, return_dict_in_generate=True, **GENERATE_KWARGS
        )
        for row, single in enumerate(singles):
            ref = model.generate(
                **single, max_new_tokens=6, output_logits=True, return_dict_in_generate=True, **GENERATE_KWARGS
            )
            prompt_len = batch["input_ids"].shape[1]
            ref_len = single["input_ids"].shape[1]
            new_tokens = ref.sequences[0, ref_len:]
            assert torch.equal(out.sequences[row, prompt_len : prompt_len + new_tokens.numel()], new_tokens)
            for step_batch, step_single in zip(out.logits, ref.logits):
                torch.testing.assert_close(step_batch[row], step_single[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_keep_indices(model, method):
    inputs = single_inputs(n_images=1)
    keeps = []
    for _ in range(2):
        with mmaccel.apply(model, method, budget=PARTIAL_BUDGET, **METHOD_MATRIX[method]) as session:
            _logits(model, inputs)
        call = session.last_call
        keeps.append(
            [t.clone() for t in call.visual_keep] + [t.clone() for rows in call.llm_keep.values() for t in rows]
        )
    assert len(keeps[0]) > 0
    assert all(torch.equal(a, b) for a, b in zip(*keeps))


@pytest.mark.parametrize("method", METHODS)
def test_model_restored_after_exit_and_after_error(model, method):
    inputs = single_inputs(n_images=1)
    baseline = _logits(model, inputs)
    modules_before = [type(m) for m in model.modules()]
    hooks_before = _hook_count(model)
    text_impl = model.config.text_config._attn_implementation
    vision_impl = model.config.vision_config._attn_implementation

    with mmaccel.apply(model, method, budget=PARTIAL_BUDGET, **METHOD_MATRIX[method]):
        pruned = _logits(model, inputs)
    assert pruned.shape[1] < baseline.shape[1] or not torch.equal(pruned, baseline)
    with (
        pytest.raises(RuntimeError, match="boom"),
        mmaccel.apply(model, method, budget=PARTIAL_BUDGET, **METHOD_MATRIX[method]),
    ):
        _logits(model, inputs)
        raise RuntimeError("boom")

    assert [type(m) for m in model.modules()] == modules_before
    assert _hook_count(model) == hooks_before
    assert model.config.text_config._attn_implementation == text_impl
    assert model.config.vision_config._attn_implementation == vision_impl
    assert torch.equal(_logits(model, inputs), baseline)
