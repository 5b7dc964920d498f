"""LLaVA-NeXT (anyres tiles): the adapter's facts and layout (the method contract: test_tiled_contract.py)."""

from __future__ import annotations

import pytest
import torch

import mmaccel
from mmaccel.errors import ConfigError, NotSupportedError
from mmaccel.models import adapter_for
from mmaccel.models.tiny import tiny_tiled_inputs
from tests.tiled_contract import untouched
from tests.tiled_models import NEXT, TILE_TOKENS


@pytest.fixture(scope="module")
def model():
    return NEXT.build()


def test_facts(model):
    adapter = adapter_for(model)
    assert adapter.name == "llava_next" and adapter.tiled
    assert adapter.tokens_per_image() is None and adapter.tokens_per_tile() == TILE_TOKENS
    assert not adapter.scores_without_cls() and adapter.has_cls_token() and not adapter.cls_in_features()
    assert adapter.feature_layer() is model.model.vision_tower.encoder.layers[-2]
    assert adapter.visual_token_ids() == {"image": 100}


def _tile_features(model, pixel_values, tiles):
    """Every tile's projected patch features, computed directly: (T, 16, D) in tower order."""
    flat = torch.cat([pv[:n] for pv, n in zip(pixel_values, tiles)])
    with torch.no_grad():
        hidden = model.model.vision_tower(flat, output_hidden_states=True).hidden_states[-2][:, 1:]
        return model.model.multi_modal_projector(hidden)


@pytest.mark.parametrize("sizes", [[(32, 64)], [(64, 64), (20, 64)], [(64, 48), (30, 40), (64, 32)]])
def test_layout_maps_every_token_to_its_tile_patch(model, sizes):
    adapter = adapter_for(model)
    inputs = tiny_tiled_inputs(model, [sizes])
    layouts = adapter.visual_layouts("image", {"image_sizes": inputs["image_sizes"]}, len(inputs["image_sizes"]))
    with torch.no_grad():
        packed = model.model.get_image_features(
            pixel_values=inputs["pixel_values"], image_sizes=inputs["image_sizes"]
        ).pooler_output
    tiles = [layout.tower_units for layout in layouts]
    per_tile = _tile_features(model, inputs["pixel_values"], tiles)
    offset = 0
    for layout, features in zip(layouts, packed):
        assert layout.n_tokens == features.shape[0]
        for position in range(layout.n_tokens):
            unit, patch = layout.unit[position].item(), layout.patches[position, 0].item()
            expected = model.model.image_newline if unit < 0 else per_tile[offset + unit, patch]
            torch.testing.assert_close(features[position], expected, atol=1e-6, rtol=1e-6)
        assert layout.grids[0] == (4, 4) and set(layout.grids) <= set(range(layout.tower_units))
        for unit, (rows, cols) in layout.grids.items():
            assert rows * cols == len(layout.positions(unit))
        offset += layout.tower_units


def test_unpadding_cuts_tiles_and_every_row_ends_with_a_newline(model):
    layout = adapter_for(model).visual_layouts("image", {"image_sizes": torch.tensor([(20, 64)])}, 1)[0]
    assert layout.grids == {0: (4, 4), 1: (2, 4), 2: (2, 4)}  # the 32x64 grid unpadded to 2 of 4 patch rows
    grid = layout.unit[16:].view(2, 9)  # two rows of 4 + 4 patches and a newline
    assert grid[:, :4].eq(1).all() and grid[:, 4:8].eq(2).all() and grid[:, 8].eq(-1).all()


def test_an_int_budget_above_a_tile_is_refused(model):
    with pytest.raises(ConfigError, match=r"budget=17 .* per tile .* must be in \[1, 16\]"):
        mmaccel.apply(model, "fastervlm", budget=17)


def test_features_computed_outside_the_session_are_refused(model):
    inputs = NEXT.inputs(model)
    with torch.no_grad():
        features = model.model.get_image_features(
            pixel_values=inputs["pixel_values"], image_sizes=inputs["image_sizes"], return_dict=True
        )
    outside = {"input_ids": inputs["input_ids"], "mm_encoder_outputs": {"image": features}}
    with mmaccel.apply(model, "fastv", budget=4), pytest.raises(NotSupportedError, match="tile layout is unknown"):
        model(**outside)
    assert untouched(model)
