"""ToMe: merge similar tokens inside the vision tower's blocks by bipartite soft matching."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmaccel.errors import ConfigError, NotSupportedError
from mmaccel.methods.base import (
    BlockReduction,
    BlockTokens,
    Needs,
    Stage,
    TokenMethod,
    check_positions,
)
from mmaccel.methods.registry import register_method
from mmaccel.ops.bipartite import bipartite_soft_matching, merge_weighted


def parse_r(n_blocks: int, r: int | list[int], inflect: float = 0.0) -> list[int]:
    """Tokens to merge per block, as ToMe's ``parse_r``: an int ``r`` with ``inflect`` in [-1, 1] is a linear
    schedule from ``int(r * (1 - inflect))`` to ``2 r - int(r * (1 - inflect))`` (0: constant r; -1: ToMe's
    "decreasing schedule" from 2r to 0); a list is taken as is and padded with zeros."""
    if isinstance(r, list):
        if len(r) > n_blocks:
            raise ConfigError(f"tome: r lists {len(r)} blocks but only {n_blocks} vision blocks feed the features")
        return r + [0] * (n_blocks - len(r))
    low = int(r * (1.0 - inflect))
    high = 2 * r - low
    step = (high - low) / (n_blocks - 1) if n_blocks > 1 else 0.0
    return [int(low + step * block) for block in range(n_blocks)]


def budget_schedule(n_tokens: int, protected: int, n_remove: int, n_blocks: int) -> list[int]:
    """Spread ``n_remove`` merges over ``n_blocks`` blocks as evenly as possible (the remainder to the first
    blocks), then move to earlier blocks what a block cannot merge in one matching round: a block entered by t
    tokens merges at most ``(t - protected) // 2``, i.e. a block leaving ``after`` tokens at most
    ``after - protected``. What block 0 still cannot merge in one round it merges in further rounds."""
    base, extra = divmod(n_remove, n_blocks)
    schedule = [base + (1 if block < extra else 0) for block in range(n_blocks)]
    after = n_tokens - n_remove
    for block in reversed(range(1, n_blocks)):
        cap = after - protected
        if schedule[block] > cap:
            schedule[block - 1] += schedule[block] - cap
            schedule[block] = cap
        after += schedule[block]
    return schedule


@register_method("tome")
@dataclass
class ToMe(TokenMethod):
    """Merge the most similar tokens in each vision block, between attention and MLP (in the vision tower).

    In each block, between the attention residual and the MLP, bipartite soft matching merges the r most similar
    token pairs by size-weighted average. Per block (tokens x (I, N, D), sizes s (I, N, 1)): metric = the block's
    keys averaged over heads (I, N, d), cosine-normalised; A = tokens 0, 2, 4, ..., B = tokens 1, 3, 5, ...; each A
    token's best B match by cosine similarity; the r best-matched A tokens merge into their B tokens
    (``x = sum(s x) / sum(s)``, sizes add); the CLS token (A index 0) is never merged. Output order:
    ``[unmerged A tokens (in index order, CLS first), all B tokens]``. With ``prop_attn``, every later block adds
    ``log(size)`` of each key to its attention logits (an additive float mask through the model's own SDPA or
    eager kernel).

    Schedule: only the blocks that feed the visual features merge (LLaVA-1.5, feature layer -2: blocks
    0..22 of 24). By default the budget fixes it: ``P - budget`` merges spread evenly over those blocks, so
    that the tower hands exactly ``budget`` patch tokens to the language model (plus CLS when the model keeps
    it). One matching round merges at most half of a block's mergeable tokens; where the even split exceeds
    that, the excess moves to earlier blocks, and a tower too shallow for the budget (not LLaVA-1.5, whose 23
    blocks reach any budget) runs extra rounds in its first block. Alternatively ``r`` (an int per block, or
    a list, with ToMe's ``inflect``) sets the schedule directly, capped at half per block as in the reference;
    the token count then follows from it, and ``budget`` must stay 1.0.

    Positions: the language model receives the tower's output order and, as in the reference pipeline (the
    sequence just becomes shorter), contiguous positions; ``positions="original"`` gives each merged token the
    position of the B patch that absorbed the others. ``session.last_call.visual_sizes`` holds the sizes.

    Paper: "Token Merging: Your ViT But Faster", arXiv 2210.09461.
    Reference: facebookresearch/ToMe:tome/merge.py (``bipartite_soft_matching``, ``merge_wavg``),
    tome/patch/timm.py (``ToMeBlock``, ``ToMeAttention``), tome/utils.py (``parse_r``), commit af95e4b.

    Differences from reference:
    - Runs the model's own blocks and attention kernel (SDPA, eager) through removable hooks; the reference
      swaps ``__class__`` of every block and attention module and computes attention by hand.
    - The keys come from the block's own q/k through the attention-function probe; the reference returns
      ``k.mean(1)`` from its rewritten attention.
    - Blocks after the feature layer do not merge (their output never reaches the language model), and the
      default schedule is derived from the budget; the reference applies ``r`` to every block.
    - Similarity is computed in float32 and sizes are kept in float32; the reference uses the model dtype.
    - Extra matching rounds in the first block when a budget needs them on a shallow tower (each round on the
      merged tokens, keys merged by the same size-weighted average); the reference would silently keep more
      tokens.
    - Ties in the ranking break toward the lower index (a stable sort); ``argsort`` leaves them unspecified.
    """

    stage = Stage.VISION_ENCODER
    needs = Needs(vision_keys=True)
    has_positions_option = True

    r: int | list[int] | None = None
    inflect: float = 0.0
    prop_attn: bool = True
    positions: str = "contiguous"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positions(self, self.positions)
        if self.r is not None:
            if isinstance(self.r, tuple):
                self.r = list(self.r)
            values = self.r if isinstance(self.r, list) else [self.r]
            if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
                raise ConfigError(f"tome: r must be a non-negative int or a list of them, got {self.r!r}")
            if self.budget != 1.0:
                raise ConfigError(
                    f"tome: pass either budget (the schedule follows from it) or r, not both (budget={self.budget})"
                )
        if isinstance(self.inflect, bool) or not isinstance(self.inflect, (int, float)) or abs(self.inflect) > 1:
            raise ConfigError(f"tome: inflect must be a number in [-1, 1], got {self.inflect!r}")
        if not isinstance(self.prop_attn, bool):
            raise ConfigError(f"tome: prop_attn must be True or False, got {self.prop_attn!r}")

    def validate(self, adapter) -> None:
        super().validate(adapter)
        implementation = adapter.attn_implementation("vision")
        if self.prop_attn and not any(name in implementation for name in ("sdpa", "eager")):
            raise NotSupportedError(
                f"tome: prop_attn=True adds log(size) to the attention logits, which the vision tower's "
                f"attention implementation {implementation!r} cannot take; use sdpa or eager, or prop_attn=False"
            )

    def size_bias(self) -> bool:
        return self.prop_attn

    def keeps_all(self, n_tokens: int) -> bool:
        return self.r is None and super().keeps_all(n_tokens)  # a given r merges whatever the budget

    def requested_tokens(self, n_tokens: int, n_layers: int) -> float | None:
        return None if self.r is not None else super().requested_tokens(n_tokens, n_layers)

    def tower_plan(self, n_blocks: int, n_tokens: int, cls_token: bool) -> dict[int, int]:
        protected = int(cls_token)
        n_patches = n_tokens - protected
        if self.r is None:
            n_keep = self.keep_count(n_patches)
            schedule = budget_schedule(n_tokens, protected, n_patches - n_keep, n_blocks)
        else:
            schedule = parse_r(n_blocks, self.r, self.inflect)
        plan, tokens = {}, n_tokens
        for block, r in enumerate(schedule):
            if self.r is not None:
                r = min(r, (tokens - protected) // 2)  # the reference's cap
            if r > 0:
                tokens -= r
                plan[block] = tokens
        return plan

    def reduce_block(self, tokens: BlockTokens, n_out: int) -> BlockReduction:
        assert tokens.keys is not None  # guaranteed by needs
        protected = int(tokens.cls_token)
        hidden, sizes, keys = tokens.hidden, tokens.sizes, tokens.keys  # (I, N, D), (I, N, 1), (I, N, d)
        n_images, n_tokens = hidden.shape[:2]
        index = torch.arange(n_tokens, device=hidden.device).expand(n_images, -1)  # input -> current token
        source = index  # current token -> input token it continues
        if not protected < n_out <= n_tokens:
            raise ValueError(f"tome: cannot merge {n_tokens} tokens into {n_out}")
        while hidden.shape[1] > n_out:  # one round unless the plan asks more than half (shallow towers)
            current = hidden.shape[1]
            r = min(current - n_out, (current - protected) // 2)
            matching = bipartite_soft_matching(keys, r, protect_first=tokens.cls_token)
            if hidden.shape[1] - r > n_out:
                keys, _ = merge_weighted(matching, keys, sizes)
            hidden, sizes = merge_weighted(matching, hidden, sizes)  # (I, N - r, D), (I, N - r, 1)
            index = matching.output_index(current).gather(1, index)
            source = source.gather(1, matching.output_source(current))
        return BlockReduction(hidden=hidden.to(tokens.hidden.dtype), sizes=sizes, index=index, source=source)
