"""Adapter lookup by the model's class."""

from __future__ import annotations

from torch import nn

from mmaccel.errors import NotSupportedError
from mmaccel.models.base import ModelAdapter
from mmaccel.models.llava import LlavaAdapter
from mmaccel.models.llava_next import LlavaNextAdapter
from mmaccel.models.llava_onevision import LlavaOnevisionAdapter
from mmaccel.models.qwen_vl import Qwen25VLAdapter, QwenVLAdapter

ADAPTERS: tuple[type[ModelAdapter], ...] = (
    LlavaAdapter,
    LlavaNextAdapter,
    LlavaOnevisionAdapter,
    QwenVLAdapter,
    Qwen25VLAdapter,
)


def supported_models() -> list[str]:
    return [name for adapter in ADAPTERS for name in adapter.model_classes]


def adapter_for(model: nn.Module) -> ModelAdapter:
    """The adapter serving ``model``; ``NotSupportedError`` names the supported classes otherwise."""
    class_name = type(model).__name__
    for adapter in ADAPTERS:
        if class_name in adapter.model_classes:
            return adapter(model)
    raise NotSupportedError(f"model class {class_name} is not supported; supported: {', '.join(supported_models())}")
