"""The attention probe computes exactly the rows eager attention would return, and changes nothing."""

from __future__ import annotations

import pytest
import torch

from mmaccel.engine.attention import attach_probe, probe_implementation
from mmaccel.ops.attention import attention_rows, cls_attention
from tests.tiny_models import single_inputs, tiny_llava


@pytest.mark.parametrize("batch_padding", [False, True])
def test_llm_probe_rows_equal_eager_output_attentions(batch_padding):
    model = tiny_llava(attn="eager")
    inputs = single_inputs(n_images=1)
    if batch_padding:  # left-pad by three tokens: the mask must be honoured
        pad = torch.zeros(1, 3, dtype=torch.long)
        inputs["input_ids"] = torch.cat([pad, inputs["input_ids"]], dim=1)
        inputs["attention_mask"] = torch.cat([pad, inputs["attention_mask"]], dim=1)
    captured = {}

    def probe(module, query, key, mask, scaling):
        rows = torch.tensor([[query.shape[2] - 1, 4]])
        captured["rows"] = attention_rows(query, key, rows, scaling, mask)

    with torch.no_grad():
        expected = model(**inputs, output_attentions=True)
    model.set_attn_implementation({"text_config": probe_implementation("eager")})
    detach = attach_probe(model.model.language_model.layers[1].self_attn, probe)
    try:
        with torch.no_grad():
            got = model(**inputs, output_attentions=True)
    finally:
        detach()
        model.set_attn_implementation({"text_config": "eager"})
    reference = expected.attentions[1][:, :, [-1, 4], :]  # (B, H, 2, L)
    torch.testing.assert_close(captured["rows"], reference.float(), atol=1e-6, rtol=0)
    assert torch.equal(got.logits, expected.logits)


def test_causal_rows_without_mask_match_full_softmax():
    torch.manual_seed(0)
    query, key = torch.randn(2, 4, 7, 8), torch.randn(2, 2, 7, 8)
    rows = torch.tensor([[0, 3, 6], [1, 2, 5]])
    got = attention_rows(query, key, rows, 8**-0.5)
    full = (query @ key.repeat_interleave(2, dim=1).transpose(-1, -2)) * 8**-0.5
    full = full.masked_fill(torch.ones(7, 7, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
    expected = torch.stack([full[b, :, rows[b]] for b in range(2)])
    torch.testing.assert_close(got, expected)


def test_vision_cls_probe_equals_eager_output_attentions():
    model = tiny_llava(attn="eager")
    pixels = single_inputs()["pixel_values"]
    tower = model.model.vision_tower
    with torch.no_grad():
        expected = tower(pixels, output_attentions=True).attentions[-2][:, :, 0]  # (I, H, L)
    captured = {}
    model.set_attn_implementation({"vision_config": probe_implementation("eager")})
    detach = attach_probe(
        tower.encoder.layers[-2].self_attn, lambda m, q, k, mask, s: captured.update(cls=cls_attention(q, k, s))
    )
    try:
        with torch.no_grad():
            tower(pixels)
    finally:
        detach()
        model.set_attn_implementation({"vision_config": "eager"})
    torch.testing.assert_close(captured["cls"], expected.float(), atol=1e-6, rtol=0)
