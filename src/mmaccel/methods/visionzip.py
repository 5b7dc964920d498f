"""VisionZip: dominant tokens by [CLS] attention plus contextual tokens merged by key similarity."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmaccel.errors import ConfigError
from mmaccel.methods.base import Needs, Stage, TokenMethod, VisualReduction, VisualTokens, check_positions
from mmaccel.methods.registry import register_method
from mmaccel.ops.merge import contextual_merge
from mmaccel.ops.select import topk_keep


@register_method("visionzip")
@dataclass
class VisionZip(TokenMethod):
    """Pre-LLM: ``dominant`` tokens (the CLS token plus the patches CLS attends to most) and ``contextual``
    tokens (the remaining patches merged into uniformly spaced targets by key cosine similarity).

    Computed at the vision feature layer (LLaVA-1.5: CLIP layer -2): score = CLS attention summed over heads,
    keys = that layer's keys averaged over heads. Output per image, in this order: CLS, the dominant patches in
    original order, then the contextual tokens; (I, P, D) -> (I, budget, D), merged before the projector.

    Budget split: ``dominant`` counts the CLS token, as in the reference (``visionzip(model, dominant=54,
    contextual=10)`` gives 64 tokens; both given, they set the budget: ``budget`` becomes their sum, and another
    budget is refused). When not given, ``contextual = round(budget * 5 / 32)`` and ``dominant = budget -
    contextual``, the 54:10 ratio of the reference (64 -> 54 + 10, 128 -> 108 + 20, 192 -> 162 + 30).

    Paper: "VisionZip: Longer is Better but Not Necessary in Vision Language Models", arXiv 2412.04467.
    Reference: dvlab-research/VisionZip:visionzip/clip_encoder.py (``CLIPVisionTower_VisionZip.forward``),
    commit 3151f6d.

    Towers without CLS token (Qwen2-VL, Qwen2.5-VL): the score is the attention each token receives in the
    tower's last full-attention block (mean over queries, summed over the 2x2 patches merged into the token, as
    ModelTC/LightCompress's Qwen2.5-VL port scores it), the keys are that block's keys averaged over heads and
    over the merged patches, and no CLS token is prepended: ``dominant`` counts patches only. LLaVA-OneVision's
    SigLIP tower likewise: the attention each patch receives in the feature layer, as the paper prescribes for
    SigLIP. Tiled models (LLaVA-NeXT, LLaVA-OneVision) are reduced per tile or frame on the projected features,
    the CLS token of each tile put through the projector (:mod:`mmaccel.engine.units`); the reference compresses
    each crop and drops the newline tokens.

    Differences from reference:
    - CLS attention and keys come from the feature layer's own q/k through the attention-function probe; the
      reference runs CLIP with eager attention, ``output_attentions=True``, and patches the attention class.
    - The budget may be given as one number; the reference takes ``dominant`` and ``contextual`` only.
    - Ties between equal scores break toward the lower index (a stable sort).
    """

    stage = Stage.VISUAL_OUTPUT
    needs = Needs(vision_cls_attention=True, vision_keys=True, vision_cls_feature=True)
    has_positions_option = True

    dominant: int | None = None
    contextual: int | None = None
    positions: str = "contiguous"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positions(self, self.positions)
        for name in ("dominant", "contextual"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ConfigError(f"visionzip: {name} must be a non-negative int, got {value!r}")
        if self.dominant is not None and self.dominant < 1:
            raise ConfigError("visionzip: dominant counts the CLS token, so it must be >= 1")
        if self.dominant is not None and self.contextual is not None:  # the counts are given: they are the budget
            total = self.dominant + self.contextual
            if isinstance(self.budget, float) and self.budget == 1.0:  # left out (or 1.0): the counts set it
                self.budget = total
            elif self.budget != total or not isinstance(self.budget, int):
                raise ConfigError(
                    f"visionzip: dominant={self.dominant} and contextual={self.contextual} keep {total} tokens; "
                    f"pass budget={total} or leave it out, not budget={self.budget}"
                )

    def split(self, n_tokens: int, cls_token: bool = True) -> tuple[int, int]:
        """(dominant including CLS when ``cls_token``, contextual) for an image of ``n_tokens`` visual tokens."""
        total = self.keep_count(n_tokens)
        if self.dominant is not None and self.contextual is not None:
            dominant, contextual = self.dominant, self.contextual
        elif self.contextual is not None:
            contextual = self.contextual
            dominant = total - contextual
        elif self.dominant is not None:
            dominant = self.dominant
            contextual = total - dominant
        else:
            contextual = round(total * 5 / 32)
            dominant = total - contextual
        if dominant < 1 or contextual < 0 or dominant - int(cls_token) + contextual > n_tokens:
            raise ConfigError(
                f"visionzip: dominant={dominant} (incl. CLS) + contextual={contextual} does not fit an image of "
                f"{n_tokens} tokens with budget={self.budget}"
            )
        return dominant, contextual

    def reduce_visual(self, tokens: VisualTokens) -> VisualReduction:
        assert tokens.cls_attention is not None and tokens.keys is not None
        n_images, n_tokens, _ = tokens.features.shape
        cls_token = tokens.cls_feature is not None
        dominant, contextual = self.split(n_tokens, cls_token)
        n_top = dominant - int(cls_token)  # dominant patches
        device = tokens.features.device

        scores = tokens.cls_attention.sum(dim=1)  # (I, H, P) -> (I, P)
        top = topk_keep(scores, n_top)  # (I, n_top) sorted patch indices
        is_top = torch.zeros(n_images, n_tokens, dtype=torch.bool, device=device).scatter_(1, top, True)
        rest = torch.argsort(is_top.to(torch.uint8), dim=1, stable=True)[:, : n_tokens - n_top]  # (I, R) sorted
        gather = lambda x, idx: x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))  # noqa: E731

        parts = [gather(tokens.features, top)]  # (I, n_top, D)
        source = [top]
        if cls_token:  # (I, 1, D) first
            parts.insert(0, tokens.cls_feature[:, None])
            source.insert(0, torch.full((n_images, 1), -1, dtype=torch.long, device=device))
        groups = torch.full((n_images, n_tokens), -1, dtype=torch.long, device=device)
        groups.scatter_(1, top, torch.arange(dominant - n_top, dominant, device=device).expand(n_images, -1))
        if contextual > 0:
            merged, targets, assignment = contextual_merge(
                gather(tokens.features, rest), gather(tokens.keys, rest), contextual
            )  # (I, C, D), (C,), (I, R)
            parts.append(merged)
            source.append(rest[:, targets])
            groups.scatter_(1, rest, assignment + dominant)
        return VisualReduction(features=torch.cat(parts, dim=1), source=torch.cat(source, dim=1), groups=groups)
