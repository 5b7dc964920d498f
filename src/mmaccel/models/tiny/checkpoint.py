"""Write a complete tiny random checkpoint directory of one family: weights, config, processor, tokenizer, template.

``write_checkpoint("qwen2_vl", out)`` (or ``python -m mmaccel.models.tiny qwen2_vl OUT``) writes what a released
checkpoint holds: ``config.json``, ``generation_config.json``, ``model.safetensors``, ``processor_config.json``
(image processor, processor options and, for the families that have one, the video processor's settings),
``tokenizer.json``, ``tokenizer_config.json`` and ``chat_template.jinja``. ``mmaccel.load(out)`` and
``AutoModelForImageTextToText.from_pretrained(out)`` accept it offline, as does ``AutoProcessor`` where
``torchvision`` is installed (without it, :func:`mmaccel.models.processor_loading.load_processor` builds the
image-only processor). Everything is built locally from a seed; the same family and seed give the same weights.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmaccel.models.tiny.builders import (
    SMALL_LLAVA,
    TINY_IMAGE_TOKEN,
    TINY_VIDEO_TOKEN,
    TINY_VISION_END,
    TINY_VISION_START,
    tiny_llava,
    tiny_llava_next,
    tiny_llava_onevision,
    tiny_qwen2_5_vl,
    tiny_qwen2_vl,
)
from mmaccel.models.tiny.processors import CHECKPOINT_VOCAB, QWEN_PIXELS, family_processor

__all__ = ["CHECKPOINT_FAMILIES", "build_checkpoint_model", "write_checkpoint"]

# family -> builder of its checkpoint model (keyword arguments: vocab, seed)
CHECKPOINT_FAMILIES: dict[str, Callable[..., Any]] = {
    "llava": lambda **kwargs: tiny_llava(**{**SMALL_LLAVA, **kwargs}),
    "llava_next": tiny_llava_next,
    "llava_onevision": tiny_llava_onevision,
    "qwen2_vl": tiny_qwen2_vl,
    "qwen2_5_vl": tiny_qwen2_5_vl,
}
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _family(family: str) -> Callable[..., Any]:
    if family not in CHECKPOINT_FAMILIES:
        raise ValueError(f"family={family!r}: expected one of {', '.join(CHECKPOINT_FAMILIES)}")
    return CHECKPOINT_FAMILIES[family]


def build_checkpoint_model(family: str, seed: int = 0):
    """The tiny model of ``family`` with the checkpoint vocabulary; generation never emits a placeholder."""
    model = _family(family)(vocab=CHECKPOINT_VOCAB, seed=seed)
    generation = model.generation_config
    generation.pad_token_id, generation.bos_token_id, generation.eos_token_id = 0, 1, 2
    generation.suppress_tokens = [TINY_IMAGE_TOKEN, TINY_VIDEO_TOKEN, TINY_VISION_START, TINY_VISION_END]
    return model


def _video_processor(family: str, model) -> dict[str, Any] | None:
    """The settings of the family's video processor (built by Hugging Face only with ``torchvision``)."""
    common = {"do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
              "do_convert_rgb": True}  # fmt: skip
    if family == "llava_onevision":
        side = model.config.vision_config.image_size
        return {"video_processor_type": "LlavaOnevisionVideoProcessor", "size": {"height": side, "width": side},
                "image_mean": [0.5] * 3, "image_std": [0.5] * 3, **common}  # fmt: skip
    if family in ("qwen2_vl", "qwen2_5_vl"):
        vision = model.config.vision_config
        return {
            "video_processor_type": "Qwen2VLVideoProcessor", "patch_size": vision.patch_size,
            "temporal_patch_size": vision.temporal_patch_size, "merge_size": vision.spatial_merge_size,
            "size": {"shortest_edge": QWEN_PIXELS[0], "longest_edge": QWEN_PIXELS[1]},
            "image_mean": CLIP_MEAN, "image_std": CLIP_STD, **common,
        }  # fmt: skip
    return None


def write_checkpoint(family: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Write the tiny random checkpoint of ``family`` to ``out_dir`` (created) and return its path.

    ``family``: one of ``llava``, ``llava_next``, ``llava_onevision``, ``qwen2_vl``, ``qwen2_5_vl``.
    """
    model = build_checkpoint_model(family, seed)
    processor = family_processor(family, model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.tokenizer.save_pretrained(out)
    config = {key: value for key, value in processor.to_dict().items() if value is not None}
    video = _video_processor(family, model)
    if video is not None:
        config["video_processor"] = video
    (out / "processor_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out / "chat_template.jinja").write_text(processor.chat_template, encoding="utf-8")
    return out
