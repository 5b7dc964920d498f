"""LLaVA-PruMerge and PruMerge+: keep the CLS-attention outliers, merge the rest into them by key similarity."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F

from mmaccel.errors import ConfigError
from mmaccel.methods.base import Needs, Stage, TokenMethod, VisualReduction, VisualTokens, check_positions
from mmaccel.methods.registry import register_method
from mmaccel.ops.outliers import adaptive_keep_count, iqr_outlier_count

if TYPE_CHECKING:
    from mmaccel.models.base import ModelAdapter


@register_method("prumerge")
@dataclass
class PruMerge(TokenMethod):
    """Pre-LLM: keep the patches whose CLS attention is an outlier, merge every patch's nearest neighbours
    (by key) into the kept ones, and sum the pruned patches into one extra token.

    Computed from the block that reads the feature layer (LLaVA-1.5: CLIP block 23 for features of block 22),
    its heads concatenated into one: a = softmax(q_CLS K^T / sqrt(C)) over CLS and patches, keys K (P, C).
    ``budget=None`` (default): keep the IQR outliers, the patches with a > Q3 + 1.5 (Q3 - Q1), per image;
    ``budget`` given: keep exactly ``budget`` output tokens per image (budget - 1 patches plus the extra token).
    Each kept patch i becomes x_i + sum over its ``neighbours`` most key-similar other patches (kept or not) of
    a_j x_j (raw attention weights, not normalised); the extra token is sum over pruned j of a_j x_j. Output
    order as the reference: kept patches by descending attention, then the extra token. Shapes: features
    (I, P, D) -> (I, k + 1, D), padded to the longest image when ``budget=None`` (``counts`` per image).

    Towers without CLS token (Qwen2-VL, Qwen2.5-VL): a is the attention each token receives in the tower's last
    full-attention block (mean over queries and heads, summed over the 2x2 patches merged into the token, so it
    sums to 1 over the tokens like the CLS row), and K that block's keys, heads concatenated, averaged over the
    merged patches; see docs/model-families.md.

    Paper: "LLaVA-PruMerge: Adaptive Token Reduction for Efficient Large Multimodal Models", arXiv 2403.15388
    (ICCV 2025). Reference: 42Shawn/LLaVA-PruMerge:llava/model/multimodal_encoder/clip_encoder.py
    (``token_prune_merge_advanced``), commit 097c041.

    Towers without a CLS token (LLaVA-OneVision's SigLIP): a = the attention each patch receives in the feature
    layer itself (mean over queries, heads concatenated), keys from the same layer, as the references do for
    SigLIP. Tiled models: per tile or frame, after the projector (:mod:`mmaccel.engine.units`).

    Differences from reference:
    - The outlier count is computed per image; the reference computes one ratio over the flattened batch, so
      an image's count depended on the other images of its batch.
    - q/k come from the block's own attention through the probe (heads concatenated = the full-width
      q_proj/k_proj outputs the reference hooks); attention is computed in float32, in the reference in the
      tower's dtype.
    - At least one patch is kept when no patch is an outlier (the reference keeps none, and PruMerge+ divides
      by zero); ``neighbours`` is capped at P - 1 (the reference's fixed 32 fails on small grids).
    - A fixed ``budget`` keeps exactly that many tokens; the reference's non-adaptive path takes a ratio.
    - Merging is vectorised over the kept patches (the reference loops over batch and tokens in Python);
      ties between equal similarities break toward the lower index.
    - The extra token stands, for positions, at its pruned patch of largest attention.
    """

    stage = Stage.VISUAL_OUTPUT
    needs = Needs(vision_reader_qk=True)
    has_positions_option = True
    spatial_supplement: ClassVar[bool] = False

    budget: int | float | None = None
    neighbours: int = 32
    positions: str = "contiguous"

    def __post_init__(self) -> None:
        if self.budget is not None:
            super().__post_init__()
        check_positions(self, self.positions)
        if isinstance(self.neighbours, bool) or not isinstance(self.neighbours, int) or self.neighbours < 1:
            raise ConfigError(f"{self.name}: neighbours must be an int >= 1, got {self.neighbours!r}")

    def unsupported_reason(self, adapter: ModelAdapter) -> str | None:
        if not adapter.has_cls_token() and not adapter.scores_without_cls():  # the IQR outliers need CLS scores
            return f"needs a CLS token in the vision tower, and {adapter.name}'s tower has none"
        return super().unsupported_reason(adapter)

    def keeps_all(self, n_tokens: int) -> bool:
        return self.budget is not None and super().keeps_all(n_tokens)

    def requested_tokens(self, n_tokens: int, n_layers: int) -> float | None:
        return None if self.budget is None else super().requested_tokens(n_tokens, n_layers)

    # -- selection --------------------------------------------------------------------------------------------------
    def select(self, attention: torch.Tensor) -> list[torch.Tensor]:
        """Kept patch indices per image, in output order. attention: (I, P) CLS attention over the patches."""
        n_images, n_tokens = attention.shape
        if self.budget is None:
            outliers = iqr_outlier_count(attention).tolist()  # (I,)
            counts = [max(1, adaptive_keep_count(n, n_tokens)) for n in outliers]
        else:
            counts = [self.keep_count(n_tokens) - 1] * n_images  # the extra token makes up the budget
        return [self._select_one(attention[i], counts[i], outliers=None) for i in range(n_images)]

    def _select_one(self, attention: torch.Tensor, n_keep: int, outliers: int | None) -> torch.Tensor:
        return torch.sort(attention, descending=True, stable=True).indices[:n_keep]  # (k,)

    # -- merging -----------------------------------------------------------------------------------------------------
    def reduce_visual(self, tokens: VisualTokens) -> VisualReduction:
        assert tokens.reader_cls_attention is not None and tokens.reader_keys is not None
        attention = tokens.reader_cls_attention  # (I, P)
        unit_keys = F.normalize(tokens.reader_keys.float(), dim=-1)  # (I, P, C)
        n_images, n_tokens, dim = tokens.features.shape
        kept_per_image = self.select(attention)
        length = max(k.numel() for k in kept_per_image) + 1
        features = tokens.features.new_zeros(n_images, length, dim)
        source = torch.zeros(n_images, length, dtype=torch.long, device=attention.device)
        groups = torch.full((n_images, n_tokens), -1, dtype=torch.long, device=attention.device)
        for i, kept in enumerate(kept_per_image):
            merged, extra = self._merge(tokens.features[i], unit_keys[i], attention[i], kept)  # (k, D), (D,)
            n_kept = kept.numel()
            features[i, :n_kept], features[i, n_kept] = merged, extra
            is_kept = torch.zeros(n_tokens, dtype=torch.bool, device=kept.device)
            is_kept[kept] = True
            pruned = torch.nonzero(~is_kept).flatten()
            extra_source = pruned[attention[i, pruned].argmax()] if pruned.numel() else kept[-1]
            source[i, : n_kept + 1] = torch.cat([kept, extra_source[None]])
            groups[i, pruned] = n_kept
            groups[i, kept] = torch.arange(n_kept, device=kept.device)
        counts = [k.numel() + 1 for k in kept_per_image]
        return VisualReduction(
            features=features, source=source, groups=groups, counts=None if len(set(counts)) == 1 else counts
        )

    def _merge(self, x: torch.Tensor, unit_keys: torch.Tensor, attention: torch.Tensor, kept: torch.Tensor):
        """x (P, D), unit_keys (P, C), attention (P,), kept (k,) -> merged kept tokens (k, D), extra token (D,)."""
        n_tokens = x.shape[0]
        similarity = unit_keys[kept] @ unit_keys.T  # (k, P)
        similarity[torch.arange(kept.numel()), kept] = -math.inf  # a patch is not its own neighbour
        n_neighbours = min(self.neighbours, n_tokens - 1)
        order = torch.sort(similarity, dim=-1, descending=True, stable=True).indices[:, :n_neighbours]  # (k, m)
        weights = attention[order].to(x.dtype)  # (k, m)
        merged = x[kept] + (weights[..., None] * x[order]).sum(dim=1)  # (k, D)
        is_pruned = torch.ones(n_tokens, dtype=torch.bool, device=x.device)
        is_pruned[kept] = False
        extra = (attention[is_pruned].to(x.dtype)[:, None] * x[is_pruned]).sum(dim=0)  # (D,)
        return merged, extra


@register_method("prumerge+")
@dataclass
class PruMergePlus(PruMerge):
    """PruMerge with a uniform spatial supplement: besides the outliers, patches spread over the grid are kept.

    ``budget=None``: the k outliers (as PruMerge), then the patches at ``arange(0, P - 1, int(int(P / k) / 3))``
    that are not already kept (as the reference's adaptive path; about 3k more); ``budget`` given: half of the
    budget - 1 kept patches by attention, the other half evenly spread (centred) over the remaining patches in
    raster order. Merging and the extra token as PruMerge; output order: outliers by descending attention,
    then the supplement in raster order, then the extra token.

    Paper: arXiv 2403.15388 (PruMerge+, v2 onwards). Reference: 42Shawn/LLaVA-PruMerge:llava/model/
    multimodal_encoder/clip_encoder.py (``token_prune_merge_advanced_plus``, the code's default), commit 097c041.

    Differences from reference (besides PruMerge's):
    - The supplement skips the patches kept by the same image; the reference removes those kept by any image of
      the batch (``idx.flatten()``) and then concatenates one shared supplement to every image, which only works
      for one image.
    - The grid ends at P - 1 for any grid size (the reference's literal 575 assumes 576 patches); its step is at
      least 1 (the reference's step is 0, an error, when more than a third of the patches are outliers).
    - A fixed ``budget`` splits the kept patches half by attention, half spatially; the reference's fixed-ratio
      path (used for training) does the same with a grid that may repeat a kept patch.
    """

    spatial_supplement: ClassVar[bool] = True

    def select(self, attention: torch.Tensor) -> list[torch.Tensor]:
        n_images, n_tokens = attention.shape
        if self.budget is None:
            outliers = iqr_outlier_count(attention).tolist()
            return [
                self._select_one(attention[i], max(1, adaptive_keep_count(n, n_tokens)), outliers=n)
                for i, n in enumerate(outliers)
            ]
        n_patches = self.keep_count(n_tokens) - 1
        n_top = math.ceil(n_patches / 2)
        return [self._select_fixed(attention[i], n_top, n_patches - n_top) for i in range(n_images)]

    def _select_one(self, attention: torch.Tensor, n_keep: int, outliers: int | None) -> torch.Tensor:
        top = torch.sort(attention, descending=True, stable=True).indices[:n_keep]  # (k,)
        n_tokens = attention.numel()
        ratio = max(outliers or 0, 1) / n_tokens
        step = max(1, int(int(1 / ratio) / 3))
        grid = torch.arange(0, n_tokens - 1, step, device=attention.device)
        return torch.cat([top, grid[~torch.isin(grid, top)]])

    @staticmethod
    def _select_fixed(attention: torch.Tensor, n_top: int, n_uniform: int) -> torch.Tensor:
        top = torch.sort(attention, descending=True, stable=True).indices[:n_top]
        is_top = torch.zeros(attention.numel(), dtype=torch.bool, device=attention.device)
        is_top[top] = True
        rest = torch.nonzero(~is_top).flatten()  # raster order
        picks = ((torch.arange(n_uniform, device=rest.device) * 2 + 1) * rest.numel()) // (2 * max(n_uniform, 1))
        return torch.cat([top, rest[picks]])
