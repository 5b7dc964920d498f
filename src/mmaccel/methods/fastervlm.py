"""FasterVLM: keep the visual tokens the vision tower's [CLS] attends to most."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmaccel.methods.base import Needs, ScorePruner, Stage, VisualTokens, check_positions
from mmaccel.methods.registry import register_method


@register_method("fastervlm")
@dataclass
class FasterVLM(ScorePruner):
    """[CLS]-attention top-k at the vision feature layer, spatial order kept (pre-LLM).

    Score of patch j = mean over heads of softmax(q_CLS k^T / sqrt(d))[j] at the feature layer (LLaVA-1.5:
    CLIP layer -2), computed from that layer's own queries and keys. Shapes: cls_attention (I, H, P) -> scores
    (I, P) -> kept features (I, budget, D), in original raster order.

    Towers without CLS token (Qwen2-VL, Qwen2.5-VL): the score is the attention each token receives in the
    tower's last full-attention block (mean over queries and heads, summed over the 2x2 patches merged into the
    token), the substitute the references use for SigLIP and Qwen towers; see docs/model-families.md.

    Paper: "[CLS] Attention is All You Need for Training-Free Visual Token Pruning: Make VLM Inference Faster",
    arXiv 2412.01818.
    Reference: Theia-4869/FasterVLM:llava/model/multimodal_encoder/clip_encoder.py and
    llava/model/llava_arch.py (``encode_images``), commit f5d5f12.

    Towers without a CLS token (LLaVA-OneVision's SigLIP): the score is the attention each patch receives in the
    feature layer, mean over queries and heads, as the references do for SigLIP. Tiled models (LLaVA-NeXT,
    LLaVA-OneVision): ``budget`` tokens per tile or frame, newline tokens all kept, as the reference's
    LLaVA-NeXT path (:mod:`mmaccel.engine.units`).

    Differences from reference:
    - Selects before the projector and projects only the kept tokens; the reference projects all tokens and
      then masks. The projector acts per token, so the kept features are the same up to float rounding, and
      the work is smaller.
    - The CLS row comes from the layer's own q/k through the attention-function probe, so the tower keeps
      SDPA; the reference runs CLIP with eager attention and ``output_attentions=True``.
    - Ties between equal scores break toward the lower index (a stable sort) instead of ``topk``'s
      unspecified order.
    """

    stage = Stage.VISUAL_OUTPUT
    needs = Needs(vision_cls_attention=True)
    has_positions_option = True

    positions: str = "contiguous"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positions(self, self.positions)

    def score_visual(self, tokens: VisualTokens) -> torch.Tensor:
        assert tokens.cls_attention is not None  # guaranteed by needs
        return tokens.cls_attention.mean(dim=1)  # (I, H, P) -> (I, P)
