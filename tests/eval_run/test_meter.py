"""The meter: KV bytes and FLOPs follow the kept tokens, the generate() timer, per-batch summaries."""

from __future__ import annotations

import time

import pytest

from mmaccel.engine.context import SampleStats
from mmaccel.eval.meter import GenerationTimer, kv_cache_bytes, sample_efficiency, summarize
from mmaccel.models.shape import describe
from mmaccel.models.tiny import tiny_llava


@pytest.fixture(scope="module")
def shape():
    return describe(tiny_llava())


def test_kv_bytes_drop_by_exactly_the_pruned_tokens(shape):
    layers = shape.decoder.layers
    full = SampleStats(images=1, visual_tokens=64, layer_tokens=[64] * layers)
    pruned = SampleStats(images=1, visual_tokens=64, layer_tokens=[64, 64] + [16] * (layers - 2))
    a = sample_efficiency(full, shape, text_tokens=20, new_tokens=5, element_bytes=2)
    b = sample_efficiency(pruned, shape, text_tokens=20, new_tokens=5, element_bytes=2)
    per_token = 2 * shape.decoder.kv_heads * shape.decoder.head_dim * 2  # keys + values, 2 bytes each
    assert a.kv_bytes - b.kv_bytes == (layers - 2) * (64 - 16) * per_token
    assert a.kv_bytes == layers * (20 + 64 + 4) * per_token  # 4 decode steps wrote 4 more tokens per layer
    assert b.prefill_flops < a.prefill_flops and b.decode_flops < a.decode_flops
    assert a.tokens["equivalent_tokens"] == 64 and b.tokens["equivalent_tokens"] < 64


def test_one_new_token_has_no_decode_cost(shape):
    stats = SampleStats(images=1, visual_tokens=64, layer_tokens=[64] * shape.decoder.layers)
    record = sample_efficiency(stats, shape, text_tokens=10, new_tokens=1, element_bytes=4)
    assert record.decode_flops == 0.0
    assert record.kv_bytes == kv_cache_bytes(shape, [74] * shape.decoder.layers, 4)


def test_timer_splits_prefill_and_decode():
    timer = GenerationTimer("cpu")
    assert timer.prefill_ms is None and timer.decode_ms_per_token is None
    timer.put(None)  # the prompt
    time.sleep(0.02)
    timer.put(None)  # first token: prefill done
    assert timer.decode_ms_per_token is None
    for _ in range(2):
        time.sleep(0.01)
        timer.put(None)
    assert timer.prefill_ms >= 20 and timer.decode_ms_per_token >= 10
    assert timer.prefill_ms > timer.decode_ms_per_token


def test_summaries_count_each_batch_once():
    records = [
        {"tokens": {"visual_tokens": 64}, "kv_bytes": 10, "timing": {"batch": "a", "prefill_ms": 4.0}},
        {"tokens": {"visual_tokens": 64}, "kv_bytes": 30, "timing": {"batch": "a", "prefill_ms": 4.0}},
        {"tokens": {"visual_tokens": 64}, "kv_bytes": 20, "timing": {"batch": "b", "prefill_ms": 10.0}},
    ]
    summary = summarize(records)
    assert summary["kv_bytes"] == {
        "mean": 20.0,
        "median": 20.0,
        "max": 30.0,
        "q1": 15.0,
        "q3": 25.0,
        "iqr": 10.0,
        "n": 3,
    }
    assert summary["prefill_ms"]["n"] == 2 and summary["prefill_ms"]["mean"] == 7.0
    assert "decode_ms_per_token" not in summary
