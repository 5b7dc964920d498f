"""Method construction: every budget either acts or is refused up front; nothing is silently a no-op."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mmaccel
from method_matrix import METHOD_MATRIX
from mmaccel.errors import ConfigError
from mmaccel.methods.registry import build_method
from tiny_models import TOKENS_PER_IMAGE, single_inputs, tiny_llava


def _visual_tokens(model, method, **options) -> tuple[bool, int]:
    """(whether the session runs the unmodified model, visual tokens entering the language model)."""
    with mmaccel.apply(model, method, **options) as session, torch.no_grad():
        model(**single_inputs())
        return session.full_budget, session.last_call.stats[0].llm_input_tokens


@pytest.mark.parametrize("name", sorted(set(METHOD_MATRIX) - {"prumerge", "prumerge+"}))
def test_a_method_named_without_a_budget_is_refused(name):
    with pytest.raises(ConfigError, match=rf"method '{name}': no budget given.*budget=1.0 keeps every token"):
        build_method(name, **METHOD_MATRIX[name])


def test_an_explicit_full_budget_and_an_adaptive_method_need_no_more():
    assert build_method("fastv", 1.0).full_budget()
    assert build_method("prumerge").budget is None  # adapts the count to each image (IQR outliers)


@pytest.mark.parametrize(
    ("name", "options"),
    [("visionzip", {"dominant": 3, "contextual": 2}), ("tome", {"r": 2}), ("evit", {"keep_rate": 0.5})],
)
def test_options_that_set_the_counts_act_without_a_budget(name, options):
    full, visual = _visual_tokens(tiny_llava(), name, **options)
    assert not full
    assert visual == 5 if name == "visionzip" else visual < TOKENS_PER_IMAGE  # visionzip: dominant + contextual


def test_visionzip_counts_are_the_budget():
    method = build_method("visionzip", dominant=3, contextual=2)
    assert method.budget == 5 and isinstance(method.budget, int)
    assert build_method("visionzip", 5, dominant=3, contextual=2).budget == 5
    for conflicting in (4, 0.5, 6):
        with pytest.raises(ConfigError, match=r"dominant=3 and contextual=2 keep 5 tokens; pass budget=5"):
            build_method("visionzip", conflicting, dominant=3, contextual=2)
    with pytest.raises(ConfigError, match=r"budget=17 asks for more visual tokens than an image has"):
        mmaccel.apply(tiny_llava(), "visionzip", dominant=16, contextual=1)


@pytest.mark.parametrize(
    ("budget", "expected"),
    [(np.int64(6), 6), (np.int32(6), 6), (np.float32(0.5), 0.5), (np.float64(0.25), 0.25)],
)
def test_numpy_scalar_budgets_read_as_python_numbers(budget, expected):
    method = build_method("fastv", budget, k=2)
    assert method.budget == expected and type(method.budget) is type(expected)


def test_numpy_budget_runs_like_the_python_one():
    model = tiny_llava()
    assert _visual_tokens(model, "pool", budget=np.int64(4)) == _visual_tokens(model, "pool", budget=4)


@pytest.mark.parametrize("budget", [np.True_, True, "16", np.int64(0), np.float32(1.5)])
def test_bad_budgets_stay_refused(budget):
    with pytest.raises(ConfigError, match=r"budget"):
        build_method("pool", budget)


@pytest.mark.parametrize("seed", ["x", 1.5, True, -1, None])
def test_random_seed_is_checked_when_built(seed):
    with pytest.raises(ConfigError, match=rf"random: seed must be an int in \[0, 2\*\*64\), got {seed!r}"):
        build_method("random", 4, seed=seed)
    assert build_method("random", 4, seed=np.int64(3)).seed == 3
