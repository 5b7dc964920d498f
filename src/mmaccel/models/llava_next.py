"""Adapter for ``LlavaNextForConditionalGeneration`` (LLaVA-NeXT / LLaVA-1.6: CLIP tower, anyres tiles)."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import torch

from mmaccel.errors import ConfigError, NotSupportedError
from mmaccel.models.layout import TileLayout, grid_layout_from_coordinates
from mmaccel.models.llava import LlavaAdapter

if TYPE_CHECKING:
    from mmaccel.ops.flops import ModelShape, VisualWork

TOWER_REDUCTION_REASON = (
    "the model reshapes every tile's full patch grid into the anyres layout (and pools video frames on their "
    "full grid) after the vision tower, so tokens cannot be dropped or merged inside the tower"
)


class LlavaNextAdapter(LlavaAdapter):
    """LLaVA-NeXT as ``transformers`` 5.23 builds it: LLaVA-1.5's tower, projector and decoder, with anyres images.

    Facts used (besides :class:`LlavaAdapter`'s): ``get_image_features(pixel_values (I, T, C, H, W),
    image_sizes)`` runs the tower on every image's T tiles (a base tile resized from the whole image, then the
    tiles of the best grid in ``image_grid_pinpoints``), projects each tile's patches, and
    ``pack_image_features`` lays one image out as: the base tile's h x w tokens, then the high-resolution tiles
    joined into one grid, unpadded to the image's aspect ratio, in raster order with ``image_newline`` at the
    end of every row. The number of placeholder tokens per image therefore depends on its size
    (:meth:`tokens_per_image` is None); :meth:`visual_layouts` reproduces the packing by running the model's
    own ``pack_image_features`` on patch coordinates.
    """

    name = "llava_next"
    model_classes = ("LlavaNextForConditionalGeneration",)
    tiled = True

    def tokens_per_image(self) -> int | None:
        return None

    def tokens_per_tile(self) -> int | None:
        height, width = self.patch_grid()
        return height * width

    def feature_block(self) -> int:
        raise NotSupportedError(
            f"methods inside the vision tower are not supported on {self.name}: {TOWER_REDUCTION_REASON}"
        )

    def reduction_site(self) -> str:
        return "encoder_output"  # packing needs every tile's full grid: reduce the packed run, tile by tile

    # -- cost accounting ------------------------------------------------------------------------------------------
    def model_shape(self) -> ModelShape:
        from mmaccel.models.shape import llava_shape

        return llava_shape(self, fixed_resolution=False)

    def visual_items(self, inputs: dict[str, Any], modality: str) -> list[VisualWork]:
        from mmaccel.models.shape import llava_items

        if modality != "image":
            return llava_items(self, inputs, modality, [])
        if inputs.get("pixel_values") is None:
            return []
        if inputs.get("image_sizes") is None:
            raise ConfigError(f"{self.name}: image_sizes is needed to count anyres tiles; pass the processor's")
        return llava_items(self, inputs, modality, self._tiles_per_image(inputs))

    # -- layouts ------------------------------------------------------------------------------------------------
    def _modeling(self):
        return inspect.getmodule(type(self.model))

    def _config_default(self, arguments: dict[str, Any], name: str) -> Any:
        value = arguments.get(name)
        return getattr(self.model.config, name) if value is None else value

    def _tiles_per_image(self, arguments: dict[str, Any]) -> list[int]:
        modeling = self._modeling()
        return [
            modeling.image_size_to_num_patches(
                image_size=size,
                grid_pinpoints=self.model.config.image_grid_pinpoints,
                patch_size=self.vision_config.image_size,
            )
            for size in arguments["image_sizes"]
        ]

    def _pack(self, coordinates: list[torch.Tensor], image_sizes: Any, arguments: dict[str, Any]) -> list:
        newline = torch.zeros(3, dtype=torch.float64)
        packed, _ = self.model.model.pack_image_features(
            coordinates,
            image_sizes,
            vision_feature_select_strategy=self._config_default(arguments, "vision_feature_select_strategy"),
            image_newline=newline,
        )
        return packed

    def visual_layouts(self, modality: str, arguments: dict[str, Any], n_items: int) -> list[TileLayout]:
        if modality != "image":
            raise NotSupportedError(f"{self.name} models take no {modality} input")
        if arguments.get("image_sizes") is None:
            raise ConfigError(f"{self.name}: image_sizes is needed to lay out anyres images; pass the processor's")
        height, width = self.patch_grid()
        modeling = self._modeling()
        tiles = self._tiles_per_image(arguments)
        coordinates, grid_shapes = [], []
        for size, n_tiles in zip(arguments["image_sizes"], tiles):
            cols = 1
            if n_tiles > 1:
                _, cols = modeling.get_anyres_image_grid_shape(  # (tile rows, tile columns)
                    size, self.model.config.image_grid_pinpoints, self.vision_config.image_size
                )
            coordinates.append(_tile_coordinates(n_tiles, height, width, cols))
            grid_shapes.append(cols)
        packed = self._pack(coordinates, arguments["image_sizes"], arguments)
        return [
            grid_layout_from_coordinates(p.cpu(), height * width, height, width, cols, n_tiles)
            for p, cols, n_tiles in zip(packed, grid_shapes, tiles)
        ]


def _tile_coordinates(n_tiles: int, height: int, width: int, tiles_per_row: int) -> torch.Tensor:
    """(n_tiles, h*w, 3) float64 stand-in features: tile 0 (base) holds (y, x, 1) of each patch; grid tile
    t >= 1 holds (Y, X, 1), the patch's row and column in the grid of high-resolution tiles."""
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    y, x = y.flatten().double(), x.flatten().double()
    ones = torch.ones_like(y)
    tiles = [torch.stack([y, x, ones], dim=-1)]
    for t in range(n_tiles - 1):
        tile_row, tile_col = divmod(t, tiles_per_row)
        tiles.append(torch.stack([y + tile_row * height, x + tile_col * width, ones], dim=-1))
    return torch.stack(tiles)
