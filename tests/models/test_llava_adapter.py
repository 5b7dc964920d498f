"""The LLaVA adapter's facts, and span finding from token ids."""

from __future__ import annotations

import pytest
import torch

import mmaccel
from mmaccel.engine.sequence import visual_index
from mmaccel.errors import ConfigError
from mmaccel.models import adapter_for
from tests.tiny_models import GENERATE_KWARGS, IMAGE_TOKEN, TOKENS_PER_IMAGE, single_inputs, tiny_llava


def test_facts():
    model = tiny_llava()
    adapter = adapter_for(model)
    assert adapter.name == "llava"
    assert adapter.tokens_per_image() == TOKENS_PER_IMAGE
    assert adapter.patch_grid() == (4, 4)
    assert adapter.has_cls_token() and not adapter.cls_in_features()
    assert adapter.feature_layer() is model.model.vision_tower.encoder.layers[-2]
    assert adapter.num_text_layers() == 4


def test_feature_layer_mapping_matches_hidden_states():
    model = tiny_llava()
    model.config.vision_feature_layer = 2  # hidden_states[2] is the output of layers[1]
    assert adapter_for(model).feature_layer() is model.model.vision_tower.encoder.layers[1]


def test_visual_index_splits_adjacent_images_by_counts():
    ids = torch.tensor([[1, 5, *[IMAGE_TOKEN] * 6, 7, 0], [0, 0, 1, *[IMAGE_TOKEN] * 3, 9, 9, 9, 9]])
    index = visual_index(ids, IMAGE_TOKEN, [3, 3, 3])
    assert index[0].tolist() == [-1, -1, 0, 0, 0, 1, 1, 1, -1, -1]
    assert index[1].tolist() == [-1, -1, -1, 0, 0, 0, -1, -1, -1, -1]
    with pytest.raises(ConfigError, match="do not split into whole images"):
        visual_index(ids, IMAGE_TOKEN, [4, 4, 3])
    with pytest.raises(ConfigError, match="more image placeholder tokens than the 2 image"):
        visual_index(ids, IMAGE_TOKEN, [3, 3])
    with pytest.raises(ConfigError, match="4 image\\(s\\) were given but the prompts hold placeholders for 3"):
        visual_index(ids, IMAGE_TOKEN, [3, 3, 3, 3])


@pytest.mark.parametrize("method", ["pool", "fastervlm", "fastv"])
def test_full_select_strategy_keeps_cls_in_the_count(method):
    model = tiny_llava(strategy="full")
    inputs = single_inputs(n_images=1, strategy="full")
    with mmaccel.apply(model, method, budget=4) as session:
        model.generate(**inputs, max_new_tokens=2, **GENERATE_KWARGS)
    stats = session.last_call.stats[0]
    assert stats.visual_tokens == TOKENS_PER_IMAGE + 1
    if method == "fastv":
        assert stats.layer_tokens[-1] == 4
    else:  # the CLS token passes through ahead of the budgeted patches
        assert stats.llm_input_tokens == 5
        assert session.last_call.visual_keep[0][0].item() == -1
