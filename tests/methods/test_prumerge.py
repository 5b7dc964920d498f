"""PruMerge and PruMerge+ against a straightforward re-computation of the reference (42Shawn/LLaVA-PruMerge).

The reference function follows ``token_prune_merge_advanced[_plus]`` for one image: full-width q/k of the block
after the feature layer, numpy percentiles, ``topk``, and the per-token double loop of the merge.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mmaccel
from mmaccel.errors import ConfigError, NotSupportedError
from mmaccel.methods import PruMerge, PruMergePlus, VisualTokens
from mmaccel.models.tiny import siglip_llava
from mmaccel.ops.heads import concat_heads, single_head_cls_attention
from tests.tiny_models import GENERATE_KWARGS, IMAGE_TOKEN, batch_inputs, prompt_ids, tiny_llava

RAGGED_SEED = 8  # pixels for which the two tiny-model images have different outlier counts (3 and 1)


def reference_prumerge(q, k, x, plus, neighbours=32):
    """q, k: (1, 1 + N, C) q_proj/k_proj outputs; x: (1, N, C) patch features. Returns (1, n_out, C)."""
    _, n, c = x.shape
    attn = F.softmax((q @ k.transpose(-2, -1)) * c**-0.5, dim=-1)
    cls_attn = attn[:, 0, 1:]
    values = cls_attn.to(torch.float32).numpy().flatten()
    q1, q3 = np.percentile(values, 25), np.percentile(values, 75)
    ratio = len(np.where(values > q3 + 1.5 * (q3 - q1))[0]) / len(values)
    _, idx = torch.topk(cls_attn, int(n * ratio), dim=1, largest=True)
    if plus:
        step_length = int(1 / ratio)
        sequence = torch.arange(0, n - 1, int(step_length / 3))
        filtered = torch.tensor([s for s in sequence if s not in idx.flatten()], dtype=torch.long)
        idx = torch.cat((idx, filtered.unsqueeze(0)), dim=1)
    key_wo_cls = k[:, 1:]
    x_others = x[:, idx[0]]
    x_others_attn = cls_attn[:, idx[0]]
    key_others_norm = F.normalize(key_wo_cls[:, idx[0]], p=2, dim=-1)
    is_kept = torch.zeros(n, dtype=torch.bool)
    is_kept[idx[0]] = True
    compl = torch.nonzero(~is_kept).flatten()  # complement_idx: ascending
    non_topk, non_topk_attn = x[:, compl], cls_attn[:, compl]
    non_topk_key_norm = F.normalize(key_wo_cls[:, compl], p=2, dim=-1)
    left = x_others.shape[1]
    updated = torch.zeros_like(x_others)
    for i in range(left):
        rest_x = torch.cat([x_others[:, :i], x_others[:, i + 1 :], non_topk], dim=1)
        rest_attn = torch.cat([x_others_attn[:, :i], x_others_attn[:, i + 1 :], non_topk_attn], dim=1)
        rest_keys = torch.cat([key_others_norm[:, :i], key_others_norm[:, i + 1 :], non_topk_key_norm], dim=1)
        cos_sim = torch.bmm(key_others_norm[:, i : i + 1], rest_keys.transpose(1, 2))
        _, cluster = torch.topk(cos_sim, k=neighbours, dim=2, largest=True)
        weighted = torch.sum(rest_x[:, cluster.squeeze()] * rest_attn[:, cluster.squeeze()].unsqueeze(-1), dim=1)
        updated[:, i] = x_others[:, i] + weighted
    extra = torch.sum(non_topk * non_topk_attn.unsqueeze(-1), dim=1, keepdim=True)
    return torch.cat([updated, extra], dim=1), int(n * ratio)


def _fixed(n_patches=64, width=32, spikes=(5, 17, 40), seed=3):
    """q/k (1, 1 + N, C) with CLS attending strongly to the ``spikes`` patches, features (1, N, C)."""
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(1, n_patches + 1, width, generator=generator)
    k = 0.1 * torch.randn(1, n_patches + 1, width, generator=generator)
    for rank, patch in enumerate(spikes):  # raises the CLS logit of the patch by 4, 3.5, 3, ...
        k[0, patch + 1] += (4.0 - 0.5 * rank) * q[0, 0] * width**0.5 / q[0, 0].norm() ** 2
    x = torch.randn(1, n_patches, width, generator=generator)
    return q, k, x


def _tokens(q, k, x, heads=4):
    split = lambda t: t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)  # noqa: E731  (1, H, L, d)
    side = int(x.shape[1] ** 0.5)
    return VisualTokens(
        features=x,
        grid=(side, side),
        reader_cls_attention=single_head_cls_attention(split(q), split(k))[:, 1:],
        reader_keys=concat_heads(split(k))[:, 1:],
    )


@pytest.mark.parametrize("cls", [PruMerge, PruMergePlus])
def test_adaptive_count_and_merged_features_match_reference(cls):
    q, k, x = _fixed()
    expected, n_outliers = reference_prumerge(q, k, x, plus=cls is PruMergePlus)
    assert n_outliers == 3
    reduction = cls().reduce_visual(_tokens(q, k, x))
    assert reduction.features.shape == expected.shape
    torch.testing.assert_close(reduction.features, expected, atol=1e-5, rtol=1e-5)
    assert reduction.source[0, :n_outliers].tolist() == [5, 17, 40]  # by descending attention


def test_outliers_are_counted_per_image():
    images = [_fixed(spikes=(5, 17, 40)), _fixed(spikes=(9,))]
    tokens = [_tokens(*image) for image in images]
    batch = VisualTokens(
        features=torch.cat([t.features for t in tokens]),
        grid=(8, 8),
        reader_cls_attention=torch.cat([t.reader_cls_attention for t in tokens]),
        reader_keys=torch.cat([t.reader_keys for t in tokens]),
    )
    reduction = PruMerge().reduce_visual(batch)
    expected = [reference_prumerge(*image, plus=False) for image in images]
    assert reduction.counts == [e[0].shape[1] for e in expected] == [4, 2]
    for row, (features, _) in enumerate(expected):
        torch.testing.assert_close(reduction.features[row, : features.shape[1]], features[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cls", [PruMerge, PruMergePlus])
def test_fixed_budget_keeps_exactly_budget_tokens(cls):
    q, k, x = _fixed()
    reduction = cls(budget=9).reduce_visual(_tokens(q, k, x))
    assert reduction.features.shape[1] == 9 and reduction.counts is None
    kept = reduction.source[0, :8]
    assert kept.unique().numel() == 8
    assert kept[:4].tolist()[:3] == [5, 17, 40]  # PruMerge+: 4 by attention, then 4 spread over the grid
    assert (reduction.groups[0] >= 0).all() and (reduction.groups[0] == 8).sum() == 64 - 8


def test_on_the_model_matches_reference_from_hooked_projections():
    model = tiny_llava(attn="eager")
    inputs = batch_inputs([prompt_ids(1, seed=1)], [1], seed=RAGGED_SEED)  # an image with 3 outliers
    tower = model.model.vision_tower
    captured = {}
    reader = tower.encoder.layers[-1].self_attn  # features come from block -2
    handles = [
        reader.q_proj.register_forward_hook(lambda m, a, o: captured.update(q=o)),
        reader.k_proj.register_forward_hook(lambda m, a, o: captured.update(k=o)),
    ]
    with torch.no_grad():
        out = tower(inputs["pixel_values"], output_hidden_states=True)
    for handle in handles:
        handle.remove()
    for cls in (PruMerge, PruMergePlus):
        expected, _ = reference_prumerge(
            captured["q"], captured["k"], out.hidden_states[-2][:, 1:], plus=cls is PruMergePlus, neighbours=8
        )
        with torch.no_grad():
            expected = model.model.multi_modal_projector(expected)[0]
        embeds = {}
        with mmaccel.apply(model, cls(neighbours=8)) as session, torch.no_grad():
            handle = model.model.language_model.register_forward_pre_hook(
                lambda m, a, kw, store=embeds: store.update(x=kw["inputs_embeds"]), with_kwargs=True
            )
            model(**inputs)
            handle.remove()
        n_out = session.last_call.stats[0].stages["vision_output"][1]
        assert n_out == expected.shape[0]
        start = int(torch.nonzero(inputs["input_ids"][0] == IMAGE_TOKEN)[0])
        torch.testing.assert_close(embeds["x"][0, start : start + n_out], expected, atol=1e-5, rtol=1e-5)


# -- ragged counts through the engine ------------------------------------------------------------------------------


def _ragged_batch():
    prompts = [prompt_ids(1, text_before=2, seed=1), prompt_ids(1, text_before=5, seed=2)]
    return prompts, batch_inputs(prompts, [1, 1], seed=RAGGED_SEED)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("name", ["prumerge", "prumerge+"])
def test_adaptive_batch_equals_single_runs_and_cached_decode_equals_recompute(attn, name):
    model = tiny_llava(attn=attn)
    prompts, batch = _ragged_batch()
    prompt_length = batch["input_ids"].shape[1]
    with mmaccel.apply(model, name) as session:
        out = model.generate(
            **batch, max_new_tokens=5, output_logits=True, return_dict_in_generate=True, **GENERATE_KWARGS
        )
        counts = [stats.stages["vision_output"][1] for stats in session.last_call.stats]
        assert counts[0] != counts[1]
        for step, step_logits in enumerate(out.logits):  # cached decode == no-cache recompute of the same prompt
            sequence = out.sequences[:, : prompt_length + step]
            mask = torch.cat([batch["attention_mask"], torch.ones(2, step, dtype=torch.long)], dim=1)
            with torch.no_grad():
                logits = model(
                    input_ids=sequence, attention_mask=mask, pixel_values=batch["pixel_values"], use_cache=False
                ).logits
            torch.testing.assert_close(step_logits, logits[:, -1], atol=1e-5, rtol=1e-5)
        for row, prompt in enumerate(prompts):
            single = {**batch_inputs([prompt], [1]), "pixel_values": batch["pixel_values"][row : row + 1]}
            ref = model.generate(
                **single, max_new_tokens=5, output_logits=True, return_dict_in_generate=True, **GENERATE_KWARGS
            )
            assert session.last_call.stats[0].stages["vision_output"][1] == counts[row]
            for step_batch, step_single in zip(out.logits, ref.logits):
                torch.testing.assert_close(step_batch[row], step_single[0], atol=1e-5, rtol=1e-5)


# -- bad input -------------------------------------------------------------------------------------------------------


def test_bad_hyperparameters_are_refused():
    with pytest.raises(ConfigError, match=r"prumerge: neighbours must be an int >= 1, got 0"):
        PruMerge(neighbours=0)
    with pytest.raises(ConfigError, match=r"budget=1.5 is out of range"):
        PruMergePlus(budget=1.5)
    model = tiny_llava()
    with pytest.raises(ConfigError, match=r"budget=17 asks for more visual tokens than an image has"):
        mmaccel.apply(model, "prumerge", budget=17)


def test_tower_without_cls_or_without_a_block_after_the_features_is_refused():
    with pytest.raises(NotSupportedError, match=r"'prumerge\+' needs a CLS token.*has none"):
        mmaccel.apply(siglip_llava(), "prumerge+")
    last_layer = tiny_llava()
    last_layer.config.vision_feature_layer = -1
    with pytest.raises(NotSupportedError, match=r"block after the feature layer.*vision_feature_layer=-2"):
        mmaccel.apply(last_layer, "prumerge")
    assert not any(m._forward_pre_hooks for m in last_layer.modules())
