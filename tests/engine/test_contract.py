"""The contract every registered method keeps, on every model family's tiny model (CPU, random weights).

The suite is parametrised over (method x family): a cell either passes every invariant below or the method
declares the family unsupported, and then ``apply`` raises ``NotSupportedError`` before touching the model
(``test_unsupported_cells_raise_before_touching_the_model``). Families come from ``tiny_models.FAMILIES``: a
family runs once its adapter is registered. Methods acting before the processor (``Stage.FRAMES``) have nothing
to do on prepared tensors; their contract is in ``tests/methods/test_downsample.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch

import mmaccel
from mmaccel.errors import NotSupportedError
from mmaccel.methods.base import Stage
from mmaccel.methods.registry import get_method
from mmaccel.models.registry import ADAPTERS, adapter_for
from tests.method_matrix import METHOD_MATRIX, PARTIAL_BUDGET
from tests.tiny_models import (
    FAMILIES,
    GENERATE_KWARGS,
    TinyFamily,
    available_families,
    budget_units,
)

METHODS = sorted(METHOD_MATRIX)
FAMILY_NAMES = available_families()


def test_matrix_covers_every_registered_method():
    assert sorted(METHOD_MATRIX) == mmaccel.list_methods()


def test_every_registered_adapter_has_a_tiny_family():
    assert {adapter.name for adapter in ADAPTERS} <= {family.adapter for family in FAMILIES.values()}


@dataclass
class Setup:
    name: str
    family: TinyFamily
    model: Any

    def inputs(self, rows):
        return self.family.inputs(self.model, rows)

    def units(self, inputs) -> list[list[int]]:
        """Per visual item (image, video), the token counts the budget applies to: its units (an image, an anyres
        tile, a video frame or frame group), from the adapter's layouts."""
        return budget_units(self.model, self.family, inputs)

    def visual(self, inputs) -> int:
        """Visual tokens of ``inputs`` as the stats count them: the budgeted ones (anyres newlines are
        structural: always kept, never counted)."""
        return sum(n for image in self.units(inputs) for n in image)


@pytest.fixture(
    scope="module",
    params=[(name, attn) for name in FAMILY_NAMES for attn in ("sdpa", "eager")],
    ids=lambda param: f"{param[0]}-{param[1]}",
)
def setup(request) -> Setup:
    name, attn = request.param
    family = FAMILIES[name]
    model = family.build(attn=attn)
    return Setup(name=name, family=family, model=model)


def _reason(model, method: str) -> str | None:
    return get_method(method)(**METHOD_MATRIX[method]).unsupported_reason(adapter_for(model))


def _cell(setup: Setup, method: str) -> dict:
    """The method's hyper-parameters for this cell; skips cells the family does not support (tested below)."""
    reason = _reason(setup.model, method)
    if reason is not None:
        pytest.skip(f"not supported on {setup.name}: {reason}")
    if get_method(method).stage == Stage.FRAMES:
        pytest.skip("acts on the images before the processor: tests/methods/test_downsample.py")
    return METHOD_MATRIX[method]


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def _hook_count(model) -> int:
    return sum(
        len(m._forward_pre_hooks) + len(m._forward_hooks) + len(m._forward_pre_hooks_with_kwargs)
        for m in model.modules()
    )


def _model_state(model) -> tuple:
    return (
        [type(m) for m in model.modules()],
        _hook_count(model),
        model.config.text_config._attn_implementation,
        model.config.vision_config._attn_implementation,
    )


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("budget", ["all", 1.0])
def test_keep_all_budget_is_bit_identical(setup, method, budget):
    kwargs = _cell(setup, method)
    model, inputs = setup.model, setup.inputs([(2, 0)])
    budget = max(n for units in setup.units(inputs) for n in units) if budget == "all" else budget
    expected = _logits(model, inputs)
    expected_tokens = model.generate(**inputs, max_new_tokens=6, **GENERATE_KWARGS)
    with mmaccel.apply(model, method, budget=budget, **kwargs) as session:
        got = _logits(model, inputs)
        tokens = model.generate(**inputs, max_new_tokens=6, **GENERATE_KWARGS)
    assert torch.equal(got, expected)
    assert torch.equal(tokens, expected_tokens)
    visual = setup.visual(inputs)
    for stats in session.last_call.stats:
        assert stats.llm_input_tokens == stats.visual_tokens == visual


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("budget", [PARTIAL_BUDGET, 0.25])
def test_kept_count_equals_budget(setup, method, budget):
    kwargs = _cell(setup, method)
    model, inputs = setup.model, setup.inputs([(2, 0)])
    with mmaccel.apply(model, method, budget=budget, **kwargs) as session:
        out = model.generate(**inputs, max_new_tokens=4, **GENERATE_KWARGS)
        stats = session.last_call.stats[0]
        forward_length = _logits(model, inputs).shape[1]
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4
    instance, units = session.method, [n for image in setup.units(inputs) for n in image]
    total = sum(units)  # anyres newlines are outside every unit: not counted as visual tokens, always kept
    assert stats.visual_tokens == total
    # the last layer's sequence: every text and newline token, the kept visual tokens
    assert forward_length == inputs["input_ids"].shape[1] - (total - stats.layer_tokens[-1])
    n_layers = len(stats.layer_tokens)
    if hasattr(instance, "layer_plan"):  # the budget is a layer average: each unit as the method plans it
        plans = [instance.layer_plan(n, n_layers) for n in units]
        per_layer = [sum(plan[layer] for plan in plans) for layer in range(n_layers)]
        assert stats.layer_tokens == per_layer
        assert stats.llm_input_tokens == total
        assert stats.equivalent_tokens == pytest.approx(sum(per_layer) / n_layers)
        assert [out for _, out in stats.stages.values()] == [per_layer[i] for i in instance.prune_layers(n_layers)]
        return
    kept = sum(instance.keep_count(n) for n in units)
    ((stage_in, stage_out),) = stats.stages.values()
    assert (stage_in, stage_out) == (total, kept)
    assert stats.layer_tokens[-1] == kept
    if kwargs.get("k") is not None:
        k = kwargs["k"]
        assert stats.layer_tokens == [total] * k + [kept] * (n_layers - k)
        assert stats.equivalent_tokens == pytest.approx((k * total + (n_layers - k) * kept) / n_layers)
    else:
        assert stats.llm_input_tokens == stats.equivalent_tokens == kept


@pytest.mark.parametrize("method", METHODS)
def test_batch_of_two_equals_two_single_runs(setup, method):
    kwargs = _cell(setup, method)
    model, rows = setup.model, [(1, 1), (2, 2)]
    batch = setup.inputs(rows)
    generate = dict(max_new_tokens=6, output_logits=True, return_dict_in_generate=True, **GENERATE_KWARGS)
    with mmaccel.apply(model, method, budget=PARTIAL_BUDGET, **kwargs):
        out = model.generate(**batch, **generate)
        for row, spec in enumerate(rows):
            single = setup.inputs([spec])
            ref = model.generate(**single, **generate)
            prompt_len, ref_len = batch["input_ids"].shape[1], single["input_ids"].shape[1]
            new_tokens = ref.sequences[0, ref_len:]
            assert torch.equal(out.sequences[row, prompt_len : prompt_len + new_tokens.numel()], new_tokens)
            for step_batch, step_single in zip(out.logits, ref.logits):
                torch.testing.assert_close(step_batch[row], step_single[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_keep_indices(setup, method):
    kwargs = _cell(setup, method)
    model, inputs = setup.model, setup.inputs([(1, 0)])
    keeps = []
    for _ in range(2):
        with mmaccel.apply(model, method, budget=PARTIAL_BUDGET, **kwargs) as session:
            _logits(model, inputs)
        call = session.last_call
        keeps.append(
            [t.clone() for t in call.visual_keep] + [t.clone() for rows in call.llm_keep.values() for t in rows]
        )
    assert len(keeps[0]) > 0
    assert all(torch.equal(a, b) for a, b in zip(*keeps))


@pytest.mark.parametrize("method", METHODS)
def test_model_restored_after_exit_and_after_error(setup, method):
    kwargs = _cell(setup, method)
    model, inputs = setup.model, setup.inputs([(1, 0)])
    baseline = _logits(model, inputs)
    state = _model_state(model)

    with mmaccel.apply(model, method, budget=PARTIAL_BUDGET, **kwargs):
        pruned = _logits(model, inputs)
    assert pruned.shape[1] < baseline.shape[1] or not torch.equal(pruned, baseline)
    with pytest.raises(RuntimeError, match="boom"), mmaccel.apply(model, method, budget=PARTIAL_BUDGET, **kwargs):
        _logits(model, inputs)
        raise RuntimeError("boom")

    assert _model_state(model) == state
    assert torch.equal(_logits(model, inputs), baseline)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_unsupported_cells_raise_before_touching_the_model(family):
    """Every cell the method declares unsupported raises that reason from ``apply``; no other cell raises
    ``NotSupportedError`` there; either way the model is left exactly as it was."""
    model = FAMILIES[family].build()
    inputs = FAMILIES[family].inputs(model, [(1, 0)])
    baseline, state = _logits(model, inputs), _model_state(model)
    parameters = {name: p.clone() for name, p in model.named_parameters()}
    for method in METHODS:
        reason = _reason(model, method)
        if reason is None:
            mmaccel.apply(model, method, budget=PARTIAL_BUDGET, **METHOD_MATRIX[method]).close()
            continue
        with pytest.raises(NotSupportedError) as error:
            mmaccel.apply(model, method, budget=PARTIAL_BUDGET, **METHOD_MATRIX[method])
        assert reason in str(error.value), (method, family)
        assert _model_state(model) == state, (method, family)
    assert all(torch.equal(p, parameters[name]) for name, p in model.named_parameters())
    assert torch.equal(_logits(model, inputs), baseline)
