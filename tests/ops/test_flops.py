"""Analytic FLOPs reduce to the published formulas in their special cases."""

from __future__ import annotations

from mmaccel.ops.flops import TransformerShape


def test_layer_macs_reduce_to_fastv_formula():
    n, d, m = 100, 64, 256
    shape = TransformerShape(layers=1, hidden=d, intermediate=m, heads=4, kv_heads=4, head_dim=16, gated_mlp=False)
    assert shape.layer_macs(n) == 4 * n * d**2 + 2 * n**2 * d + 2 * n * d * m


def test_gated_mlp_and_grouped_kv():
    n, d, m = 10, 64, 128
    shape = TransformerShape(layers=1, hidden=d, intermediate=m, heads=4, kv_heads=2, head_dim=16, gated_mlp=True)
    assert shape.layer_macs(n) == n * d * (2 * 64 + 2 * 32) + 2 * n * n * 64 + 3 * n * d * m
    assert shape.layer_macs(1, 50) == d * (2 * 64 + 2 * 32) + 2 * 50 * 64 + 3 * d * m


def test_sample_stats_flops_follow_where_the_method_reduced():
    from mmaccel.engine.context import SampleStats
    from mmaccel.models.tiny import tiny_llava
    from mmaccel.ops.flops import llava_shape

    shape = llava_shape(tiny_llava().config)
    layers, patches = shape.decoder.layers, shape.vision_tokens - 1
    baseline = SampleStats(images=1, visual_tokens=patches)
    pre_llm = SampleStats(images=1, visual_tokens=patches, stages={"vision_output": (patches, 4)})
    pre_llm.layer_tokens = [4] * layers
    in_tower = SampleStats(images=1, visual_tokens=patches, stages={"vision_encoder": (patches, 4)})
    in_tower.layer_tokens = [4] * layers
    in_tower.tower_tokens = [patches + 1] + [5] * shape.vision.layers

    full = baseline.prefill_flops(shape, 10)
    assert full == shape.prefill_flops([10 + patches] * layers, 1, patches)
    assert pre_llm.prefill_flops(shape, 10) == shape.prefill_flops([14] * layers, 1, 4)
    assert in_tower.prefill_flops(shape, 10) < pre_llm.prefill_flops(shape, 10) < full
