"""Compatibility names for tests: the tiled families of :mod:`mmaccel.models.tiny.families`.

New tests import from ``mmaccel.models.tiny.families`` directly.
"""

from __future__ import annotations

from mmaccel.models.tiny.families import NEXT, ONEVISION, TILE_TOKENS, TILED_FAMILIES, TiledFamily
from mmaccel.models.tiny.families import TILED_GENERATE_KWARGS as GENERATE_KWARGS
from mmaccel.models.tiny.families import TILED_PARTIAL_BUDGET as PARTIAL_BUDGET

FAMILIES = TILED_FAMILIES

__all__ = ["FAMILIES", "GENERATE_KWARGS", "NEXT", "ONEVISION", "PARTIAL_BUDGET", "TILE_TOKENS", "TiledFamily"]
