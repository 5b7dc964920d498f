"""EViT against a straightforward re-computation of its reference algorithm, and its keep counts and errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import mmaccel
from mmaccel.errors import ConfigError, NotSupportedError
from mmaccel.methods import BlockTokens, EViT
from mmaccel.methods.evit import default_locations
from tests.tiny_models import siglip_llava, tiny_llava


def _evit_reference(x, attention, n_keep, fuse):
    """youweiliang/evit Attention/Block at a drop location, one image at a time, with plain Python.

    x: (N, D) with CLS at 0; attention: (H, N, N) softmax probabilities. Returns the block's tokens after the
    drop: [CLS, kept in descending CLS attention, fused].
    """
    n_tokens = x.shape[0]
    heads = attention.shape[0]
    a = [sum(float(attention[h, 0, j]) for h in range(heads)) / heads for j in range(1, n_tokens)]
    kept = sorted(range(n_tokens - 1), key=lambda j: -a[j])[:n_keep]  # no ties with random inputs
    rows = [x[0]] + [x[1 + j] for j in kept]
    if fuse:
        rows.append(sum(a[j] * x[1 + j] for j in range(n_tokens - 1) if j not in kept))
    return torch.stack(rows), kept


@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize(("n_tokens", "n_keep"), [(17, 5), (17, 14), (50, 1), (197, 138)])
def test_kept_and_fused_tokens_match_reference(fuse, n_tokens, n_keep):
    torch.manual_seed(n_tokens + n_keep)
    x = torch.randn(2, n_tokens, 8)
    attention = torch.randn(2, 3, n_tokens, n_tokens).softmax(-1)
    sizes = torch.ones(2, n_tokens, 1)
    tokens = BlockTokens(layer=3, hidden=x, sizes=sizes, cls_token=True, cls_attention=attention[:, :, 0])
    n_out = 1 + n_keep + int(fuse)
    out = EViT(fuse_token=fuse).reduce_block(tokens, n_out)
    for image in range(2):
        expected, kept = _evit_reference(x[image], attention[image], n_keep, fuse)
        torch.testing.assert_close(out.hidden[image], expected)
        assert out.source[image, 1 : 1 + n_keep].tolist() == [1 + j for j in kept]
        dropped = n_tokens - 1 - n_keep
        if fuse:
            assert out.source[image, -1].item() == -1
            assert out.sizes[image, -1, 0].item() == dropped
            assert (out.index[image] == n_out - 1).sum().item() == dropped
        else:
            assert (out.index[image] == -1).sum().item() == dropped
    assert out.index[:, 0].tolist() == [0, 0]


def test_keep_rate_follows_the_reference_rule_at_the_reference_locations():
    # DeiT-S: 196 patches + CLS, 12 blocks, base_keep_rate 0.7 at (3, 6, 9), fused token counted at the next one
    assert default_locations(12) == [3, 6, 9]
    plan = EViT(keep_rate=0.7).tower_plan(12, 197, cls_token=True)
    left = 196
    expected = {}
    for block in (3, 6, 9):
        left = math.ceil(0.7 * left) + 1
        expected[block] = 1 + left
    assert plan == expected == {3: 140, 6: 100, 9: 72}
    assert EViT(keep_rate=0.7, fuse_token=False).tower_plan(12, 197, cls_token=True) == {
        3: 139,
        6: 98,
        9: 69,
    }  # 1 + 138, 97, 68
    assert EViT(keep_rate=1.0).tower_plan(12, 197, cls_token=True) == {}


@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("budget", [1, 2, 64, 128, 192, 400, 575])
def test_budget_gives_exact_counts_with_one_keep_rate(budget, fuse):
    locations = default_locations(23)  # LLaVA-1.5: blocks 0..22 feed the features
    assert locations == [5, 11, 17]
    plan = EViT(budget=budget, fuse_token=fuse).tower_plan(23, 577, cls_token=True)
    assert set(plan) <= set(locations)
    assert plan[max(plan)] == 1 + budget
    counts = [576] + [plan[b] - 1 for b in sorted(plan)]
    assert counts == sorted(counts, reverse=True)
    if len(plan) == 3:  # every location keeps about the same fraction
        rates = [after / before for before, after in itertools.pairwise(counts)]
        assert max(rates) - min(rates) < 0.05


def test_chosen_layers_and_their_range():
    assert EViT(budget=8, layers=[1, 0, 1]).locations(2) == [0, 1]
    model = tiny_llava()
    with pytest.raises(ConfigError, match=r"layers=\[0, 2\] is out of range.*\[0, 1\]"):
        mmaccel.apply(model, "evit", budget=6, layers=[0, 2])
    with pytest.raises(ConfigError, match="layers must be a list"):
        mmaccel.apply(model, "evit", budget=6, layers=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"keep_rate": 0.5, "budget": 6}, r"either budget .* or keep_rate, not both"),
        ({"keep_rate": 0.0}, r"keep_rate=0.0 is out of range; allowed: \(0, 1\]"),
        ({"keep_rate": "0.7"}, r"keep_rate must be a number"),
        ({"fuse_token": 1}, r"fuse_token must be True or False"),
    ],
)
def test_bad_hyper_parameters(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        mmaccel.apply(tiny_llava(), "evit", **kwargs)


def test_a_tower_without_cls_is_refused():
    model = siglip_llava()
    with pytest.raises(NotSupportedError, match=r"'evit' needs a CLS token.*has none"):
        mmaccel.apply(model, "evit", budget=4)
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())
