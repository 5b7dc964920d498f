"""Evaluation helpers: held-out sets are disjoint and reproducible, masking equals removing visual tokens."""

from __future__ import annotations

import pytest
import torch
from transformers import LlavaForConditionalGeneration

from mmaccel.toy.model import toy_config
from mmaccel.toy.processor import build_processor
from mmaccel.toy.questions import QUESTION_TYPES
from mmaccel.toy.tokenizer import build_tokenizer
from mmaccel.toy.training.data import TurnEncoder, pixel_tensor
from mmaccel.toy.training.evaluate import (
    _batch,
    chance_levels,
    greedy_with_tokens_removed,
    heldout_set,
    keep_masks,
)
from mmaccel.toy.world import render

TINY = {"vision_hidden": 32, "vision_layers": 2, "text_hidden": 64, "text_layers": 2, "text_heads": 4}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    model = LlavaForConditionalGeneration(toy_config(**TINY)).eval()
    return model, build_processor(tokenizer)


def test_heldout_set_is_balanced_and_reproducible():
    examples = heldout_set(5)
    assert [example.question.kind for example in examples] == [kind for kind in QUESTION_TYPES for _ in range(5)]
    assert heldout_set(5) == examples
    levels = chance_levels(heldout_set(40))
    assert levels["exist"] >= 0.5 and levels["text"] < 0.2 and levels["mc"] >= 0.25


def test_keep_masks_select_the_requested_number(tiny):
    model, _ = tiny
    pixels = pixel_tensor([render(example.scene) for example in heldout_set(1)])
    for selection in ("first", "random", "cls"):
        mask = keep_masks(selection, 16, model, pixels)
        assert mask.shape == (len(pixels), 64) and (mask.sum(1) == 16).all()
    assert keep_masks("first", 16, model, pixels)[:, :16].all()


def test_masked_scoring_equals_physical_removal(tiny):
    """Masking unkept visual tokens (contiguous positions) gives the logits of removing them from the sequence."""
    model, processor = tiny
    example = heldout_set(1, kinds=("color",))[0]
    encoder = TurnEncoder(processor.tokenizer)
    inner = model.model
    pixels = pixel_tensor([render(example.scene)])
    features = inner.get_image_features(pixel_values=pixels)
    features = features.pooler_output if hasattr(features, "pooler_output") else features
    features = torch.cat(list(features)) if isinstance(features, (list, tuple)) else features
    features = features.reshape(-1, features.shape[-1])  # [64, D]
    for selection, keep in (("cls", 16), ("random", 8), ("first", 64)):
        kept = keep_masks(selection, keep, model, pixels, seed=0)
        batch = _batch(encoder, [example], kept)
        prompt_length = int((batch.labels[0] >= 0).nonzero()[0])  # position predicting the first answer token
        embeds = inner.get_input_embeddings()(batch.input_ids)
        embeds = embeds.masked_scatter((batch.input_ids == 4).unsqueeze(-1), features)
        with torch.no_grad():
            masked = inner.language_model(
                inputs_embeds=embeds, attention_mask=batch.attention_mask(), position_ids=batch.positions
            ).last_hidden_state[0, prompt_length]
            ids = batch.input_ids[0, : prompt_length + 1]
            keep_ids = torch.ones_like(ids, dtype=torch.bool)
            keep_ids[(ids == 4).nonzero().flatten()[~kept[0]]] = False
            short = inner.get_input_embeddings()(ids[keep_ids])[None]
            short[0, ids[keep_ids] == 4] = features[kept[0]]
            removed = inner.language_model(inputs_embeds=short).last_hidden_state[0, -1]
        torch.testing.assert_close(masked, removed, atol=1e-4, rtol=1e-4)
        answer = greedy_with_tokens_removed(model, processor, example, kept[0], max_new_tokens=2)
        assert isinstance(answer, str)
