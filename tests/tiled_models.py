"""Tiny tiled models (LLaVA-NeXT, LLaVA-OneVision) and their inputs, for the contract and position tests.

A family is a :class:`TiledFamily`: how to build its tiny model, which prompts to give it (images of a few
sizes, so that tiles are cut by unpadding; OneVision also a video), and how many visual tokens a budget keeps
(per tile or frame, newlines always kept). Plugging a family into a parametrised suite needs only these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from mmaccel.methods.base import TokenMethod
from mmaccel.models import adapter_for
from mmaccel.models.tiny import (
    TINY_IMAGE_TOKEN,
    TINY_VIDEO_TOKEN,
    tiny_llava_next,
    tiny_llava_onevision,
    tiny_tiled_inputs,
)

GENERATE_KWARGS = {"do_sample": False, "suppress_tokens": [TINY_IMAGE_TOKEN, TINY_VIDEO_TOKEN], "pad_token_id": 0}
TILE_TOKENS = 16  # 4 x 4 patches per 32-pixel tile
PARTIAL_BUDGET = 6  # tokens kept per tile in the contract tests (of 16)


@dataclass(frozen=True)
class TiledFamily:
    name: str
    build: Callable[..., torch.nn.Module]
    image_sizes: tuple[tuple[int, int], ...]  # one prompt's images, (height, width) pixels
    frames: int  # video frames in the prompt (0: no video)

    def inputs(self, model, rows: int = 1, seed: int = 0, text_before=None, text_after=None):
        """``rows`` prompts with this family's images (and video); row b drops its last b images."""
        sizes = [list(self.image_sizes[: len(self.image_sizes) - b]) for b in range(rows)]
        return tiny_tiled_inputs(
            model,
            sizes,
            videos=[self.frames] * rows if self.frames else None,
            text_before=text_before,
            text_after=text_after,
            seed=seed,
        )

    def unit_sizes(self, model, inputs) -> list[list[int]]:
        """Per image, then per video (in batch order): the patch tokens of each tile or frame."""
        adapter = adapter_for(model)
        runs = []
        if "image_sizes" in inputs:
            layouts = adapter.visual_layouts(
                "image", {"image_sizes": inputs["image_sizes"]}, len(inputs["image_sizes"])
            )
            runs += [[len(layout.positions(u)) for u in layout.grids] for layout in layouts]
        if "pixel_values_videos" in inputs:
            layouts = adapter.visual_layouts(
                "video", {"pixel_values_videos": inputs["pixel_values_videos"]}, len(inputs["pixel_values_videos"])
            )
            runs += [[len(layout.positions(u)) for u in layout.grids] for layout in layouts]
        return runs


NEXT = TiledFamily("llava_next", tiny_llava_next, ((32, 64), (20, 64)), frames=0)
ONEVISION = TiledFamily("llava_onevision", tiny_llava_onevision, ((64, 32), (32, 32)), frames=2)
FAMILIES = {family.name: family for family in (NEXT, ONEVISION)}


def kept_per_unit(method: TokenMethod, n_tokens: int) -> int:
    """Tokens a method keeps of one tile or frame of ``n_tokens`` (its budget, at most the unit's tokens)."""
    return method.keep_count(n_tokens)
