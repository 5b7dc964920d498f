"""Adapter for ``LlavaOnevisionForConditionalGeneration`` (SigLIP tower without CLS, anyres images, video)."""

from __future__ import annotations

import math
from typing import Any

import torch

from mmaccel.errors import ConfigError
from mmaccel.models.layout import TileLayout, pooled_frame_layout
from mmaccel.models.llava_next import LlavaNextAdapter


class LlavaOnevisionAdapter(LlavaNextAdapter):
    """LLaVA-OneVision as ``transformers`` 5.23 builds it: a SigLIP tower (no CLS token, ``"full"`` features of
    the last block), a Qwen2 decoder, anyres images and video.

    Facts used (besides :class:`LlavaNextAdapter`'s): images are packed as LLaVA-NeXT's, except that a grid
    larger than ``anyres_max_N`` tiles is bilinearly downsized after unpadding (each token then reads its
    nearest patch), and a prompt with several images per sample (``batch_num_images`` > 1) encodes each image
    as its base tile only, followed by one newline. Video: ``get_video_features(pixel_values_videos (V, F, C, H,
    W))`` runs the tower on every frame, projects, pools each frame's h x w grid to ceil(h/2) x ceil(w/2)
    bilinearly, and appends one ``image_newline`` per video; the features are a (V, n, D) tensor, not a list.

    The tower has no CLS token: CLS-attention methods score a patch by the attention it receives in the feature
    layer (mean over queries and heads), which is what the references do for SigLIP (:meth:`scores_without_cls`).
    """

    name = "llava_onevision"
    model_classes = ("LlavaOnevisionForConditionalGeneration",)

    image_input_keys = (
        "pixel_values",
        "image_sizes",
        "vision_feature_layer",
        "vision_feature_select_strategy",
        "vision_aspect_ratio",
        "batch_num_images",
    )
    video_input_keys = ("pixel_values_videos", "image_sizes_videos")

    def visual_token_ids(self) -> dict[str, int]:
        return {"image": self.image_token_id, "video": self.model.config.video_token_id}

    def scores_without_cls(self) -> bool:
        return True  # the feature layer is a full-attention SigLIP block

    def encoder_functions(self) -> dict[str, str]:
        return {"image": "get_image_features", "video": "get_video_features"}

    def encode_images(self, inputs: dict[str, Any]) -> Any:
        keys = (
            "pixel_values",
            "image_sizes",
            "vision_feature_layer",
            "vision_feature_select_strategy",
            "vision_aspect_ratio",
            "batch_num_images",
        )
        kwargs = {key: inputs[key] for key in keys if inputs.get(key) is not None}
        return self.model.model.get_image_features(**kwargs, return_dict=True)

    def encode_videos(self, inputs: dict[str, Any]) -> Any:
        keys = ("pixel_values_videos", "vision_feature_layer", "vision_feature_select_strategy")
        kwargs = {key: inputs[key] for key in keys if inputs.get(key) is not None}
        return self.model.model.get_video_features(**kwargs, return_dict=True)

    # -- layouts ------------------------------------------------------------------------------------------------
    def _tiles_per_image(self, arguments: dict[str, Any]) -> list[int]:
        tiles = super()._tiles_per_image(arguments)
        per_sample = arguments.get("batch_num_images")
        if per_sample is None:
            return tiles
        single = [int(n) == 1 for n in per_sample for _ in range(int(n))]
        return [n if alone else 1 for n, alone in zip(tiles, single)]

    def _pack(self, coordinates: list[torch.Tensor], image_sizes: Any, arguments: dict[str, Any]) -> list:
        newline = torch.zeros(3, dtype=torch.float64)
        packed, _ = self.model.model.pack_image_features(
            coordinates,
            image_sizes,
            image_newline=newline,
            vision_aspect_ratio=self._config_default(arguments, "vision_aspect_ratio"),
        )
        return packed

    def encoder_output(self, modality: str, features: list[torch.Tensor]) -> Any:
        if modality == "video":  # the model reads videos as one (V, n, D) tensor: one row holds them all
            return super().encoder_output(modality, torch.cat(features)[None])
        return super().encoder_output(modality, features)

    def visual_layouts(self, modality: str, arguments: dict[str, Any], n_items: int) -> list[TileLayout]:
        if modality != "video":
            return super().visual_layouts(modality, arguments, n_items)
        videos = arguments.get("pixel_values_videos")
        if videos is None or videos.dim() != 5:
            raise ConfigError(f"{self.name}: pixel_values_videos must be (videos, frames, channels, height, width)")
        height, width = self.patch_grid()
        pooled = (math.ceil(height / 2), math.ceil(width / 2))
        return [pooled_frame_layout(videos.shape[1], height, width, pooled) for _ in range(videos.shape[0])]
