"""The engine: realises a method's stages on any adapter, reversibly."""

from mmaccel.engine.apply import Session, apply
from mmaccel.engine.context import SampleStats, TokenContext

__all__ = ["SampleStats", "Session", "TokenContext", "apply"]
