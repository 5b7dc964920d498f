"""EViT: keep the tokens the CLS token attends to and fuse the inattentive ones, inside the vision tower."""

from __future__ import annotations

import math
from dataclasses import dataclass

from mmaccel.errors import ConfigError
from mmaccel.methods.base import (
    BlockReduction,
    BlockTokens,
    Needs,
    Stage,
    TokenMethod,
    check_positions,
)
from mmaccel.methods.registry import register_method
from mmaccel.ops.fuse import keep_and_fuse


def default_locations(n_blocks: int) -> list[int]:
    """The reference's drop locations (3, 6, 9) of a 12-block ViT, i.e. 1/4, 1/2 and 3/4 of the depth, scaled to
    ``n_blocks`` blocks (LLaVA-1.5's 23 feeding blocks: 5, 11, 17)."""
    return sorted({quarter * n_blocks // 4 for quarter in (1, 2, 3)})


@register_method("evit")
@dataclass
class EViT(TokenMethod):
    """Keep the tokens CLS attends to most and fuse the rest into one, at chosen blocks of the vision tower.

    The reduction happens between the attention residual and the MLP of each location block. At a location block
    (tokens x (I, N, D), CLS at 0): a = CLS-row attention of the block, mean over heads, over the N - 1 other
    tokens (I, N - 1); the ``k`` tokens with the highest ``a`` are kept in descending order of ``a``; with
    ``fuse_token`` the others become one token ``sum_j a_j x_j`` (raw attention weights), appended last. Output
    order: ``[CLS, kept by attention, fused]``. A fused token of an earlier location is an ordinary token at the
    next one, as in the reference.

    Keep counts: by default the budget fixes them, with one keep rate at every location as in the reference:
    rate = (budget / P) ** (1 / L) over L locations, counts rounded so that the last location leaves exactly
    ``budget`` tokens besides CLS (the fused token counts toward it), which the language model receives. With
    ``keep_rate`` set instead (``budget`` must then stay 1.0), each location keeps ``ceil(keep_rate * (N - 1))``
    tokens, exactly the reference rule. Locations (``layers``, vision block indices) default to 1/4, 1/2 and
    3/4 of the blocks that feed the visual features, the reference's (3, 6, 9) for 12 blocks.

    Positions: the language model receives the tower's output order with contiguous positions, as in the
    reference pipeline; ``positions="original"`` gives a kept token its patch's position and the fused token
    the image's first position. Needs a CLS token: SigLIP towers raise ``NotSupportedError``.

    Paper: "Not All Patches are What You Need: Expediting Vision Transformers via Token Reorganizations",
    arXiv 2202.07800.
    Reference: youweiliang/evit:evit.py (``Attention.forward``, ``Block.forward``; models
    ``deit_*_shrink_base`` for ``drop_loc``), helpers.py (``complement_idx``), commit 5ca95a7.

    Differences from reference:
    - Applied training-free to a pretrained tower (the reference trains with a keep-rate warm-up).
    - The CLS row comes from the block's own q/k through the attention-function probe, so the tower keeps
      SDPA; the reference materialises the full attention matrix in every block.
    - The keep counts may be derived from a token budget; ``fuse_token`` defaults to True (the paper's main
      setting; a command-line flag, off by default, in the reference).
    - CLS attention is computed in float32; ties break toward the lower index (a stable sort) instead of
      ``topk``'s unspecified order.
    """

    stage = Stage.VISION_ENCODER
    needs = Needs(vision_cls_attention=True)
    has_positions_option = True

    keep_rate: float | None = None
    layers: tuple[int, ...] | None = None
    fuse_token: bool = True
    positions: str = "contiguous"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positions(self, self.positions)
        if self.keep_rate is not None:
            if isinstance(self.keep_rate, bool) or not isinstance(self.keep_rate, (int, float)):
                raise ConfigError(f"evit: keep_rate must be a number in (0, 1], got {self.keep_rate!r}")
            if not 0.0 < self.keep_rate <= 1.0:
                raise ConfigError(f"evit: keep_rate={self.keep_rate} is out of range; allowed: (0, 1]")
            if self.budget != 1.0:
                raise ConfigError(
                    f"evit: pass either budget (the keep rate follows from it) or keep_rate, not both "
                    f"(budget={self.budget})"
                )
        if self.layers is not None:
            if isinstance(self.layers, int) or not all(
                isinstance(b, int) and not isinstance(b, bool) for b in self.layers
            ):
                raise ConfigError(f"evit: layers must be a list of vision block indices, got {self.layers!r}")
            self.layers = tuple(sorted(set(self.layers)))
            if not self.layers:
                raise ConfigError("evit: layers must name at least one vision block")
        if not isinstance(self.fuse_token, bool):
            raise ConfigError(f"evit: fuse_token must be True or False, got {self.fuse_token!r}")

    def keeps_all(self, n_tokens: int) -> bool:
        return self.keep_rate is None and super().keeps_all(n_tokens)  # a keep rate acts whatever the budget

    def requested_tokens(self, n_tokens: int, n_layers: int) -> float | None:
        return None if self.keep_rate is not None else super().requested_tokens(n_tokens, n_layers)

    def locations(self, n_blocks: int) -> list[int]:
        if self.layers is None:
            return default_locations(n_blocks)
        if self.layers[0] < 0 or self.layers[-1] >= n_blocks:
            raise ConfigError(
                f"evit: layers={list(self.layers)} is out of range: {n_blocks} vision blocks feed the features, "
                f"so each must be in [0, {n_blocks - 1}]"
            )
        return list(self.layers)

    def tower_plan(self, n_blocks: int, n_tokens: int, cls_token: bool) -> dict[int, int]:
        locations = self.locations(n_blocks)
        others = n_tokens - 1  # non-CLS tokens entering the first location
        extra = int(self.fuse_token)
        plan = {}
        if self.keep_rate is not None:
            for block in locations:
                kept = math.ceil(self.keep_rate * others)
                if kept >= others:  # the reference leaves the block unchanged
                    continue
                others = kept + extra
                plan[block] = 1 + others
            return plan
        n_patches = others
        target = self.keep_count(n_patches)
        for step, block in enumerate(locations, start=1):
            wanted = round(n_patches * (target / n_patches) ** (step / len(locations)))
            wanted = target if step == len(locations) else max(target, wanted)
            if wanted < others:
                others = wanted
                plan[block] = 1 + others
        return plan

    def reduce_block(self, tokens: BlockTokens, n_out: int) -> BlockReduction:
        assert tokens.cls_attention is not None  # guaranteed by needs
        scores = tokens.cls_attention.mean(dim=1)[:, 1:]  # (I, H, N) -> (I, N - 1)
        n_keep = n_out - 1 - int(self.fuse_token)
        out = keep_and_fuse(tokens.hidden, tokens.sizes, scores, n_keep, self.fuse_token)
        return BlockReduction(hidden=out.hidden, sizes=out.sizes, index=out.index, source=out.source)
