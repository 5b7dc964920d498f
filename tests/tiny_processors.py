"""Compatibility names for tests: the processors of :mod:`mmaccel.models.tiny.processors`.

New tests import from ``mmaccel.models.tiny.processors`` directly.
"""

from __future__ import annotations

from mmaccel.models.tiny.processors import (
    IMAGE,
    VIDEO,
    VISION_END,
    VISION_START,
    llava_next_processor,
    qwen_image_processor,
    qwen_prompt,
    tiny_tokenizer,
)

__all__ = [
    "IMAGE",
    "VIDEO",
    "VISION_END",
    "VISION_START",
    "llava_next_processor",
    "qwen_image_processor",
    "qwen_prompt",
    "tiny_tokenizer",
]
