"""``budget=1.0``: the session returns before any probe, scorer or rater of the method runs."""

from __future__ import annotations

import pytest
import torch

import mmaccel
from method_matrix import METHOD_MATRIX
from mmaccel.engine import attention
from mmaccel.methods.base import Stage
from mmaccel.methods.registry import get_method
from mmaccel.models.registry import adapter_for
from tiny_models import FAMILIES

ACTING = sorted(name for name in METHOD_MATRIX if get_method(name).stage != Stage.FRAMES)


def _forbidding(name: str):
    """An instance of method ``name`` whose every hook raises: nothing of it may run at budget 1.0."""
    cls = get_method(name)

    class Forbidden(cls):
        def reduce_visual(self, tokens):
            raise AssertionError("reduce_visual ran at budget 1.0")

        def prune_layer(self, tokens):
            raise AssertionError("prune_layer ran at budget 1.0")

        def reduce_block(self, tokens, n_out):
            raise AssertionError("reduce_block ran at budget 1.0")

        def select_queries(self, tokens):
            raise AssertionError("select_queries ran at budget 1.0")

    Forbidden.name = cls.name
    return Forbidden(budget=1.0, **METHOD_MATRIX[name])


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
@pytest.mark.parametrize("name", ACTING)
def test_full_budget_runs_nothing_of_the_method(family, name):
    spec = FAMILIES[family]
    model = spec.build()
    inputs = spec.inputs(model, [(1, 0), (2, 1)])
    adapter = adapter_for(model)
    method = _forbidding(name)
    if method.unsupported_reason(adapter) is not None:
        pytest.skip("not supported on this family")
    with torch.no_grad():
        expected = model(**inputs).logits
    probes_seen = []
    with mmaccel.apply(model, method) as session, torch.no_grad():
        assert session.full_budget
        assert not adapter.attn_implementation("vision").startswith(attention.PREFIX)  # no probe installed
        assert not adapter.attn_implementation("text").startswith(attention.PREFIX)
        probes_seen.append(len(attention._PROBES))
        logits = model(**inputs).logits
    assert probes_seen == [0]
    assert torch.equal(logits, expected)
    stats = session.last_call.stats
    assert [row.llm_input_tokens for row in stats] == [row.visual_tokens for row in stats]


def test_a_fraction_below_one_still_acts():
    model = FAMILIES["llava"].build()
    inputs = FAMILIES["llava"].inputs(model, [(1, 0)])
    with mmaccel.apply(model, "fastv", budget=0.5) as session, torch.no_grad():
        model(**inputs)
    assert not session.full_budget
    assert session.last_call.stats[0].equivalent_tokens < session.last_call.stats[0].visual_tokens
