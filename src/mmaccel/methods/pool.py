"""Average pooling of the patch grid: the spatial-downsampling baseline."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmaccel.methods.base import Stage, TokenMethod, VisualReduction, VisualTokens, check_positions
from mmaccel.methods.registry import register_method
from mmaccel.ops.pool import largest_pool_count, pool_grid


@register_method("pool")
@dataclass
class Pool(TokenMethod):
    """Average-pool each image's patch grid to exactly ``budget`` tokens before the projector (pre-LLM).

    Shapes: features (I, h*w, D) -> (I, h'*w', D) with h' * w' == budget, the output grid chosen closest to the
    image's aspect ratio (a prime budget gives a strip). A count that no grid inside the image's holds (a prime
    longer than both sides: 29 on LLaVA-1.5's 24 x 24) pools to the largest count below it that one holds (28),
    and the achieved count in the stats shows it. Pooled tokens are in raster order of the output grid; each
    stands at the first patch of its bin for ``positions="original"``.

    Paper: none (baseline; LLaVA-OneVision pools video frames 2x2, arXiv 2408.03326).
    Differences from reference: pools the vision features before the projector rather than after it.
    """

    stage = Stage.VISUAL_OUTPUT
    has_positions_option = True

    positions: str = "contiguous"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positions(self, self.positions)

    def reduce_visual(self, tokens: VisualTokens) -> VisualReduction:
        height, width = tokens.grid
        n_keep = largest_pool_count(height, width, self.keep_count(tokens.n_tokens))
        pooled, groups = pool_grid(tokens.features, height, width, n_keep)  # (I, n_keep, D), (P,)
        first_member = torch.full((n_keep,), tokens.n_tokens, dtype=torch.long, device=groups.device)
        first_member.scatter_reduce_(0, groups, torch.arange(tokens.n_tokens, device=groups.device), "amin")
        return VisualReduction(
            features=pooled,
            source=first_member.expand(tokens.n_images, -1).clone(),
            groups=groups.expand(tokens.n_images, -1).clone(),
        )
