"""The in-tower stage: reductions inside the vision blocks, with the model's own kernels, reach the LLM intact."""

from __future__ import annotations

import itertools

import pytest
import torch

import mmaccel
from mmaccel.methods import EViT, ToMe
from mmaccel.models.shape import describe
from mmaccel.ops.bipartite import bipartite_soft_matching, merge_weighted
from mmaccel.ops.fuse import keep_and_fuse
from tests.tiny_models import GENERATE_KWARGS, TOKENS_PER_IMAGE, siglip_llava, single_inputs, tiny_llava

STEPS = 5


def _manual_tower_features(model, pixels, plan, reduce, prop_attn):
    """The CLIP tower written out by hand (explicit softmax attention), reducing where ``plan`` says.

    reduce(h (I, N, D), keys (I, N, d), attention (I, H, N, N), sizes (I, N, 1), n_out) -> (h', sizes').
    Returns the feature layer's output without CLS, projected: what the language model receives per image.
    """
    tower = model.model.vision_tower
    x = tower.pre_layrnorm(tower.embeddings(pixels))  # (I, N, D)
    sizes = torch.ones(*x.shape[:2], 1)
    hidden_states = [x]
    for index, layer in enumerate(tower.encoder.layers):
        attn = layer.self_attn
        n_images, n_tokens, _ = x.shape
        h = layer.layer_norm1(x)

        def heads(t, attn=attn, n_images=n_images, n_tokens=n_tokens):
            return t.view(n_images, n_tokens, attn.num_heads, attn.head_dim).transpose(1, 2)

        q, k, v = heads(attn.q_proj(h)), heads(attn.k_proj(h)), heads(attn.v_proj(h))
        logits = q @ k.transpose(-1, -2) * attn.scale  # (I, H, N, N)
        if prop_attn:
            logits = logits + sizes.log()[:, None, None, :, 0]
        probs = logits.softmax(-1)
        out = (probs @ v).transpose(1, 2).reshape(n_images, n_tokens, -1)
        x = x + attn.out_proj(out)
        if index in plan:
            x, sizes = reduce(x, k.mean(1), probs, sizes, plan[index])
        x = x + layer.mlp(layer.layer_norm2(x))
        hidden_states.append(x)
    features = hidden_states[model.config.vision_feature_layer][:, 1:]
    return model.model.multi_modal_projector(features), sizes


def _tome_reduce(x, keys, probs, sizes, n_out):
    matching = bipartite_soft_matching(keys, x.shape[1] - n_out, protect_first=True)
    return merge_weighted(matching, x, sizes)


def _evit_reduce(x, keys, probs, sizes, n_out):
    out = keep_and_fuse(x, sizes, probs[:, :, 0, 1:].mean(1), n_out - 2, fuse=True)
    return out.hidden, out.sizes


def _projector_input(model, method, inputs):
    captured = {}
    handle = model.model.multi_modal_projector.register_forward_hook(lambda m, a, o: captured.update(out=o))
    try:
        with mmaccel.apply(model, method) as session, torch.no_grad():
            model(**inputs)
    finally:
        handle.remove()
    return captured["out"], session.last_call


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize(
    ("method", "reduce", "prop_attn"),
    [
        (ToMe(budget=6), _tome_reduce, True),
        (ToMe(budget=4, prop_attn=False), _tome_reduce, False),
        (EViT(budget=6), _evit_reduce, False),
    ],
)
def test_features_equal_a_hand_written_tower_that_reduces_between_attention_and_mlp(attn, method, reduce, prop_attn):
    model = tiny_llava(attn=attn)
    inputs = single_inputs(n_images=2)
    plan = method.tower_plan(2, TOKENS_PER_IMAGE + 1, cls_token=True)
    assert plan  # the reduction happens inside both feeding blocks or one of them
    with torch.no_grad():
        expected, expected_sizes = _manual_tower_features(model, inputs["pixel_values"], plan, reduce, prop_attn)
    got, call = _projector_input(model, method, inputs)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    for image in range(2):
        torch.testing.assert_close(call.visual_sizes[image], expected_sizes[image, 1:, 0])
    assert model.config.vision_config._attn_implementation == attn


@pytest.mark.parametrize("method", ["tome", "evit"])
def test_stats_sizes_and_groups_agree(method):
    model = tiny_llava()
    inputs = single_inputs(n_images=2)
    with mmaccel.apply(model, method, budget=6) as session, torch.no_grad():
        model(**inputs)
    call = session.last_call
    stats = call.stats[0]
    assert stats.stages == {"vision_encoder": (2 * TOKENS_PER_IMAGE, 12)}
    plan = model and mmaccel.methods.get_method(method)(budget=6).tower_plan(2, 17, True)
    expected_tower = [17]
    for block in range(3):
        expected_tower.append(plan.get(block, expected_tower[-1]))
    assert stats.tower_tokens == expected_tower and expected_tower[-1] == 7
    for image in range(2):
        sizes, groups, keep = call.visual_sizes[image], call.visual_groups[image], call.visual_keep[image]
        assert sizes.shape == keep.shape == (6,) and groups.shape == (TOKENS_PER_IMAGE,)
        assert sizes.sum().item() == TOKENS_PER_IMAGE  # every patch is kept, merged or fused: none dropped
        assert torch.equal(torch.bincount(groups, minlength=6).float(), sizes)
        patches = keep[keep >= 0]
        assert torch.equal(groups[patches], torch.nonzero(keep >= 0).flatten())  # a token's source is in it


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("method", ["tome", "evit"])
@pytest.mark.parametrize("positions", ["original", "contiguous"])
def test_cached_decode_equals_no_cache_recompute(attn, method, positions):
    model = tiny_llava(attn=attn)
    inputs = single_inputs(n_images=2)
    prompt_length = inputs["input_ids"].shape[1]
    with mmaccel.apply(model, method, budget=5, positions=positions):
        out = model.generate(
            **inputs, max_new_tokens=STEPS, output_logits=True, return_dict_in_generate=True, **GENERATE_KWARGS
        )
        for step, step_logits in enumerate(out.logits):
            sequence = out.sequences[:, : prompt_length + step]
            with torch.no_grad():
                logits = model(input_ids=sequence, pixel_values=inputs["pixel_values"], use_cache=False).logits
            torch.testing.assert_close(step_logits, logits[:, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["tome", "evit"])
def test_full_select_strategy_passes_cls_through(method):
    model = tiny_llava(strategy="full")
    inputs = single_inputs(n_images=1, strategy="full")
    with mmaccel.apply(model, method, budget=4) as session:
        model.generate(**inputs, max_new_tokens=2, **GENERATE_KWARGS)
    call = session.last_call
    assert call.stats[0].llm_input_tokens == 5
    assert call.stats[0].stages == {"vision_encoder": (TOKENS_PER_IMAGE + 1, 5)}
    assert call.visual_keep[0][0].item() == -1 and call.visual_groups[0][0].item() == 0


def test_tome_runs_on_a_tower_without_cls():
    model = siglip_llava()
    inputs = single_inputs(n_images=1)
    with mmaccel.apply(model, "tome", budget=4) as session:
        out = model.generate(**inputs, max_new_tokens=2, **GENERATE_KWARGS)
    call = session.last_call
    assert out.shape[1] == inputs["input_ids"].shape[1] + 2
    assert call.stats[0].stages == {"vision_encoder": (TOKENS_PER_IMAGE, 4)}
    assert call.stats[0].tower_tokens == [16, 8, 4]  # no protected token: both blocks halve
    assert call.visual_sizes[0].sum().item() == TOKENS_PER_IMAGE
    assert (call.visual_keep[0] >= 0).all()
    leftover = [
        hook
        for m in model.modules()
        for hook in [*m._forward_pre_hooks.values(), *m._forward_hooks.values()]
        if getattr(hook, "__module__", "").startswith("mmaccel")
    ]
    assert leftover == []


def test_keep_all_installs_nothing_in_the_tower():
    model = tiny_llava()
    with mmaccel.apply(model, "tome", budget=1.0):
        assert model.config.vision_config._attn_implementation == "sdpa"
        tower_hooks = [m for m in model.model.vision_tower.modules() if m._forward_pre_hooks or m._forward_hooks]
        assert tower_hooks == []
    with mmaccel.apply(model, "tome", budget=6):
        assert model.config.vision_config._attn_implementation == "mmaccel_sdpa"
    assert model.config.vision_config._attn_implementation == "sdpa"


def test_flops_count_the_reduced_tower():
    shape = describe(tiny_llava())
    vision = shape.vision
    embedding = 2 * 2 * 16 * shape.patch_macs  # 16 patches of 2 images
    full = shape.vision_flops(2)
    assert shape.vision_flops(2, [17] * 4) == pytest.approx(full)
    tokens = [17, 12, 7, 7]
    blocks = 2 * 2 * sum(vision.attention_macs(a) + vision.mlp_macs(b) for a, b in itertools.pairwise(tokens))
    expected = embedding + blocks
    assert shape.vision_flops(2, tokens) == pytest.approx(expected)
    assert shape.vision_flops(2, tokens) < full
    with pytest.raises(ValueError, match="tower_tokens needs 4 counts"):
        shape.vision_flops(1, [17, 12])
