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
    from mmaccel.models.shape import describe
    from mmaccel.models.tiny import tiny_llava

    shape = describe(tiny_llava())
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


def test_window_blocks_attend_within_windows_and_merger_rows_group_patches():
    from mmaccel.ops.flops import ModelShape, TowerRun, VisualWork

    block = TransformerShape(layers=2, hidden=32, intermediate=64, heads=4, kv_heads=4, head_dim=8, gated_mlp=True)
    decoder = TransformerShape(layers=1, hidden=64, intermediate=128, heads=4, kv_heads=2, head_dim=16, gated_mlp=True)
    full = ModelShape(vision=block, patch_macs=0, projector=((128, 64),), decoder=decoder, vocab=1, projector_group=4)
    windowed = ModelShape(
        vision=block, patch_macs=0, projector=((128, 64),), decoder=decoder, vocab=1, window_blocks=(0,)
    )
    work = VisualWork((TowerRun(1, 64, (16, 16, 16, 16)),), patches=64, projected=64)
    saved = full.vision_flops(work) - windowed.vision_flops(work)
    assert saved == 2.0 * (block.score_macs(64, 64) - 4 * block.score_macs(16, 16))  # block 0 only
    assert full.projector_flops(64) == 2.0 * 16 * 128 * 64  # 16 rows of 4 concatenated patches
