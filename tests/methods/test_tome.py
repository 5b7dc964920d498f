"""ToMe against a straightforward re-computation of its reference algorithm, and its schedules and errors."""

from __future__ import annotations

import pytest
import torch

import mmaccel
from mmaccel.errors import ConfigError, NotSupportedError
from mmaccel.methods import BlockTokens, ToMe
from mmaccel.methods.tome import parse_r
from tests.tiny_models import single_inputs, tiny_llava


def _tome_reference(x, keys, sizes, r, cls_token):
    """facebookresearch/ToMe bipartite_soft_matching + merge_wavg, one image at a time, with plain loops.

    Returns (merged tokens (N - r, D), sizes (N - r,), output token of every input token (N,)).
    """
    n_tokens = x.shape[0]
    unit = keys / keys.norm(dim=-1, keepdim=True)
    a_ids, b_ids = list(range(0, n_tokens, 2)), list(range(1, n_tokens, 2))
    best, best_b = [], []
    for i in a_ids:
        similarities = [float(unit[i] @ unit[j]) for j in b_ids]
        if cls_token and i == 0:
            similarities = [float("-inf")] * len(b_ids)
        j = max(range(len(b_ids)), key=lambda k: similarities[k])  # first maximum, as torch.max
        best.append(similarities[j])
        best_b.append(j)
    ranking = sorted(range(len(a_ids)), key=lambda k: -best[k])  # no ties with random inputs
    merged_a, unmerged_a = ranking[:r], ranking[r:]
    if cls_token:  # sorted only with a CLS token, which then comes first; otherwise in ranking order
        unmerged_a = sorted(unmerged_a)
    out_x, out_s, target = [], [], {}
    for rank, k in enumerate(unmerged_a):
        out_x.append(x[a_ids[k]])
        out_s.append(sizes[a_ids[k]])
        target[a_ids[k]] = rank
    for b in range(len(b_ids)):
        members = [b_ids[b]] + [a_ids[k] for k in merged_a if best_b[k] == b]
        weight = sum(sizes[m] for m in members)
        out_x.append(sum(sizes[m] * x[m] for m in members) / weight)
        out_s.append(weight)
        for m in members:
            target[m] = len(unmerged_a) + b
    return torch.stack(out_x), torch.tensor(out_s), torch.tensor([target[i] for i in range(n_tokens)])


@pytest.mark.parametrize("cls_token", [True, False])
@pytest.mark.parametrize(("n_tokens", "r"), [(17, 8), (17, 3), (24, 5), (9, 1)])
def test_merged_features_and_sizes_match_reference(cls_token, n_tokens, r):
    torch.manual_seed(n_tokens + r)
    x, keys = torch.randn(3, n_tokens, 6), torch.randn(3, n_tokens, 4)
    sizes = torch.randint(1, 5, (3, n_tokens, 1)).float()  # as after earlier merges
    tokens = BlockTokens(layer=0, hidden=x, sizes=sizes, cls_token=cls_token, keys=keys)
    out = ToMe(r=r).reduce_block(tokens, n_tokens - r)
    for image in range(3):
        expected_x, expected_s, expected_index = _tome_reference(
            x[image], keys[image], sizes[image, :, 0].tolist(), r, cls_token
        )
        torch.testing.assert_close(out.hidden[image], expected_x)
        torch.testing.assert_close(out.sizes[image, :, 0], expected_s)
        assert out.index[image].tolist() == expected_index.tolist()
        # every output token continues an input token that went into it
        assert torch.equal(out.index[image, out.source[image]], torch.arange(n_tokens - r))
    if cls_token:
        torch.testing.assert_close(out.hidden[:, 0], x[:, 0])  # CLS is never merged and stays first
    assert torch.equal(out.sizes.sum(dim=1), sizes.sum(dim=1))


def test_parse_r_follows_the_reference_schedules():
    assert parse_r(4, 3) == [3, 3, 3, 3]
    assert parse_r(5, 4, inflect=-1) == [8, 6, 4, 2, 0]  # the paper's decreasing schedule: 2r .. 0
    assert parse_r(5, 4, inflect=1) == [0, 2, 4, 6, 8]
    assert parse_r(4, [5, 1]) == [5, 1, 0, 0]
    with pytest.raises(ConfigError, match="r lists 5 blocks but only 4"):
        parse_r(4, [1] * 5)


@pytest.mark.parametrize("budget", [1, 2, 17, 64, 100, 128, 192, 333, 575, 576])
def test_budget_schedule_gives_exact_counts_on_llava_geometry(budget):
    # CLIP ViT-L/14-336: 576 patches + CLS; feature layer -2 -> blocks 0..22 merge
    plan = ToMe(budget=budget).tower_plan(23, 577, cls_token=True)
    tokens = 577
    for block in sorted(plan):
        r = tokens - plan[block]
        assert 0 < r <= (tokens - 1) // 2  # at most half of the mergeable tokens per block
        tokens = plan[block]
    assert tokens == budget + 1


def test_budget_schedule_is_even_when_nothing_binds():
    plan = ToMe(budget=64).tower_plan(23, 577, cls_token=True)
    removed = [577 - plan[0]] + [plan[b - 1] - plan[b] for b in range(1, 23)]
    assert sum(removed) == 512 and max(removed) - min(removed) <= 1


def test_explicit_r_is_capped_at_half_like_the_reference():
    plan = ToMe(r=8).tower_plan(3, 17, cls_token=True)
    assert plan == {0: 9, 1: 5, 2: 3}  # min(8, 8), min(8, 4), min(8, 2)
    assert ToMe(r=0).tower_plan(3, 17, cls_token=True) == {}


def test_a_shallow_tower_reaches_any_budget_with_extra_rounds_in_its_first_block():
    # 16 patches, blocks 0 and 1 feed the features: one round per block leaves at least 4 patches
    assert ToMe(budget=4).tower_plan(2, 17, cls_token=True) == {0: 9, 1: 5}
    assert ToMe(budget=2).tower_plan(2, 17, cls_token=True) == {0: 5, 1: 3}  # block 0: 8 then 4 merges
    model = tiny_llava()
    inputs = single_inputs(n_images=1)
    for budget in (1, 2, 3):
        with mmaccel.apply(model, "tome", budget=budget) as session, torch.no_grad():
            model(**inputs)
        assert session.last_call.stats[0].stages == {"vision_encoder": (16, budget)}
        assert session.last_call.visual_sizes[0].sum().item() == 16


def test_extra_rounds_equal_successive_reference_rounds():
    torch.manual_seed(7)
    x, keys = torch.randn(2, 17, 6), torch.randn(2, 17, 4)
    sizes = torch.ones(2, 17, 1)
    out = ToMe(budget=2).reduce_block(BlockTokens(layer=0, hidden=x, sizes=sizes, cls_token=True, keys=keys), 5)
    for image in range(2):
        ones = [1.0] * 17
        x1, s1, index1 = _tome_reference(x[image], keys[image], ones, 8, True)
        k1, _, _ = _tome_reference(keys[image], keys[image], ones, 8, True)  # keys merged like the tokens
        x2, s2, index2 = _tome_reference(x1, k1, s1.tolist(), 4, True)
        torch.testing.assert_close(out.hidden[image], x2)
        torch.testing.assert_close(out.sizes[image, :, 0], s2)
        assert out.index[image].tolist() == index2[index1].tolist()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"r": 2, "budget": 6}, r"either budget .* or r, not both"),
        ({"r": -1}, r"r must be a non-negative int"),
        ({"r": [1, "2"]}, r"r must be a non-negative int"),
        ({"inflect": 2.0}, r"inflect must be a number in \[-1, 1\]"),
        ({"prop_attn": "yes"}, r"prop_attn must be True or False"),
        ({"positions": "spatial"}, r"positions='spatial' is not allowed"),
    ],
)
def test_bad_hyper_parameters(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        mmaccel.apply(tiny_llava(), "tome", **kwargs)


def test_proportional_attention_needs_a_kernel_that_takes_a_float_mask():
    class FlashAdapter:  # the facts validate() reads, with a FlashAttention tower
        name = "llava"

        def tokens_per_image(self):
            return 16

        def has_cls_token(self):
            return True

        def patch_grid(self):
            return 4, 4

        def feature_block(self):
            return 1

        def tower_unsupported_reason(self):
            return None

        def attn_implementation(self, part):
            return "flash_attention_2"

    with pytest.raises(NotSupportedError, match=r"prop_attn=True .* 'flash_attention_2' .* prop_attn=False"):
        ToMe(budget=6).validate(FlashAdapter())
    ToMe(budget=6, prop_attn=False).validate(FlashAdapter())
