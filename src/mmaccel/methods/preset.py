"""Preset selections: run a method's layer split with keep indices given in advance (not registered).

Used to check that a pruned decode equals a no-cache recomputation over the same kept tokens, and to measure
what a method's scoring costs (the same split, handed the same indices, with no probe).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mmaccel.methods.base import LayerTokens, Stage, TokenMethod, check_positions


@dataclass
class PresetLayerKeep(TokenMethod):
    """In-LLM pruning at layer ``k`` that keeps ``keep[row]`` (positions in the prompt) and every later token.

    ``keep``: one (L'_b,) sorted index tensor per row, into the sequence entering layer ``k`` at prefill.
    Tokens past the prompt the indices were made for (generated tokens fed back without a cache) are kept.
    """

    stage = Stage.LLM_PREFILL
    has_positions_option = True

    keep: list[torch.Tensor] = field(default_factory=list)
    k: int = 2
    prompt_length: int = 0
    positions: str = "original"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positions(self, self.positions)

    def keeps_all(self, n_tokens: int) -> bool:
        return False

    def prune_layers(self, n_layers: int) -> tuple[int, ...]:
        return (self.k,)

    def requested_tokens(self, n_tokens: int, n_layers: int) -> float | None:
        return None  # the kept tokens are given, not budgeted

    def planned_layer_tokens(self, n_tokens: int, n_layers: int) -> list[int] | None:
        return None

    def prune_layer(self, tokens: LayerTokens) -> list[torch.Tensor]:
        length = tokens.hidden.shape[1]
        tail = torch.arange(self.prompt_length, length, device=tokens.hidden.device)
        return [torch.cat([row.to(tail.device), tail]) for row in self.keep]
