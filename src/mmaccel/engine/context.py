"""Per-call records: what a method did to one forward call (and the decode steps that follow it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from mmaccel.methods.base import LayerReduction, layer_average

if TYPE_CHECKING:
    from mmaccel.ops.flops import ModelShape


@dataclass
class SampleStats:
    """Visual-token accounting of one sample (one row of the batch).

    ``stages`` maps a stage name ("vision_output", "vision_encoder", "llm_layer_2", ...) to (tokens in, tokens
    out); ``layer_tokens`` holds the visual tokens each language-model layer processes in prefill;
    ``tower_tokens`` (methods inside the vision tower) the tokens of one image entering each vision block, then
    leaving the tower (CLS included; the same for every image): block i's attention runs on ``tower_tokens[i]``
    tokens and its MLP on ``tower_tokens[i + 1]``.

    ``requested_tokens`` is the layer average of visual tokens the method's budget asks for on this sample, and
    ``achieved_tokens`` what it got, both counted by ``budget_convention`` (:mod:`mmaccel.engine.budget_check`).
    """

    images: int
    visual_tokens: int  # produced by the vision encoder for this sample, before any method
    stages: dict[str, tuple[int, int]] = field(default_factory=dict)
    layer_tokens: list[int] = field(default_factory=list)
    tower_tokens: list[int] = field(default_factory=list)
    requested_tokens: float | None = None  # None: no budget sets the count (adaptive methods)
    budget_convention: str = "processed"  # or "after_pruning" (SparseVLM's "Equal Tokens")

    @property
    def llm_input_tokens(self) -> int:
        """Visual tokens entering the language model."""
        return self.layer_tokens[0] if self.layer_tokens else self.visual_tokens

    @property
    def equivalent_tokens(self) -> float:
        """Layer-averaged visual tokens (the budget convention of SparseVLM's tables)."""
        return sum(self.layer_tokens) / len(self.layer_tokens) if self.layer_tokens else float(self.visual_tokens)

    @property
    def achieved_tokens(self) -> float:
        """Layer-averaged visual tokens counted as the budget counts them: ``equivalent_tokens``, or with
        ``budget_convention="after_pruning"`` each layer's tokens after the pruning its attention scores."""
        if not self.layer_tokens:
            return float(self.visual_tokens)
        return layer_average(self.layer_tokens, self.budget_convention)

    @property
    def projected_tokens(self) -> int:
        """Visual tokens that go through the projector (after pre-LLM and in-tower reduction)."""
        for stage in ("vision_output", "vision_encoder"):
            if stage in self.stages:
                return self.stages[stage][1]
        return self.visual_tokens

    def prefill_flops(self, shape: ModelShape, text_tokens: int) -> float:
        """Analytic prefill FLOPs of this sample with ``text_tokens`` non-visual tokens (:mod:`mmaccel.ops.flops`)."""
        layer_tokens = self.layer_tokens or [self.visual_tokens] * shape.decoder.layers
        return shape.prefill_flops(
            [text_tokens + n for n in layer_tokens],
            n_images=self.images,
            projected_tokens=self.projected_tokens,
            tower_tokens=self.tower_tokens or None,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "visual_tokens": self.visual_tokens,
            "llm_input_tokens": self.llm_input_tokens,
            "equivalent_tokens": self.equivalent_tokens,
            "requested_tokens": self.requested_tokens,
            "achieved_tokens": self.achieved_tokens,
            "stages": {name: list(value) for name, value in self.stages.items()},
            "layer_tokens": list(self.layer_tokens),
            "tower_tokens": list(self.tower_tokens),
        }


@dataclass
class TokenContext:
    """What happened in one prefill call: per-sample stats and the kept indices per stage.

    ``visual_keep``: per visual item (image or video, in (batch, sequence) order), the original visual token each
    token handed to the language model stands for (-1 for a non-patch token such as CLS); ``visual_groups``: per
    item, the output token each original token went into (-1 when dropped); ``visual_sizes``: per item, for
    merging methods, the original tokens each output token stands for; ``visual_frames``: for items reduced on
    the encoder output (by their number in that order), the frame (temporal index t) of each token handed to the
    language model. ``llm_keep``: per pruning layer, the kept positions of each row in that layer's input
    sequence; ``llm_merges``: per pruning layer where a method inserted merged tokens, what it inserted;
    ``llm_queries``: per probed layer, the (B, R) query positions (-1 pads) whose attention rows were computed.
    """

    stats: list[SampleStats]
    visual_keep: list[torch.Tensor] = field(default_factory=list)
    visual_groups: list[torch.Tensor] = field(default_factory=list)
    visual_sizes: list[torch.Tensor] = field(default_factory=list)
    visual_frames: dict[int, torch.Tensor] = field(default_factory=dict)
    llm_keep: dict[int, Sequence[torch.Tensor]] = field(default_factory=dict)
    llm_merges: dict[int, LayerReduction] = field(default_factory=dict)
    llm_queries: dict[int, torch.Tensor] = field(default_factory=dict)
    decode_steps: int = 0

    @property
    def batch_size(self) -> int:
        return len(self.stats)
