"""Model adapters: the only code that knows Hugging Face module names and version quirks.

An adapter exposes facts (where the visual tokens are, which layers exist, whether the tower has a CLS token)
and small operations (encode images, rotary embeddings). Methods and the engine never ask "is this LLaVA?".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from mmaccel.errors import NotSupportedError
from mmaccel.models.layout import TileLayout

if TYPE_CHECKING:
    from mmaccel.ops.flops import ModelShape, VisualWork


@dataclass(frozen=True)
class VisionBlockParts:
    """The sub-modules of a pre-norm vision block ``h = x + attention(norm1(x)); out = h + mlp(pre_mlp_norm(h))``."""

    attention: nn.Module  # called with keyword arguments hidden_states, attention_mask
    pre_mlp_norm: nn.Module  # its input is h, the hidden states between the attention residual and the MLP
    mlp: nn.Module


class ModelAdapter(ABC):
    """Per-architecture boundary between mmaccel and a Hugging Face vision-language model."""

    name: ClassVar[str] = ""
    model_classes: ClassVar[tuple[str, ...]] = ()  # class names of the supported top-level models

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    # -- language model ---------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def base_model(self) -> nn.Module:
        """The module whose forward receives input_ids, masks, positions, cache and visual inputs."""

    @property
    @abstractmethod
    def text_config(self) -> Any:
        """The language model's config (layers, heads, hidden size, ``pad_token_id``, ``use_cache``)."""

    @abstractmethod
    def text_layers(self) -> nn.ModuleList:
        """The language model's decoder layers, in order."""

    def num_text_layers(self) -> int:
        """Decoder layers of the language model."""
        return len(self.text_layers())

    @abstractmethod
    def text_attention(self, layer: int) -> nn.Module:
        """The attention module of decoder layer ``layer`` (its attention function receives post-RoPE q/k)."""

    @abstractmethod
    def rotary_embedding(self, hidden: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) for ``position_ids`` (B, L) (or (3, B, L) on M-RoPE models), as the decoder layers get them."""

    def uses_mrope(self) -> bool:
        """Whether positions are multimodal RoPE rows (t, h, w): (3, B, L) instead of (B, L)."""
        return False

    def rope_positions(self, kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """M-RoPE models: the full prompt's positions (3, B, N) and rope deltas (B, 1), as the model computes them
        from the forward kwargs when the caller passes no position ids."""
        raise NotSupportedError(f"{self.name} models have no multimodal RoPE positions")

    def set_rope_deltas(self, deltas: torch.Tensor) -> None:
        """M-RoPE models: store (B, 1) deltas so that decode calls without position ids continue a rebuilt prompt."""
        raise NotSupportedError(f"{self.name} models have no multimodal RoPE positions")

    # -- vision side --------------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def vision_config(self) -> Any:
        """The vision tower's config."""

    @abstractmethod
    def has_cls_token(self) -> bool:
        """Whether the vision tower prepends a CLS token to the patches (CLIP: yes; SigLIP, Qwen-VL: no)."""

    @abstractmethod
    def tokens_per_image(self) -> int | None:
        """Visual tokens per image entering the language model, or None when it depends on the image."""

    @abstractmethod
    def patch_grid(self) -> tuple[int, int]:
        """(h, w) patch grid of one image's visual tokens."""

    @abstractmethod
    def feature_layer(self) -> nn.Module:
        """The vision block whose output hidden states are the visual features."""

    @abstractmethod
    def feature_attention(self) -> nn.Module:
        """The attention module inside :meth:`feature_layer`."""

    @abstractmethod
    def cls_in_features(self) -> bool:
        """Whether the visual tokens handed to the language model include the CLS token (at index 0)."""

    @abstractmethod
    def reduction_module(self) -> nn.Module | None:
        """The projector: its first input is the (I, P, Dv) vision features of an encoder call; None when the model
        has none separate from its tower (Qwen-VL's merger)."""

    def scores_without_cls(self) -> bool:
        """Whether a tower without CLS token provides the attention each token receives (from a full-attention
        block) in place of CLS attention, for methods that score by CLS attention."""
        return False

    @abstractmethod
    def encode_images(self, inputs: dict[str, Any]) -> Any:
        """Run the model's own image encoder on ``inputs`` (pixel values and related keys); returns its output."""

    def encode_videos(self, inputs: dict[str, Any]) -> Any:
        """Run the model's own video encoder on ``inputs``; returns its output (one (P_i, D) tensor per video)."""
        raise NotSupportedError(f"{self.name} models take no video input")

    image_input_keys: ClassVar[tuple[str, ...]] = ("pixel_values",)
    video_input_keys: ClassVar[tuple[str, ...]] = ()  # raw video inputs the encoder consumes (popped after encoding)
    per_token_keys: ClassVar[tuple[str, ...]] = ()  # (B, N) forward kwargs shrunk along with input_ids

    # -- vision tower blocks (methods acting inside the tower) ---------------------------------------------------
    def vision_blocks(self) -> nn.ModuleList:
        """The vision tower's transformer blocks, in order."""
        raise NotSupportedError(f"methods inside the vision tower are not supported on {self.name} models")

    def vision_block_parts(self, block: int) -> VisionBlockParts:
        """The attention, pre-MLP norm and MLP of vision block ``block`` (methods acting between them)."""
        raise NotSupportedError(f"methods inside the vision tower are not supported on {self.name} models")

    def feature_block(self) -> int:
        """Index (>= 0) in :meth:`vision_blocks` of the block whose output is the visual features."""
        raise NotSupportedError(f"methods inside the vision tower are not supported on {self.name} models")

    def tower_unsupported_reason(self) -> str | None:
        """Why methods acting inside the vision tower cannot run on this model, or None when they can.

        Derived from :meth:`vision_blocks` and :meth:`feature_block`: an adapter declares the tower unsupported
        by leaving them to raise ``NotSupportedError`` with its reason.
        """
        try:
            self.vision_blocks()
            self.feature_block()
        except NotSupportedError as error:
            return str(error)
        return None

    @property
    @abstractmethod
    def image_token_id(self) -> int:
        """The placeholder token id of image tokens in ``input_ids``."""

    def visual_token_ids(self) -> dict[str, int]:
        """Placeholder token id of each visual modality the model takes ("image", "video")."""
        return {"image": self.image_token_id}

    # -- the visual site: units of visual tokens and where reductions are written back -------------------------
    tiled: ClassVar[bool] = False  # visual runs hold several tiles/frames plus structural tokens (newlines)

    def tokens_per_tile(self) -> int | None:
        """Visual tokens of one full tile (tiled models): the most an int budget per tile can keep."""
        return None

    def encoder_functions(self) -> dict[str, str]:
        """Modality -> name of the base model's encoder function (``get_image_features``). The engine follows
        these calls (also those ``generate`` makes before the first forward) to learn each item's layout and to
        tie the tower's captures to the features the language model receives."""
        return {"image": "get_image_features"}

    @abstractmethod
    def visual_layouts(self, modality: str, arguments: dict[str, Any], n_items: int) -> list[TileLayout]:
        """One :class:`~mmaccel.models.layout.TileLayout` per item (image or video) of an encoder call.

        ``arguments``: the call's bound arguments (for features passed in from outside a session, the forward's
        keyword arguments, which use the same names); ``n_items``: the items the call returned.
        """

    def reduction_site(self) -> str:
        """Where pre-LLM reductions are written back: ``"projector_input"`` (the (I, P, Dv) tokens entering
        :meth:`reduction_module`, inside the encoder call: only kept or merged tokens are projected; one unit per
        image) or ``"encoder_output"`` (the encoder's per-item output at the language-model call, unit by unit of
        :meth:`visual_layouts`)."""
        return "encoder_output"

    def encoder_features(self, modality: str, output: Any) -> list[torch.Tensor]:
        """The features of an encoder call's ``output``: one (n_i, D) tensor per item."""
        pooled = output.pooler_output
        return list(pooled.unbind(0)) if isinstance(pooled, torch.Tensor) else list(pooled)

    def encoder_output(self, modality: str, features: list[torch.Tensor]) -> Any:
        """An encoder output holding ``features`` (one (n_i, D) tensor per item), as the language model reads
        ``modality``'s features (the inverse of :meth:`encoder_features`)."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        return BaseModelOutputWithPooling(pooler_output=features)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Apply the model's projector to vision features (..., Dv) -> (..., D)."""
        return self.reduction_module()(features)

    # -- packed towers (all items in one sequence of patches) ------------------------------------------------------
    def packed_tower(self) -> bool:
        """Whether the tower runs all items as one packed sequence of patches (Qwen-VL) rather than a batch of
        (T, L) tiles or frames; its captures then come through :meth:`tower`, :meth:`tower_grids`,
        :meth:`merge_size` and :meth:`tower_group_order`."""
        return False

    def tower(self) -> nn.Module:
        """The packed vision tower module (called with the patches and their grids)."""
        raise NotSupportedError(f"{self.name} models have no packed vision tower")

    def tower_grids(self, args: tuple, kwargs: dict[str, Any]) -> torch.Tensor:
        """(items, 3) patch grids (t, h, w) of one call of :meth:`tower` with ``args`` and ``kwargs``."""
        raise NotSupportedError(f"{self.name} models have no packed vision tower")

    def merge_size(self) -> int:
        """Side of the patch groups the packed tower's merger maps to one language-model token (2: 2x2)."""
        raise NotSupportedError(f"{self.name} models have no packed vision tower")

    def tower_group_order(self, grids: torch.Tensor) -> torch.Tensor:
        """(G,) for each merge group in the order the tower blocks hold them, its index among the merged tokens."""
        raise NotSupportedError(f"{self.name} models have no packed vision tower")

    # -- cost accounting ------------------------------------------------------------------------------------------
    def model_shape(self) -> ModelShape:
        """The family's geometry for analytic FLOPs and KV-cache bytes (builders in :mod:`mmaccel.models.shape`)."""
        raise NotSupportedError(f"no FLOPs description for {self.name} models")

    def visual_items(self, inputs: dict[str, Any], modality: str) -> list[VisualWork]:
        """The tower and projector work of every item of ``modality`` in the processed ``inputs`` (tiles, frames,
        patches), in the order the model consumes them; [] when the inputs hold none."""
        raise NotSupportedError(f"no FLOPs description for {self.name} models")

    # -- attention implementation --------------------------------------------------------------------------------
    @abstractmethod
    def attn_implementation(self, part: str) -> str:
        """The attention implementation of ``part`` ("text" or "vision")."""

    @abstractmethod
    def set_attn_implementation(self, part: str, name: str) -> None:
        """Set the attention implementation of ``part`` ("text" or "vision") to the registered ``name``."""


class ComposedModelAdapter(ModelAdapter):
    """The language-model facts shared by the composed ``transformers`` 5 layout of LLaVA and Qwen-VL:
    ``model.model`` holds the vision tower and ``language_model`` (decoder blocks at ``layers``, their rotary tables
    from ``rotary_emb(hidden, position_ids)``), and the top-level config holds ``text_config``."""

    @property
    def base_model(self) -> nn.Module:
        return self.model.model

    @property
    def text_config(self) -> Any:
        return self.model.config.text_config

    def text_layers(self) -> nn.ModuleList:
        return self.model.model.language_model.layers

    def text_attention(self, layer: int) -> nn.Module:
        return self.text_layers()[layer].self_attn

    def rotary_embedding(self, hidden: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # position_ids: (B, L), or (3, B, L) on M-RoPE models
        return self.model.model.language_model.rotary_emb(hidden, position_ids)
