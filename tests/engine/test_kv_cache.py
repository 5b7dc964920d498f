"""Pruned generation with a KV cache equals recomputing, without a cache, over the same kept tokens."""

from __future__ import annotations

import pytest
import torch

import mmaccel
from mmaccel.methods.preset import PresetLayerKeep
from tests.tiny_models import GENERATE_KWARGS, batch_inputs, prompt_ids, single_inputs, tiny_llava

STEPS = 6


def _generate(model, inputs):
    return model.generate(
        **inputs, max_new_tokens=STEPS, output_logits=True, return_dict_in_generate=True, **GENERATE_KWARGS
    )


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("positions", ["original", "contiguous"])
def test_fastv_cached_decode_equals_no_cache_recompute(attn, positions):
    model = tiny_llava(attn=attn)
    inputs = single_inputs(n_images=2)
    prompt_length = inputs["input_ids"].shape[1]
    with mmaccel.apply(model, "fastv", budget=5, k=2, positions=positions) as session:
        out = _generate(model, inputs)
    kept = session.last_call.llm_keep[2]
    assert kept[0].numel() == prompt_length - 2 * 16 + 2 * 5
    preset = PresetLayerKeep(keep=kept, k=2, prompt_length=prompt_length, positions=positions)
    for step, step_logits in enumerate(out.logits):
        sequence = out.sequences[:, : prompt_length + step]
        with mmaccel.apply(model, preset), torch.no_grad():
            logits = model(input_ids=sequence, pixel_values=inputs["pixel_values"], use_cache=False).logits
        torch.testing.assert_close(step_logits, logits[:, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("method", ["visionzip", "fastervlm", "pool", "prumerge", "prumerge+"])
@pytest.mark.parametrize("positions", ["original", "contiguous"])
def test_pre_llm_cached_decode_equals_no_cache_recompute(attn, method, positions):
    model = tiny_llava(attn=attn)
    inputs = single_inputs(n_images=2)
    prompt_length = inputs["input_ids"].shape[1]
    with mmaccel.apply(model, method, budget=4, positions=positions):
        out = _generate(model, inputs)
        for step, step_logits in enumerate(out.logits):
            sequence = out.sequences[:, : prompt_length + step]
            with torch.no_grad():
                logits = model(input_ids=sequence, pixel_values=inputs["pixel_values"], use_cache=False).logits
            torch.testing.assert_close(step_logits, logits[:, -1], atol=1e-5, rtol=1e-5)


def test_fastv_cache_lengths_per_layer():
    model = tiny_llava()
    inputs = single_inputs(n_images=1)
    prompt_length = inputs["input_ids"].shape[1]
    with mmaccel.apply(model, "fastv", budget=4, k=2), torch.no_grad():
        out = model(**inputs, use_cache=True)
    lengths = [out.past_key_values.get_seq_length(i) for i in range(4)]
    assert lengths == [prompt_length, prompt_length, prompt_length - 12, prompt_length - 12]


def test_padded_batch_decode_with_fastv_matches_single_rows_under_eager():
    model = tiny_llava(attn="eager")
    prompts = [prompt_ids(1, text_before=1, seed=3), prompt_ids(1, text_before=6, seed=4)]
    batch = batch_inputs(prompts, [1, 1], seed=2)
    with mmaccel.apply(model, "fastv", budget=3, k=1):
        out = _generate(model, batch)
        single = {**batch_inputs([prompts[0]], [1], seed=2), "pixel_values": batch["pixel_values"][:1]}
        ref = _generate(model, single)
    for step in range(len(ref.logits)):
        torch.testing.assert_close(out.logits[step][0], ref.logits[step][0], atol=1e-5, rtol=1e-5)
