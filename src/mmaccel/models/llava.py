"""Adapter for ``LlavaForConditionalGeneration`` (LLaVA-1.5 layout: CLIP tower, MLP projector, Llama-like LM)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from mmaccel.errors import NotSupportedError
from mmaccel.models.base import ComposedModelAdapter, VisionBlockParts
from mmaccel.models.layout import TileLayout, grid_layout

if TYPE_CHECKING:
    from mmaccel.ops.flops import ModelShape, VisualWork


class LlavaAdapter(ComposedModelAdapter):
    """LLaVA-1.5 as ``transformers`` 5.23 builds it.

    Facts used: ``model.model.{vision_tower, multi_modal_projector, language_model}``; CLIP encoder blocks at
    ``vision_tower.encoder.layers``; ``hidden_states[f]`` for a negative feature layer f is the output of
    ``encoder.layers[f]`` (for f >= 1, of ``layers[f - 1]``); the ``"default"`` select strategy drops CLS before
    the projector; ``get_image_features`` returns one (P, D) tensor per image in ``pooler_output``.
    """

    name = "llava"
    model_classes = ("LlavaForConditionalGeneration",)

    # -- vision --------------------------------------------------------------------------------------------------
    @property
    def vision_config(self) -> Any:
        return self.model.config.vision_config

    def _tower(self) -> nn.Module:
        return self.model.model.vision_tower

    def has_cls_token(self) -> bool:
        return type(self._tower()).__name__.startswith("CLIP")

    def _select_strategy(self) -> str:
        return self.model.config.vision_feature_select_strategy

    def _feature_layer_index(self) -> int:
        feature_layer = self.model.config.vision_feature_layer
        if not isinstance(feature_layer, int):
            raise NotSupportedError(
                f"vision_feature_layer={feature_layer!r} (several layers concatenated) is not supported by "
                "methods that read the feature layer's attention; use an int feature layer"
            )
        n_layers = len(self._tower().encoder.layers)
        if feature_layer == 0 or feature_layer < -n_layers or feature_layer > n_layers:
            raise NotSupportedError(f"vision_feature_layer={feature_layer} is not a transformer block output")
        return feature_layer if feature_layer < 0 else feature_layer - 1

    def feature_layer(self) -> nn.Module:
        return self._tower().encoder.layers[self._feature_layer_index()]

    def feature_attention(self) -> nn.Module:
        return self.feature_layer().self_attn

    def vision_blocks(self) -> nn.ModuleList:
        return self._tower().encoder.layers

    def vision_block_parts(self, block: int) -> VisionBlockParts:
        layer = self.vision_blocks()[block]  # CLIPEncoderLayer / SiglipEncoderLayer
        return VisionBlockParts(attention=layer.self_attn, pre_mlp_norm=layer.layer_norm2, mlp=layer.mlp)

    def feature_block(self) -> int:
        return self._feature_layer_index() % len(self.vision_blocks())

    def cls_in_features(self) -> bool:
        return self._select_strategy() == "full" and self.has_cls_token()  # a SigLIP tower has no CLS

    def patch_grid(self) -> tuple[int, int]:
        side = self.vision_config.image_size // self.vision_config.patch_size
        return side, side

    def tokens_per_image(self) -> int | None:
        height, width = self.patch_grid()
        return height * width + (1 if self.cls_in_features() else 0)

    def reduction_module(self) -> nn.Module:
        return self.model.model.multi_modal_projector

    def reduction_site(self) -> str:
        return "projector_input"  # the official pre-LLM methods reduce the projector input, as LLaVA-1.5 runs it

    def visual_layouts(self, modality: str, arguments: dict[str, Any], n_items: int) -> list[TileLayout]:
        if modality != "image":
            raise NotSupportedError(f"{self.name} models take no {modality} input")
        height, width = self.patch_grid()
        return [grid_layout(height, width, extra_first=int(self.cls_in_features()))] * n_items  # one shared layout

    def model_shape(self) -> ModelShape:
        from mmaccel.models.shape import llava_shape

        return llava_shape(self, fixed_resolution=True)

    def visual_items(self, inputs: dict[str, Any], modality: str) -> list[VisualWork]:
        from mmaccel.models.shape import llava_items

        pixels = inputs.get("pixel_values")
        if modality != "image" or pixels is None:
            return []
        return llava_items(self, inputs, modality, [1] * len(pixels))

    def encode_images(self, inputs: dict[str, Any]) -> Any:
        keys = ("pixel_values", "vision_feature_layer", "vision_feature_select_strategy", "image_sizes")
        kwargs = {key: inputs[key] for key in keys if inputs.get(key) is not None}
        return self.model.model.get_image_features(**kwargs, return_dict=True)

    image_input_keys = ("pixel_values", "image_sizes", "vision_feature_layer", "vision_feature_select_strategy")

    @property
    def image_token_id(self) -> int:
        return self.model.config.image_token_id

    # -- attention implementation ----------------------------------------------------------------------------------
    def attn_implementation(self, part: str) -> str:
        config = self.text_config if part == "text" else self.vision_config
        return config._attn_implementation

    def set_attn_implementation(self, part: str, name: str) -> None:
        self.model.set_attn_implementation({f"{part}_config": name})
