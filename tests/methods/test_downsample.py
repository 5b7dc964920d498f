"""The downsample baseline: images resized before the processor so that the model makes about ``budget`` tokens."""

from __future__ import annotations

import logging

import pytest
import torch
from PIL import Image

import mmaccel
from mmaccel.engine.apply import Session
from mmaccel.errors import ConfigError, NotSupportedError
from mmaccel.methods.downsample import Downsample
from mmaccel.models.registry import adapter_for
from mmaccel.models.tiny import tiny_llava_next, tiny_qwen2_vl
from tests.tiny_models import single_inputs, tiny_llava
from tests.tiny_processors import IMAGE, llava_next_processor, qwen_image_processor, qwen_prompt


def _image(height: int, width: int, seed: int = 0) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def _qwen_tokens(image_processor, image) -> int:
    grid = image_processor(images=[image], return_tensors="pt")["image_grid_thw"]
    return int(grid.prod()) // image_processor.merge_size**2


def _hooks(model) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


# -- where it runs --------------------------------------------------------------------------------------------------
def test_not_supported_on_fixed_resolution_llava_before_touching_the_model():
    model = tiny_llava()
    hooks = _hooks(model)
    with pytest.raises(NotSupportedError, match=r"'downsample' needs a model whose visual token count follows"):
        mmaccel.apply(model, "downsample", budget=0.25)
    assert _hooks(model) == hooks


@pytest.mark.parametrize("budget", [0, -3, 0.0, 1.5, True, "half", None])
def test_bad_budget_is_rejected_naming_the_argument(budget):
    with pytest.raises(ConfigError, match=r"budget"):
        Downsample(budget=budget)


# -- sizes: the processor's own count, at most the target -----------------------------------------------------------
@pytest.mark.parametrize("size", [(480, 640), (1000, 700), (300, 900)])
@pytest.mark.parametrize("budget", [0.5, 0.25, 0.1, 100])
def test_qwen_token_count_within_budget(size, budget):
    image_processor = qwen_image_processor()
    image = _image(*size)
    (resized,), (record,) = Downsample(budget=budget).resize([image], image_processor)
    assert resized.size == (record.size_out[1], record.size_out[0])
    assert record.tokens_in == _qwen_tokens(image_processor, image)
    assert record.tokens_out == _qwen_tokens(image_processor, resized)  # predicted == what the processor makes
    assert record.target == (
        min(budget, record.tokens_in) if isinstance(budget, int) else round(budget * record.tokens_in)
    )
    assert record.tokens_out <= record.target
    if record.target < record.tokens_in:  # short of the target by less than one row and one column of the grid
        grid = image_processor(images=[resized], return_tensors="pt")["image_grid_thw"][0] // 2
        assert record.target - record.tokens_out < int(grid[1] + grid[2])
        assert max(record.size_out) < max(size)
    else:
        assert resized is image


def test_llava_next_token_count_within_budget():
    processor = llava_next_processor()  # the real 336 px anyres layout
    image = _image(720, 1280)
    (resized,), (record,) = Downsample(budget=0.6).resize([image], processor)
    made = processor(images=[resized], text=["w5 <image> w7"], return_tensors="pt")
    assert int((made["input_ids"] == IMAGE).sum()) == record.tokens_out
    assert record.tokens_out <= record.target < record.tokens_in


def test_budget_below_the_smallest_image_uses_the_smallest_and_warns(caplog):
    processor = llava_next_processor()  # LLaVA-NeXT keeps its base tile: there is a floor
    with caplog.at_level(logging.WARNING, logger="mmaccel.methods.downsample"):
        _, (record,) = Downsample(budget=0.01).resize([_image(720, 1280)], processor)
    assert record.tokens_out > record.target
    assert record.tokens_out < record.tokens_in
    # the largest size at the floor (the smallest grid resolution), not a few pixels where rounding shaves tokens
    assert min(record.size_out) > 100
    smaller = (record.size_out[0] // 2, record.size_out[1] // 2)
    assert processor._get_num_multimodal_tokens(image_sizes=[smaller]).num_image_tokens[0] >= 0.95 * record.tokens_out
    assert "smallest image" in caplog.text


def test_keep_all_budget_hands_back_the_same_images():
    images = [[_image(200, 300)], [_image(120, 90, seed=1), _image(64, 64, seed=2)]]
    out, records = Downsample(budget=1.0).resize(images, qwen_image_processor())
    assert len(records) == 3
    assert all(a is b for a, b in zip([*out[0], *out[1]], [*images[0], *images[1]]))
    assert [len(row) for row in out] == [1, 2]


def test_tensor_images_keep_dtype_and_layout():
    image = torch.randint(0, 256, (3, 448, 448), dtype=torch.uint8)
    (resized,), (record,) = Downsample(budget=0.25).resize([image], qwen_image_processor())
    assert resized.dtype == torch.uint8
    assert tuple(resized.shape) == (3, *record.size_out)
    assert record.tokens_out == 64  # 16 x 16 merged patches -> 8 x 8


def test_unknown_processor_and_image_types_are_rejected():
    with pytest.raises(ConfigError, match="processor"):
        Downsample(budget=0.5).resize([_image(64, 64)], object())
    with pytest.raises(ConfigError, match="images"):
        Downsample(budget=0.5).resize(["not an image"], qwen_image_processor())


# -- the models run on what the processor makes of the resized images -------------------------------------------------
def test_qwen2_vl_runs_on_the_downsampled_image():
    model = tiny_qwen2_vl(layers=2)
    image_processor = qwen_image_processor(min_pixels=28 * 28)
    (resized,), (record,) = Downsample(budget=0.25).resize([_image(224, 224)], image_processor)
    assert (record.tokens_in, record.tokens_out) == (64, 16)
    inputs = qwen_prompt(image_processor(images=[resized], return_tensors="pt"))
    assert int((inputs["input_ids"] == IMAGE).sum()) == record.tokens_out
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[1] == inputs["input_ids"].shape[1]


def test_llava_next_runs_on_the_downsampled_image():
    model = tiny_llava_next(layers=2)
    processor = llava_next_processor(model)
    (resized,), (record,) = Downsample(budget=0.5).resize([_image(64, 64)], processor)
    assert record.tokens_out <= record.target < record.tokens_in
    inputs = processor(images=[resized], text=["w5 <image> w7"], return_tensors="pt")
    assert int((inputs["input_ids"] == IMAGE).sum()) == record.tokens_out
    with torch.no_grad():
        features = model.model.get_image_features(
            pixel_values=inputs["pixel_values"], image_sizes=inputs["image_sizes"]
        ).pooler_output
        model(**inputs)
    assert sum(f.shape[0] for f in features) == record.tokens_out


# -- the session ------------------------------------------------------------------------------------------------------
def test_other_methods_hand_images_back_unchanged():
    model = tiny_llava()
    images = [_image(32, 32)]
    with mmaccel.apply(model, "pool", budget=4) as session:
        assert session.prepare_images(images, processor=None) is images
    assert session.resized == []


def test_a_prefill_without_prepared_images_is_refused():
    model = tiny_llava()  # the guard only; downsample itself is refused on LLaVA-1.5 by validate
    with torch.no_grad():
        model(**single_inputs())  # transformers installs its output-capturing hooks on the first call
    hooks = _hooks(model)
    session = Session(model, Downsample(budget=0.5), adapter_for(model)).open()
    try:
        with torch.no_grad(), pytest.raises(ConfigError, match=r"session.prepare_images"):
            model(**single_inputs())
        session.prepare_images([_image(32, 32)], qwen_image_processor())
        assert len(session.resized) == 1
        with torch.no_grad():
            model(**single_inputs())  # the model runs unmodified once images were prepared
    finally:
        session.close()
    assert _hooks(model) == hooks
