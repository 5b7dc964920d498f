"""LLaVA-OneVision (SigLIP without CLS, anyres images, video): facts, layouts and received-attention scores on the
tiny model (a prompt with two images and a two-frame video); the method contract is in test_tiled_contract.py."""

from __future__ import annotations

import pytest
import torch

import mmaccel
from mmaccel.models import adapter_for
from mmaccel.models.tiny import tiny_llava_onevision, tiny_tiled_inputs
from mmaccel.ops.attention import received_attention
from tests.tiled_models import ONEVISION, TILE_TOKENS


@pytest.fixture(scope="module")
def model():
    return ONEVISION.build()


def test_facts(model):
    adapter = adapter_for(model)
    assert adapter.name == "llava_onevision" and adapter.tiled
    assert not adapter.has_cls_token() and adapter.scores_without_cls()
    assert adapter.tokens_per_tile() == TILE_TOKENS
    assert adapter.feature_layer() is model.model.vision_tower.encoder.layers[-1]
    assert adapter.visual_token_ids() == {"image": 100, "video": 101}


def test_video_layout_is_pooled_frames_then_one_newline(model):
    videos = torch.randn(2, 3, 3, 32, 32)
    layouts = adapter_for(model).visual_layouts("video", {"pixel_values_videos": videos}, len(videos))
    with torch.no_grad():
        features = model.model.get_video_features(pixel_values_videos=videos).pooler_output  # (2, 13, D)
    for layout in layouts:
        assert layout.n_tokens == features.shape[1] == 3 * 4 + 1
        assert layout.unit.tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [-1]
        assert layout.grids == {0: (2, 2), 1: (2, 2), 2: (2, 2)}
        assert layout.patches[0].tolist() == [0, 1, 4, 5]  # the 2x2 pooling window of pooled token (0, 0)
    torch.testing.assert_close(features[:, -1], model.model.image_newline.expand(2, -1))


def test_interpolated_grids_map_tokens_to_their_nearest_patch():
    model = tiny_llava_onevision()
    model.config.vision_aspect_ratio = "anyres_max_1"  # a 2x2 grid of tiles is downsized to one tile's size
    inputs = tiny_tiled_inputs(model, [[(64, 64)]])
    layout = adapter_for(model).visual_layouts(
        "image", {"image_sizes": inputs["image_sizes"]}, len(inputs["image_sizes"])
    )[0]
    with torch.no_grad():
        features = model.model.get_image_features(**{k: inputs[k] for k in ("pixel_values", "image_sizes")})
    assert layout.n_tokens == features.pooler_output[0].shape[0] == 16 + 4 * 5
    assert layout.grids == {0: (4, 4), 1: (2, 2), 2: (2, 2), 3: (2, 2), 4: (2, 2)}
    with mmaccel.apply(model, "fastervlm", budget=2) as session:
        model.generate(**inputs, max_new_tokens=2, do_sample=False, suppress_tokens=[100, 101], pad_token_id=0)
    assert session.last_call.stats[0].stages == {"vision_output": (32, 2 * 5)}


def test_received_attention_is_the_column_mean_of_eager_attention():
    query, key = torch.randn(2, 4, 9, 8), torch.randn(2, 4, 9, 8)
    probs = torch.softmax(query @ key.transpose(-1, -2) * 8**-0.5, dim=-1)  # (B, H, L, L)
    torch.testing.assert_close(received_attention(query, key, 8**-0.5), probs.mean(dim=2))


def test_fastervlm_keeps_the_most_received_patches_of_each_frame(model):
    inputs = ONEVISION.inputs(model)
    with mmaccel.apply(model, "fastervlm", budget=0.5) as session:
        model.generate(**inputs, max_new_tokens=1, do_sample=False, suppress_tokens=[100, 101], pad_token_id=0)
    video = inputs["pixel_values_videos"][0]  # (F, 3, 32, 32)
    with torch.no_grad():
        hidden = model.model.vision_tower(video, output_hidden_states=True).hidden_states[-2]  # last block's input
        block = model.model.vision_tower.encoder.layers[-1]
        normed = block.layer_norm1(hidden)
        shape = (*normed.shape[:2], 4, 8)
        query = block.self_attn.q_proj(normed).view(shape).transpose(1, 2)
        key = block.self_attn.k_proj(normed).view(shape).transpose(1, 2)
    received = received_attention(query, key, block.self_attn.scale).mean(dim=1)  # (F, 16)
    pooled = received.view(-1, 2, 2, 2, 2).mean(dim=(2, 4)).flatten(1)  # (F, 4): 2x2 windows of the 4x4 grid
    video_keep = session.last_call.visual_keep[-1]  # run positions of the video's kept tokens (newline last)
    expected = [
        f * 4 + torch.sort(pooled[f], descending=True, stable=True).indices[:2].sort().values for f in range(2)
    ]
    assert video_keep.tolist() == torch.cat([*expected, torch.tensor([8])]).tolist()


def test_several_images_per_sample_are_base_tiles_with_one_newline_each(model):
    inputs = tiny_tiled_inputs(model, [[(64, 32), (32, 64)]])
    arguments = {"image_sizes": inputs["image_sizes"], "batch_num_images": torch.tensor([2])}
    layouts = adapter_for(model).visual_layouts("image", arguments, 2)
    assert [layout.unit.tolist() for layout in layouts] == [[0] * 16 + [-1]] * 2
    with torch.no_grad():
        features = model.model.get_image_features(
            pixel_values=inputs["pixel_values"], image_sizes=inputs["image_sizes"], batch_num_images=torch.tensor([2])
        ).pooler_output
    assert [f.shape[0] for f in features] == [17, 17]
    ids = torch.cat([torch.tensor([1, 5]), torch.full((17,), 100), torch.tensor([6]), torch.full((17,), 100)])
    single = {**{k: inputs[k] for k in ("pixel_values", "image_sizes")}, "input_ids": ids[None]}
    single["batch_num_images"] = torch.tensor([2])
    with mmaccel.apply(model, "fastervlm", budget=4) as session:
        model.generate(**single, max_new_tokens=2, do_sample=False, suppress_tokens=[100, 101], pad_token_id=0)
    assert session.last_call.stats[0].stages == {"vision_output": (32, 8)}
