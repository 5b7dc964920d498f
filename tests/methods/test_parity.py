"""Each method against an independent, straightforward re-computation of its reference algorithm."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import mmaccel
from mmaccel.methods import FasterVLM, VisionZip, VisualTokens
from tests.tiny_models import IMAGE_TOKEN, single_inputs, tiny_llava


def _visionzip_reference(attn, hidden_with_cls, keys_with_cls, dominant, contextual):
    """The reference pseudo-code (dvlab-research/VisionZip clip_encoder.py), one image at a time."""
    outputs = []
    for a, x, k in zip(attn, hidden_with_cls, keys_with_cls):
        scores = a[:, 0, 1:].sum(0)  # CLS row over patches, summed over heads
        top = torch.sort(scores, descending=True, stable=True).indices[: dominant - 1] + 1
        keep = torch.cat([torch.tensor([0]), top]).sort().values
        dom = x[keep]
        mask = torch.ones(x.shape[0], dtype=torch.bool)
        mask[keep] = False
        rest_x, rest_k = x[mask], F.normalize(k[mask], dim=-1)
        step = max(1, rest_x.shape[0] // contextual)
        targets = torch.arange(0, rest_x.shape[0], step)[:contextual]
        others = torch.tensor([i for i in range(rest_x.shape[0]) if i not in targets.tolist()])
        assign = (rest_k[others] @ rest_k[targets].T).argmax(-1)
        ctx = []
        for c in range(contextual):
            members = others[assign == c]
            ctx.append(rest_x[targets[c]] + (rest_x[members].mean(0) if members.numel() else 0))
        outputs.append(torch.cat([dom, torch.stack(ctx)]))
    return torch.stack(outputs)


def test_visionzip_matches_reference_on_fixed_tensors():
    torch.manual_seed(0)
    n_images, heads, patches, dim = 2, 4, 36, 8
    logits = torch.randn(n_images, heads, patches + 1, patches + 1)
    attn = logits.softmax(-1)
    hidden = torch.randn(n_images, patches + 1, dim)
    keys = torch.randn(n_images, patches + 1, 5)
    tokens = VisualTokens(
        features=hidden[:, 1:],
        grid=(6, 6),
        cls_attention=attn[:, :, 0, 1:],
        keys=keys[:, 1:],
        cls_feature=hidden[:, 0],
    )
    reduction = VisionZip(budget=12, dominant=9, contextual=3).reduce_visual(tokens)
    expected = _visionzip_reference(attn, hidden, keys, dominant=9, contextual=3)
    torch.testing.assert_close(reduction.features, expected)
    assert reduction.source[:, 0].tolist() == [-1, -1]
    assert (reduction.groups >= 0).all()  # every patch is either dominant or merged into a contextual token


def test_visionzip_default_split_follows_the_reference_ratio():
    assert VisionZip(budget=64).split(576) == (54, 10)
    assert VisionZip(budget=128).split(576) == (108, 20)
    assert VisionZip(budget=192).split(576) == (162, 30)


def test_fastervlm_keeps_top_mean_cls_attention_in_spatial_order():
    torch.manual_seed(1)
    attn = torch.rand(3, 4, 16)
    tokens = VisualTokens(features=torch.randn(3, 16, 8), grid=(4, 4), cls_attention=attn)
    reduction = FasterVLM(budget=5).reduce_visual(tokens)
    for image in range(3):
        expected = attn[image].mean(0).topk(5).indices.sort().values
        assert reduction.source[image].tolist() == expected.tolist()
        torch.testing.assert_close(reduction.features[image], tokens.features[image, expected])


def test_fastv_selection_equals_eager_output_attentions_reference():
    """Keep set from the probe == keep set computed the reference way (eager, output_attentions, layer K-1)."""
    model = tiny_llava(attn="eager")
    inputs = single_inputs(n_images=1)
    with torch.no_grad():
        attentions = model(**inputs, output_attentions=True).attentions
    k, budget = 2, 5
    image_positions = torch.nonzero(inputs["input_ids"][0] == IMAGE_TOKEN).flatten()
    scores = attentions[k - 1].mean(dim=1)[0][-1]  # head-avg, batch 0, last query row
    top = scores[image_positions].topk(budget).indices
    expected_image = image_positions[top].sort().values

    with mmaccel.apply(model, "fastv", budget=budget, k=k) as session, torch.no_grad():
        model(**inputs)
    kept = session.last_call.llm_keep[k][0]
    kept_image = kept[torch.isin(kept, image_positions)]
    assert kept_image.tolist() == expected_image.tolist()
    text_positions = torch.nonzero(inputs["input_ids"][0] != IMAGE_TOKEN).flatten()
    assert torch.isin(text_positions, kept).all()


def test_visionzip_on_the_model_matches_reference_from_eager_outputs():
    """End to end: the engine's VisionZip features equal the reference computed from eager tower outputs."""
    model = tiny_llava(attn="eager")
    inputs = single_inputs(n_images=2)
    tower = model.model.vision_tower
    with torch.no_grad():
        out = tower(inputs["pixel_values"], output_attentions=True, output_hidden_states=True)
        keys_captured = {}
        layer = tower.encoder.layers[-2]
        handle = layer.self_attn.k_proj.register_forward_hook(lambda m, a, o: keys_captured.update(k=o))
        tower(inputs["pixel_values"])
        handle.remove()
        heads = model.config.vision_config.num_attention_heads
        k = keys_captured["k"]
        k = k.view(k.shape[0], k.shape[1], heads, -1).mean(2)  # mean over heads
        expected = _visionzip_reference(out.attentions[-2], out.hidden_states[-2], k, dominant=5, contextual=1)
        expected = model.model.multi_modal_projector(expected)
    with mmaccel.apply(model, "visionzip", budget=6), torch.no_grad():
        captured = {}
        handle = model.model.language_model.register_forward_pre_hook(
            lambda m, a, kw: captured.update(embeds=kw["inputs_embeds"]), with_kwargs=True
        )
        model(**inputs)
        handle.remove()
    embeds = captured["embeds"][0]
    kept_positions = torch.nonzero(
        torch.isin(torch.arange(embeds.shape[0]), torch.tensor(list(range(4, 10)) + list(range(11, 17))))
    ).flatten()
    torch.testing.assert_close(embeds[kept_positions], expected.reshape(12, -1), atol=1e-5, rtol=1e-5)
