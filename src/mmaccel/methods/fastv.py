"""FastV: drop the visual tokens the last prompt token ignores, after layer K of the language model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from mmaccel.errors import ConfigError
from mmaccel.methods.base import LayerTokens, Needs, ScorePruner, Stage, check_positions
from mmaccel.methods.registry import register_method

if TYPE_CHECKING:
    from mmaccel.models.base import ModelAdapter


@register_method("fastv")
@dataclass
class FastV(ScorePruner):
    """In-LLM pruning at layer ``k`` by the attention of the last prompt token (prefill only).

    At layer k - 1 the probe computes softmax(q_last K^T / sqrt(d) + mask) from that layer's own post-RoPE
    queries and keys (one query row per sample, keys GQA-expanded), averages over heads, and the top ``budget``
    visual tokens of each image are kept for layers k, k+1, ... Shapes: attention (B, H, 1, L) -> scores
    (B, L) -> kept positions per row (L'_b,). Layers before k keep the full cache; layers from k on cache only
    the kept tokens, and decode attends to that fixed subset.

    ``positions="original"`` (default, as the reference) keeps each kept token's original RoPE position, and
    decode continues from the unpruned length; ``"contiguous"`` renumbers the kept tokens 0..L'-1 in layers
    >= k, and decode positions there continue from the pruned length (SparseVLM v1.x's rule).

    Paper: "An Image is Worth 1/2 Tokens After Layer 2", arXiv 2403.06764.
    Reference: pkunlp-icler/FastV:src/transformers/src/transformers/models/llama/modeling_llama.py (inplace
    branch) and src/FastV/lmms-eval/fastv_kvcache.py, commit d165972.

    Differences from reference:
    - Scores come from one attention row computed from the layer's own q/k through the attention-function
      probe; the reference switches to eager attention and materialises ``output_attentions`` (L x L per head).
    - Batched: the last real token of each row scores its own images, and each image keeps exactly ``budget``
      tokens; the reference handles batch 1 only (``[0]``) and ranks one span.
    - Several images per prompt are found from the image token id, never a fixed offset (35 / 5 in the
      reference), and each image keeps its own ``budget``.
    - The KV-cache variant of the reference runs layer k - 1 twice and appends its keys/values twice; here the
      layer runs once.
    - ``budget`` counts tokens kept (``round(fraction * n)`` for a float), where the reference's ``R`` is the
      fraction dropped.
    """

    stage = Stage.LLM_PREFILL
    needs = Needs(llm_attention_rows=True)
    has_positions_option = True

    k: int = 2
    positions: str = "original"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positions(self, self.positions)
        if isinstance(self.k, bool) or not isinstance(self.k, int):
            raise ConfigError(f"fastv: k must be an int layer index, got {self.k!r}")

    def validate(self, adapter: ModelAdapter) -> None:
        super().validate(adapter)
        n_layers = adapter.num_text_layers()
        if not 1 <= self.k < n_layers:
            raise ConfigError(
                f"fastv: k={self.k} is out of range; the language model has {n_layers} layers, "
                f"so k must be in [1, {n_layers - 1}]"
            )

    def prune_layers(self, n_layers: int) -> tuple[int, ...]:
        return (self.k,)

    def score_layer(self, tokens: LayerTokens) -> torch.Tensor:
        assert tokens.attention is not None  # guaranteed by needs
        return tokens.attention.mean(dim=1)[:, 0]  # (B, H, 1, L) -> (B, L)
