"""Random selection: the sanity baseline every pruning method must beat."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch

from mmaccel.errors import ConfigError
from mmaccel.methods.base import ScorePruner, Stage, VisualTokens, check_positions
from mmaccel.methods.registry import register_method


@register_method("random")
@dataclass
class RandomPrune(ScorePruner):
    """Keep a uniformly random subset of ``budget`` visual tokens per image, in original order (pre-LLM).

    Shapes: features (I, P, D) -> (I, k, D). The subset of patch positions is drawn once from ``seed`` and
    used for every image, so a run is reproducible and a batch gives the same subsets as single runs; it
    depends on nothing in the image.

    Paper: none (baseline; FastV's K=0 ablation keeps a random set, pkunlp-icler/FastV).
    Differences from reference: not applicable.
    """

    stage = Stage.VISUAL_OUTPUT
    has_positions_option = True

    seed: int = 0
    positions: str = "contiguous"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positions(self, self.positions)
        if isinstance(self.seed, numbers.Integral) and not isinstance(self.seed, bool):
            self.seed = int(self.seed)  # np.int64 seeds too
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**64:
            raise ConfigError(f"random: seed must be an int in [0, 2**64), got {self.seed!r}")

    def score_visual(self, tokens: VisualTokens) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        scores = torch.rand(tokens.n_tokens, generator=generator).to(tokens.features.device)  # (P,)
        return scores.expand(tokens.n_images, -1)
