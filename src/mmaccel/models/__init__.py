"""Model adapters."""

from mmaccel.models.base import ModelAdapter
from mmaccel.models.registry import adapter_for, supported_models

__all__ = ["ModelAdapter", "adapter_for", "supported_models"]
