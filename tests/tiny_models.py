"""Compatibility names for tests: the tiny models, inputs and families of :mod:`mmaccel.models.tiny`.

New tests import from ``mmaccel.models.tiny`` directly. ``tiny_llava`` here is the ``SMALL_LLAVA`` geometry
(32-pixel images, 16 tokens), the size every family suite uses.
"""

from __future__ import annotations

from mmaccel.models.tiny import SMALL_LLAVA, TINY_IMAGE_TOKEN, siglip_llava
from mmaccel.models.tiny import tiny_llava as build_tiny_llava
from mmaccel.models.tiny.families import (
    ANYRES_SIZE,
    FAMILIES,
    QWEN_GRID,
    Rows,
    TinyFamily,
    anyres_rows,
    available_families,
    budget_units,
    llava_rows,
    qwen_rows,
    tokens_per_image,
)
from mmaccel.models.tiny.inputs import (
    BOS,
    EOS,
    GENERATE_KWARGS,
    IMAGE_SIZE,
    PAD,
    PATCH,
    TOKENS_PER_IMAGE,
    batch_inputs,
    prompt_ids,
    single_inputs,
)
from mmaccel.models.tiny.processors import VIDEO, VISION_END, VISION_START

IMAGE_TOKEN = TINY_IMAGE_TOKEN
VIDEO_TOKEN = VIDEO

__all__ = [
    "ANYRES_SIZE", "BOS", "EOS", "FAMILIES", "GENERATE_KWARGS", "IMAGE_SIZE", "IMAGE_TOKEN", "PAD", "PATCH",
    "QWEN_GRID", "TOKENS_PER_IMAGE", "VIDEO_TOKEN", "VISION_END", "VISION_START", "Rows", "TinyFamily",
    "anyres_rows", "available_families", "batch_inputs", "budget_units", "build_tiny_llava",
    "llava_rows", "prompt_ids", "qwen_rows", "siglip_llava", "single_inputs", "tiny_llava", "tokens_per_image",
]  # fmt: skip


def tiny_llava(attn: str = "sdpa", strategy: str = "default", layers: int = 4, seed: int = 0):
    """:func:`mmaccel.models.tiny.tiny_llava` at the ``SMALL_LLAVA`` geometry."""
    return build_tiny_llava(**SMALL_LLAVA, layers=layers, strategy=strategy, attn=attn, seed=seed)
