"""Analytic prefill FLOPs and KV bytes per family agree with the model's own matmuls and cache.

The count is ``torch.utils.flop_counter.FlopCounterMode`` over one forward (eager attention, so that attention
scores and values are matmuls the counter sees; ``logits_to_keep=1`` as in ``generate``'s prefill). The analytic
side reads the sample's tiles, frames and patches from its inputs (``visual_work``) and the kept tokens from the
session's stats. With a method the count also holds the method's own scoring (e.g. a probe recomputing one
block's attention rows), which the analytic count leaves out; hence the tolerance.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import mmaccel
import tiled_models
import tiny_models
from mmaccel.engine.context import SampleStats
from mmaccel.errors import ConfigError
from mmaccel.eval.meter import sample_efficiency, sample_prefill_flops
from mmaccel.models.registry import adapter_for
from mmaccel.models.shape import describe, visual_work
from mmaccel.models.tiny import tiny_qwen_inputs
from mmaccel.models.tiny.families import FAMILIES as TINY
from mmaccel.ops.flops import TowerRun

TOLERANCE = 0.02
QWEN_IMAGE, QWEN_VIDEO = (1, 6, 10), (2, 8, 8)  # 6 x 10 patches: windows cut at the edges; 2 temporal patches


def _qwen(build):
    return build, lambda model: tiny_qwen_inputs(model, grids=[QWEN_IMAGE], video_grid=QWEN_VIDEO)


# family -> (builder, inputs of one prompt): two LLaVA images; anyres images of two sizes (OneVision also a video);
# a Qwen image with edge windows and a two-temporal-patch video
FAMILIES = {
    "llava": (TINY["llava"].build, lambda model: tiny_models.llava_rows(model, [(2, 0)])),
    "llava_next": (tiled_models.NEXT.build, lambda model: tiled_models.NEXT.inputs(model)),
    "llava_onevision": (tiled_models.ONEVISION.build, lambda model: tiled_models.ONEVISION.inputs(model)),
    "qwen2_vl": _qwen(TINY["qwen2_vl"].build),
    "qwen2_5_vl": _qwen(TINY["qwen2_5_vl"].build),
}
# method, budget: none, a pre-LLM method without scoring, an in-LLM method; VisionZip and ToMe where their own
# scoring stays small next to the model (on the tiny Qwen towers VisionZip's probe is ~2 % of the prefill)
CASES = [(family, None, None) for family in FAMILIES]
CASES += [(family, "random", 0.25) for family in FAMILIES]
CASES += [(family, "fastv", 0.5) for family in FAMILIES]
CASES += [(family, "visionzip", 0.5) for family in ("llava", "llava_next", "llava_onevision")]
CASES += [("llava", "tome", 0.5)]


@pytest.fixture(scope="module")
def models():
    built = {}

    def get(family: str):
        if family not in built:
            build, make_inputs = FAMILIES[family]
            model = build(attn="eager")
            built[family] = model, make_inputs(model)
        return built[family]

    return get


def _placeholders(model, input_ids: torch.Tensor) -> int:
    return sum(int((input_ids == token).sum()) for token in adapter_for(model).visual_token_ids().values())


def _run(model, inputs, method, budget):
    """(counted prefill FLOPs, the sample's stats, the cache) of one forward, under ``method`` if given."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad():
        if method is None:
            with counter:
                output = model(**inputs, logits_to_keep=1, use_cache=True)
            work = visual_work(model, inputs)[0]
            stats = SampleStats(images=work.items, visual_tokens=_placeholders(model, inputs["input_ids"]))
        else:
            with mmaccel.apply(model, method, budget=budget) as session, counter:
                output = model(**inputs, logits_to_keep=1, use_cache=True)
            stats = session.last_call.stats[0]
    return counter.get_total_flops(), stats, output.past_key_values


@pytest.mark.parametrize(("family", "method", "budget"), CASES)
def test_prefill_flops_agree_with_the_counted_matmuls(models, family, method, budget):
    model, inputs = models(family)
    counted, stats, _ = _run(model, inputs, method, budget)
    text = int(inputs["attention_mask"][0].sum()) - stats.visual_tokens
    analytic = sample_prefill_flops(stats, describe(model), visual_work(model, inputs)[0], text)
    if method is not None:
        assert stats.equivalent_tokens < stats.visual_tokens  # the method did reduce
    assert analytic == pytest.approx(counted, rel=TOLERANCE)
    if method in (None, "random"):  # nothing scored: every matmul is the model's own
        assert analytic == counted


@pytest.mark.parametrize(("family", "method"), [(f, m) for f in FAMILIES for m in (None, "random", "fastv")])
def test_kv_bytes_are_the_cache_the_prefill_leaves(models, family, method):
    model, inputs = models(family)
    _, stats, cache = _run(model, inputs, method, 0.5)
    text = int(inputs["attention_mask"][0].sum()) - stats.visual_tokens
    element = model.dtype.itemsize
    record = sample_efficiency(stats, describe(model), text, 1, element, visual_work(model, inputs)[0])
    held = sum((layer.keys.numel() + layer.values.numel()) * element for layer in cache.layers)
    assert record.kv_bytes == held


def test_anyres_images_count_every_tile_and_rows_get_their_own():
    model = tiled_models.NEXT.build()
    inputs = tiled_models.NEXT.inputs(model, rows=2)  # row 0: images 32x64 and 20x64; row 1: the first only
    rows = visual_work(model, inputs)
    tokens = 4 * 4 + 1  # 32 px tiles of 8 px patches, plus CLS
    assert rows[0].tower == (TowerRun(3, tokens), TowerRun(3, tokens))  # base tile + a 1 x 2 grid, each
    assert rows[1].tower == (TowerRun(3, tokens),)
    assert (rows[0].items, rows[0].patches, rows[0].projected) == (2, 96, 96)  # "default": CLS not projected


def test_onevision_video_frames_go_through_the_tower():
    model = tiled_models.ONEVISION.build()
    (row,) = visual_work(model, tiled_models.ONEVISION.inputs(model))
    assert row.tower[-1] == TowerRun(2, 16)  # 2 frames of 4 x 4 patches (SigLIP: no CLS)
    assert row.items == 3 and describe(model).pooling_head


def test_qwen_dynamic_resolution_windows_and_temporal_patches():
    model = TINY["qwen2_5_vl"].build()
    inputs = tiny_qwen_inputs(model, batch=2, grids=[QWEN_IMAGE, (1, 4, 4)], video_grid=QWEN_VIDEO)
    first, second = visual_work(model, inputs)
    # 6 x 10 patches = 3 x 5 merged tokens in windows of 2 x 2 merged tokens: 2 x 3 windows, cut at the edges
    assert first.tower[0] == TowerRun(1, 60, (16, 16, 8, 8, 8, 4))
    assert first.tower[1] == TowerRun(2, 64, (16, 16, 16, 16))  # the video: one sequence per temporal patch
    assert (first.patches, first.projected) == (60 + 128, 60 + 128)
    assert second.tower[0] == TowerRun(1, 16, (16,))
    shape = describe(model)
    assert shape.window_blocks == (0,) and shape.projector_group == 4
    assert describe(TINY["qwen2_vl"].build()).window_blocks == ()


def test_inputs_that_do_not_match_the_prompts_are_refused():
    model = tiled_models.NEXT.build()
    inputs = tiled_models.NEXT.inputs(model)
    inputs["image_sizes"] = inputs["image_sizes"][:1]
    inputs["pixel_values"] = inputs["pixel_values"][:1]
    with pytest.raises(ConfigError, match=r"more image placeholder tokens than the 1 image\(s\)"):
        visual_work(model, inputs)
