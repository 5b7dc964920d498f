"""Budgets mean what they say: more budget never gives fewer tokens in any layer, for every registered method.

Every method of the matrix runs on a tiny model over a sweep of int budgets (1 .. all tokens of a unit) and of
float budgets; the visual tokens each decoder layer processes must never decrease as the budget grows, on every
family: whole images (LLaVA, Qwen-VL) and anyres tiles (LLaVA-NeXT, OneVision: the budget per tile).
``downsample`` acts before the processor, so its sweep runs on the processor's token counts.
"""

from __future__ import annotations

import itertools
import logging

import pytest
import torch

import mmaccel
from method_matrix import METHOD_MATRIX
from mmaccel.methods.base import Stage
from mmaccel.methods.downsample import Downsample
from mmaccel.methods.registry import get_method
from mmaccel.models.processors import image_token_counter
from mmaccel.models.registry import adapter_for
from tiny_models import FAMILIES, budget_units
from tiny_processors import qwen_image_processor

INT_BUDGETS = list(range(1, 17))  # every count of a 16-token image or tile
FLOAT_BUDGETS = [0.05, 0.1, 0.125, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0]
METHODS = sorted(name for name in METHOD_MATRIX if get_method(name).stage != Stage.FRAMES)


@pytest.fixture(scope="module", params=["llava", "llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl"])
def family_setup(request):
    family = FAMILIES[request.param]
    model = family.build()
    inputs = family.inputs(model, [(1, 0)])
    return request.param, family, model, inputs


def _forward(model, inputs) -> None:
    with torch.no_grad():
        model(**inputs)


def _layer_tokens(model, inputs, method: str, budget) -> list[int]:
    with mmaccel.apply(model, method, budget=budget, **METHOD_MATRIX[method]) as session, torch.no_grad():
        model(**inputs)
    return session.last_call.stats[0].layer_tokens


def _decreases(sweep: list[tuple[object, list[int]]]) -> list[tuple[object, object, int]]:
    """(smaller budget, larger budget, layer) wherever the larger budget processes fewer tokens in a layer."""
    found = []
    for (low, low_tokens), (high, high_tokens) in itertools.pairwise(sweep):
        found += [(low, high, layer) for layer, (a, b) in enumerate(zip(low_tokens, high_tokens)) if b < a]
    return found


@pytest.mark.parametrize("method", METHODS)
def test_more_budget_never_gives_fewer_tokens_in_any_layer(family_setup, method):
    name, _, model, inputs = family_setup
    reason = get_method(method)(**METHOD_MATRIX[method]).unsupported_reason(adapter_for(model))
    if reason is not None:
        pytest.skip(f"not supported on {name}: {reason}")
    for budgets in (INT_BUDGETS, FLOAT_BUDGETS):
        sweep = [(budget, _layer_tokens(model, inputs, method, budget)) for budget in budgets]
        assert _decreases(sweep) == [], sweep
        assert sweep[0][1] != sweep[-1][1]  # the sweep spans budgets that prune and one that keeps everything


def test_sweep_finds_a_decrease():
    assert _decreases([(1, [4, 4]), (2, [5, 3]), (3, [5, 3])]) == [(1, 2, 1)]


def test_downsample_budget_never_gives_fewer_tokens():
    count = image_token_counter(qwen_image_processor())
    for height, width in ((448, 336), (300, 500)):
        for budgets in ([8, 16, 24, 32, 48, 64, 96, 128, 192], [0.05, 0.1, 0.2, 0.25, 0.4, 0.5, 0.75, 1.0]):
            tokens = [Downsample(budget=b).plan(height, width, count).tokens_out for b in budgets]
            assert tokens == sorted(tokens) and tokens[0] < tokens[-1], (height, width, tokens)


# -- requested and achieved tokens -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["fastv", "sparsevlm", "random", "tome"])
def test_requested_and_achieved_are_recorded(family_setup, method, caplog):
    name, family, model, inputs = family_setup
    if get_method(method)(**METHOD_MATRIX[method]).unsupported_reason(adapter_for(model)) is not None:
        pytest.skip(f"{method} is not supported on {name}")
    units = [n for image in budget_units(model, family, inputs) for n in image]
    kwargs = METHOD_MATRIX[method]
    with caplog.at_level(logging.WARNING), mmaccel.apply(model, method, budget=0.5, **kwargs) as session:
        _forward(model, inputs)
    stats = session.last_call.stats[0]
    n_layers = len(stats.layer_tokens)
    instance = session.method
    assert stats.requested_tokens == pytest.approx(sum(instance.requested_tokens(n, n_layers) for n in units))
    assert stats.budget_convention == instance.budget_convention
    record = stats.as_dict()
    assert record["requested_tokens"] == stats.requested_tokens
    assert record["achieved_tokens"] == stats.achieved_tokens
    # half of 16 tokens is exactly 8 per unit: on budget, no warning
    assert abs(stats.achieved_tokens - stats.requested_tokens) <= 0.05 * stats.requested_tokens
    assert "budget_check" not in caplog.text
    planned = instance.planned_layer_tokens(units[0], n_layers)
    if planned is not None:  # in-LLM methods are checked on their plan before the layers run: it is what they do
        plans = [instance.planned_layer_tokens(n, n_layers) for n in units]
        assert stats.layer_tokens == [sum(column) for column in zip(*plans)]


def test_sparsevlm_achieved_counts_each_layer_after_its_pruning():
    family = FAMILIES["llava"]
    model = family.build()
    inputs = family.inputs(model, [(1, 0)])
    with mmaccel.apply(model, "sparsevlm", budget=6, layers=(0, 1, 2)) as session, torch.no_grad():
        model(**inputs)
    stats = session.last_call.stats[0]
    tokens = stats.layer_tokens  # processed: pruning after layers 0, 1 and 2 acts at the input of 1, 2 and 3
    assert tokens[0] == 16 and tokens[1] < 16
    assert stats.equivalent_tokens == sum(tokens) / 4
    assert stats.achieved_tokens == (tokens[1] + tokens[2] + tokens[3] + tokens[3]) / 4
    assert stats.requested_tokens == 6.0


def test_off_budget_warns_once_per_configuration_with_both_numbers(caplog):
    from mmaccel.engine import budget_check

    family = FAMILIES["llava"]
    model = family.build()
    inputs = family.inputs(model, [(1, 0), (1, 1)])
    budget_check._warned.clear()
    with caplog.at_level(logging.WARNING, logger="mmaccel.engine.budget_check"):
        for _ in range(2):  # a 16-token image cannot be pooled to 7 tokens inside its 4 x 4 grid: 6
            with mmaccel.apply(model, "pool", budget=7) as session, torch.no_grad():
                model(**inputs)
        with mmaccel.apply(model, "pool", budget=7, positions="original"), torch.no_grad():
            model(**inputs)
        with mmaccel.apply(model, "pool", budget=8), torch.no_grad():
            model(**inputs)
    stats = session.last_call.stats[0]
    assert (stats.requested_tokens, stats.achieved_tokens) == (7.0, 6.0)
    warnings = [r.getMessage() for r in caplog.records if r.name == "mmaccel.engine.budget_check"]
    assert len(warnings) == 2  # once for each configuration that misses, none for budget=8
    assert "asks for 7.0 visual tokens per layer on average and gets 6.0 (-14.3 %)" in warnings[0]
    assert "budget=7" in warnings[0] and "positions='original'" in warnings[1]


def test_in_llm_off_budget_is_warned_before_the_layers_run(caplog):
    # SparseVLM's layer average cannot fall below the layer that processes all 16 tokens: 1 token is out of reach
    from mmaccel.engine import budget_check

    family = FAMILIES["llava"]
    model = family.build()
    inputs = family.inputs(model, [(1, 0)])
    budget_check._warned.clear()
    with caplog.at_level(logging.WARNING), mmaccel.apply(model, "sparsevlm", budget=1, layers=(0, 1, 2)) as session:
        _forward(model, inputs)
    stats = session.last_call.stats[0]
    assert stats.requested_tokens == 1.0 and stats.achieved_tokens > 1.05
    assert f"gets {stats.achieved_tokens:.1f}" in caplog.text
