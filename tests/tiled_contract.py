"""Anyres checks on prompts with images of several sizes (LLaVA-NeXT, LLaVA-OneVision), as functions: what the
all-family contract (``tests/engine/test_contract.py``, one image size per family) cannot show.

Each check takes a :class:`tiled_models.TiledFamily`, its model and a method name; a method the family does not
support must raise ``NotSupportedError`` from ``apply`` before the model is touched (:func:`check_unsupported`).
"""

from __future__ import annotations

import pytest
import torch

import mmaccel
from mmaccel.errors import NotSupportedError
from mmaccel.methods.base import Stage
from mmaccel.methods.registry import build_method, get_method
from mmaccel.models import adapter_for
from tests.method_matrix import METHOD_MATRIX
from tests.tiled_models import GENERATE_KWARGS, PARTIAL_BUDGET, TiledFamily


def is_supported(model, method: str, budget=PARTIAL_BUDGET) -> bool:
    instance = build_method(method, budget, **METHOD_MATRIX[method])
    try:
        instance.validate(adapter_for(model))
    except NotSupportedError:
        return False
    return True


def logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def untouched(model) -> bool:
    """No mmaccel hook, wrapper or attention implementation is left on the model."""
    hooks = [
        hook
        for m in model.modules()
        for hook in [*m._forward_pre_hooks.values(), *m._forward_hooks.values()]
        if getattr(hook, "__module__", "").startswith("mmaccel")
    ]
    wrapped = any(name in vars(model.model) for name in ("get_image_features", "get_video_features"))
    names = (model.config.text_config._attn_implementation, model.config.vision_config._attn_implementation)
    return not hooks and not wrapped and not any(name.startswith("mmaccel") for name in names)


def skip_before_processor(method: str) -> None:
    """Methods acting on the images before the processor (``Stage.FRAMES``) have nothing to do on prepared
    tensors; their contract, tiled models included, is in ``tests/methods/test_downsample.py``."""
    if get_method(method).stage == Stage.FRAMES:
        pytest.skip("acts on the images before the processor: tests/methods/test_downsample.py")


def check_unsupported(model, method: str) -> None:
    with pytest.raises(NotSupportedError):
        mmaccel.apply(model, method, budget=PARTIAL_BUDGET, **METHOD_MATRIX[method])
    assert untouched(model)


def check_kept_counts(family: TiledFamily, model, method: str, budget) -> None:
    """Per tile/frame the budget (a smaller unit keeps all), newlines all kept, the total in the stats."""
    skip_before_processor(method)
    inputs = family.inputs(model)
    length = inputs["input_ids"].shape[1]
    with mmaccel.apply(model, method, budget=budget, **METHOD_MATRIX[method]) as session:
        out = model.generate(**inputs, max_new_tokens=3, **GENERATE_KWARGS)
        forward_length = logits(model, inputs).shape[1]
    assert out.shape[1] == length + 3
    units = [n for run in family.unit_sizes(model, inputs) for n in run]
    total = sum(units)
    instance = session.method
    kept = sum(instance.keep_count(n) for n in units)
    stats = session.last_call.stats[0]
    assert stats.visual_tokens == total
    n_layers = len(stats.layer_tokens)
    if hasattr(instance, "layer_plan"):  # a layer-averaged budget: each unit as the method plans it
        plans = [instance.layer_plan(n, n_layers) for n in units]
        assert stats.layer_tokens == [sum(plan[layer] for plan in plans) for layer in range(n_layers)]
    elif METHOD_MATRIX[method].get("k") is not None:
        k = METHOD_MATRIX[method]["k"]
        assert stats.layer_tokens == [total] * k + [kept] * (n_layers - k)
        assert stats.stages == {f"llm_layer_{k}": (total, kept)}
    else:
        assert stats.stages == {"vision_output": (total, kept)}
        assert stats.layer_tokens == [kept] * n_layers
    # the last layer's sequence: every text and newline token, the kept visual tokens
    assert forward_length == length - (total - stats.layer_tokens[-1])


def _single_rows(family: TiledFamily, batch: dict) -> list[dict]:
    """Row b of a left-padded batch as its own unpadded input, with its own images and video."""
    rows, image = [], 0
    per_row = [len(family.image_sizes) - b for b in range(batch["input_ids"].shape[0])]
    for b, n_images in enumerate(per_row):
        real = batch["attention_mask"][b].bool()
        single = {
            "input_ids": batch["input_ids"][b, real][None],
            "attention_mask": batch["attention_mask"][b, real][None],
        }
        if n_images:
            single["pixel_values"] = batch["pixel_values"][image : image + n_images]
            single["image_sizes"] = batch["image_sizes"][image : image + n_images]
        if "pixel_values_videos" in batch:
            single["pixel_values_videos"] = batch["pixel_values_videos"][b : b + 1]
        rows.append(single)
        image += n_images
    return rows


def check_batch_equals_single_rows(family: TiledFamily, model, method: str) -> None:
    skip_before_processor(method)
    batch = family.inputs(model, rows=2, text_before=[2, 5], text_after=[4, 7], seed=5)
    singles = _single_rows(family, batch)
    with mmaccel.apply(model, method, budget=PARTIAL_BUDGET, **METHOD_MATRIX[method]):
        out = model.generate(
            **batch, max_new_tokens=4, output_logits=True, return_dict_in_generate=True, **GENERATE_KWARGS
        )
        prompt_length = batch["input_ids"].shape[1]
        for row, single in enumerate(singles):
            ref = model.generate(
                **single, max_new_tokens=4, output_logits=True, return_dict_in_generate=True, **GENERATE_KWARGS
            )
            new_tokens = ref.sequences[0, single["input_ids"].shape[1] :]
            assert torch.equal(out.sequences[row, prompt_length : prompt_length + new_tokens.numel()], new_tokens)
            for step_batch, step_single in zip(out.logits, ref.logits):
                torch.testing.assert_close(step_batch[row], step_single[0], atol=1e-5, rtol=1e-5)


STEPS = 4


def _generate(model, inputs):
    return model.generate(
        **inputs, max_new_tokens=STEPS, output_logits=True, return_dict_in_generate=True, **GENERATE_KWARGS
    )


def _visual_inputs(inputs: dict) -> dict:
    return {k: v for k, v in inputs.items() if k in ("pixel_values", "image_sizes", "pixel_values_videos")}


class _HideFromLayers:
    """Reference for in-LLM pruning: decoder layers >= k get a 4-D additive mask that hides every key not in
    ``visible`` (B, L) (besides causality); earlier layers keep the model's own mask. Nothing else changes, so
    every token keeps its original RoPE position."""

    def __init__(self, model, k: int, visible: torch.Tensor) -> None:
        self.layers = model.model.language_model.layers[k:]
        self.visible = visible
        self.handles = []

    def _hook(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        length = hidden.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        allowed = causal[None] & self.visible[:, None, :]  # (B, L, L)
        mask = torch.zeros(allowed.shape, dtype=hidden.dtype).masked_fill(~allowed, torch.finfo(hidden.dtype).min)
        kwargs["attention_mask"] = mask[:, None]  # (B, 1, L, L)
        return args, kwargs

    def __enter__(self):
        self.handles = [layer.register_forward_pre_hook(self._hook, with_kwargs=True) for layer in self.layers]
        return self

    def __exit__(self, *exc_info):
        for handle in self.handles:
            handle.remove()


def check_fastv_positions(family: TiledFamily, model, k: int = 2) -> None:
    """FastV's prefill and every decode step equal an unpruned run whose layers >= k hide the dropped tokens."""
    inputs = family.inputs(model, rows=2, text_before=[2, 5], text_after=[4, 6], seed=3)
    with mmaccel.apply(model, "fastv", budget=5, k=k) as session:
        out = _generate(model, inputs)
    kept = session.last_call.llm_keep[k]
    batch, prompt_length = inputs["input_ids"].shape
    assert all(row.numel() < prompt_length for row in kept)
    for step, step_logits in enumerate(out.logits):
        length = prompt_length + step
        mask2d = torch.cat([inputs["attention_mask"], torch.ones(batch, step, dtype=torch.long)], dim=1)
        visible = mask2d.bool().clone()
        visible[:, :prompt_length] = False
        for row, positions in enumerate(kept):
            visible[row, positions] = mask2d[row, positions].bool()
        positions = (mask2d.cumsum(-1) - 1).clamp(min=0)
        with _HideFromLayers(model, k, visible), torch.no_grad():
            logits = model(
                input_ids=out.sequences[:, :length],
                attention_mask=mask2d,
                position_ids=positions,
                use_cache=False,
                **_visual_inputs(inputs),
            ).logits
        torch.testing.assert_close(step_logits, logits[:, -1], atol=1e-5, rtol=1e-5)


def check_cached_decode_equals_recompute(family: TiledFamily, model, method: str, positions: str) -> None:
    """Pre-LLM reduction: every cached decode step equals a no-cache forward of the same method."""
    inputs = family.inputs(model)
    prompt_length = inputs["input_ids"].shape[1]
    with mmaccel.apply(model, method, budget=4, positions=positions):
        out = _generate(model, inputs)
        for step, step_logits in enumerate(out.logits):
            sequence = out.sequences[:, : prompt_length + step]
            with torch.no_grad():
                logits = model(input_ids=sequence, use_cache=False, **_visual_inputs(inputs)).logits
            torch.testing.assert_close(step_logits, logits[:, -1], atol=1e-5, rtol=1e-5)
