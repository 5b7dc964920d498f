"""Adapters for ``Qwen2VLForConditionalGeneration`` and ``Qwen2_5_VLForConditionalGeneration``.

Facts used (transformers 5.23): ``model.model.{visual, language_model}``; the vision tower takes flattened
patches (total_patches, C) with ``grid_thw`` (one (t, h, w) row per image or video) and runs its blocks on the
packed sequence of all images, attention restricted per frame by ``cu_seqlens``; the processor orders the patches
of each frame in 2x2 merge groups, and the merger maps every group of 4 consecutive patches to one
language-model token, so an item of grid (t, h, w) gives t * h/2 * w/2 tokens in raster order of the merged
grid. Qwen2.5-VL additionally permutes the merge groups into windows (``window_index``) before its blocks, runs
window attention except in ``fullatt_block_indexes``, and un-permutes after the merger.

Positions are M-RoPE: ``get_rope_index`` gives each token (t, h, w) coordinates, (3, B, N), and ``generate``
passes (4, B, N) (a text row, then T/H/W); ``rope_deltas`` lets decode steps without position ids continue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from mmaccel.errors import ConfigError, NotSupportedError
from mmaccel.models.base import ComposedModelAdapter
from mmaccel.models.layout import TileLayout, frame_groups_layout

if TYPE_CHECKING:
    from mmaccel.ops.flops import ModelShape, VisualWork

_TOWER_REASON = (
    "methods inside the vision tower (ToMe, EViT) are not supported on {name}: its tower runs all images as one "
    "packed sequence whose attention spans (cu_seqlens{window}), rotary tables and 2x2 merger groups fix the "
    "token count of every block, so tokens cannot be merged or dropped between blocks; use a pre-LLM method"
)


class QwenVLAdapter(ComposedModelAdapter):
    """Qwen2-VL: a ViT over packed patches with a 2x2 patch merger, and a Qwen2 decoder with M-RoPE.

    Semantics on this family (see docs/model-families.md):

    * Images (and videos) produce a variable number of tokens, ``tokens_per_image()`` is None; each item's
      merged grid (t, h/2, w/2) comes from the tower call (:meth:`tower_grids`).
    * Pre-LLM methods act on the merger output, the tokens the language model sees (one per 2x2 patch group),
      at the language-model call; on LLaVA they act before the projector. The unit a budget applies to is an
      image, or one temporal patch group (frame) of a video (:meth:`visual_layouts`), as on LLaVA-OneVision.
    * The tower has no CLS token. Methods that score by CLS attention get the attention each merged token
      *receives* instead: softmax(Q K^T / sqrt(d)) of the last full-attention block, averaged over queries,
      summed over the 4 patches of each merge group (a distribution over the tokens, like a CLS row), per head.
    * Kept tokens always keep their original (t, h, w) positions: on M-RoPE an image's position span is its
      grid, not its token count, so ``positions="contiguous"`` is not applied.
    """

    name = "qwen2_vl"
    model_classes = ("Qwen2VLForConditionalGeneration",)
    image_input_keys: ClassVar[tuple[str, ...]] = ("pixel_values",)
    video_input_keys: ClassVar[tuple[str, ...]] = ("pixel_values_videos",)
    per_token_keys: ClassVar[tuple[str, ...]] = ("mm_token_type_ids",)
    window_attention: ClassVar[bool] = False

    # -- language model ---------------------------------------------------------------------------------------
    def uses_mrope(self) -> bool:
        return True

    def rope_positions(self, kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """M-RoPE positions (3, B, N) and deltas (B, 1) of a full prompt, exactly as the model computes them."""
        if kwargs.get("mm_token_type_ids") is None:
            raise NotSupportedError(
                "Qwen-VL prompts need mm_token_type_ids (0 text, 1 image, 2 video) to place image tokens; pass the "
                "processor's output, or position_ids"
            )
        keys = ("image_grid_thw", "video_grid_thw", "second_per_grid_ts", "attention_mask")
        extra = {key: kwargs[key] for key in keys if kwargs.get(key) is not None}
        return self.model.model.get_rope_index(kwargs["input_ids"], kwargs["mm_token_type_ids"], **extra)

    def set_rope_deltas(self, deltas: torch.Tensor) -> None:
        """(B, 1): decode position = tokens seen so far + delta, for calls that pass no position ids."""
        self.model.model.rope_deltas = deltas

    # -- vision side --------------------------------------------------------------------------------------------
    @property
    def vision_config(self) -> Any:
        return self.model.config.vision_config

    def has_cls_token(self) -> bool:
        return False

    def scores_without_cls(self) -> bool:
        return True

    def tokens_per_image(self) -> int | None:
        return None

    def patch_grid(self) -> tuple[int, int]:
        raise NotSupportedError(f"{self.name} images have no fixed patch grid; each item's grid comes with it")

    def merge_size(self) -> int:
        return self.vision_config.spatial_merge_size

    def encoder_functions(self) -> dict[str, str]:
        return {"image": "get_image_features", "video": "get_video_features"}

    def visual_layouts(self, modality: str, arguments: dict[str, Any], n_items: int) -> list[TileLayout]:
        """An image is one unit, a video one unit per temporal patch group (its frame), each the merged grid."""
        key = "image_grid_thw" if modality == "image" else "video_grid_thw"
        grids = arguments.get(key)
        if grids is None:
            raise ConfigError(f"{self.name}: {key} is needed to lay out {modality} tokens; pass the processor's")
        merge = self.merge_size()
        return [
            frame_groups_layout(t, h // merge, w // merge, video=modality == "video") for t, h, w in grids.tolist()
        ]

    def model_shape(self) -> ModelShape:
        from mmaccel.models.shape import qwen_shape

        return qwen_shape(self, window_attention=self.window_attention)

    def visual_items(self, inputs: dict[str, Any], modality: str) -> list[VisualWork]:
        from mmaccel.models.shape import qwen_items

        return qwen_items(self, inputs, modality, windows=self.window_attention)

    def packed_tower(self) -> bool:
        return True

    def tower(self) -> nn.Module:
        return self.model.model.visual

    def tower_grids(self, args: tuple, kwargs: dict[str, Any]) -> torch.Tensor:
        """(items, 3) patch grids (t, h, w) of one tower call."""
        return kwargs["grid_thw"] if "grid_thw" in kwargs else args[1]

    def tower_group_order(self, grids: torch.Tensor) -> torch.Tensor:
        """For each 2x2 merge group in the order the tower blocks hold them, its index among the merged tokens."""
        merge = self.merge_size()
        return torch.arange(int((grids.prod(-1) // merge**2).sum()), device=grids.device)

    def score_block(self) -> int:
        """The vision block whose received attention stands in for CLS attention: the last one (full attention)."""
        return len(self.tower().blocks) - 1

    def feature_layer(self) -> nn.Module:
        return self.tower().blocks[-1]

    def feature_attention(self) -> nn.Module:
        return self.tower().blocks[self.score_block()].attn

    def cls_in_features(self) -> bool:
        return False

    def reduction_module(self) -> nn.Module | None:
        return None  # the merger is part of the tower: pre-LLM methods reduce the encoder's per-item output

    def encode_images(self, inputs: dict[str, Any]) -> Any:
        return self.model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"], return_dict=True)

    def encode_videos(self, inputs: dict[str, Any]) -> Any:
        return self.model.model.get_video_features(
            inputs["pixel_values_videos"], inputs["video_grid_thw"], return_dict=True
        )

    def vision_blocks(self) -> nn.ModuleList:
        window = ", and window attention outside fullatt_block_indexes" if self.window_attention else ""
        raise NotSupportedError(_TOWER_REASON.format(name=self.name, window=window))

    def vision_block_parts(self, block: int):
        return self.vision_blocks()

    def feature_block(self) -> int:
        return self.vision_blocks()

    @property
    def image_token_id(self) -> int:
        return self.model.config.image_token_id

    @property
    def video_token_id(self) -> int:
        return self.model.config.video_token_id

    def visual_token_ids(self) -> dict[str, int]:
        return {"image": self.image_token_id, "video": self.video_token_id}

    # -- attention implementation ----------------------------------------------------------------------------------
    def attn_implementation(self, part: str) -> str:
        config = self.text_config if part == "text" else self.vision_config
        return config._attn_implementation

    def set_attn_implementation(self, part: str, name: str) -> None:
        self.model.set_attn_implementation({f"{part}_config": name})


class Qwen25VLAdapter(QwenVLAdapter):
    """Qwen2.5-VL: as Qwen2-VL, with window attention in the tower.

    The received-attention scores come from the last block of ``fullatt_block_indexes`` (window-attention blocks
    do not count: a token there only receives attention from its window), read in the window order and mapped
    back to the merged tokens through ``window_index``.
    """

    name = "qwen2_5_vl"
    model_classes = ("Qwen2_5_VLForConditionalGeneration",)
    window_attention = True

    def tower_group_order(self, grids: torch.Tensor) -> torch.Tensor:
        from transformers.vision_utils import get_vision_window_index

        config = self.vision_config
        window_index, _ = get_vision_window_index(
            grids,
            spatial_merge_size=config.spatial_merge_size,
            window_size=config.window_size,
            patch_size=config.patch_size,
        )
        return window_index.to(grids.device)

    def score_block(self) -> int:
        full = list(self.vision_config.fullatt_block_indexes)
        if not full:
            raise NotSupportedError(f"{self.name}: the tower has no full-attention block (fullatt_block_indexes)")
        return max(full)
