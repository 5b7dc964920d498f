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
