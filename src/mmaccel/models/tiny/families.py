"""The tiny model families as the parametrised test suites see them: a builder and a prompt builder each.

:data:`FAMILIES` holds one :class:`TinyFamily` per family (plus the SigLIP variant of LLaVA): rows of prompts
with images of one size, so that a batch row equals the same row built alone. :data:`TILED_FAMILIES` holds the
anyres families with prompts of several image sizes (tiles cut by unpadding; OneVision also a video), for the
tiled contract and position tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from mmaccel.models.tiny.builders import (
    SMALL_LLAVA,
    TINY_IMAGE_TOKEN,
    TINY_VIDEO_TOKEN,
    TINY_VISION_END,
    TINY_VISION_START,
    siglip_llava,
    tiny_llava,
    tiny_llava_next,
    tiny_llava_onevision,
    tiny_qwen2_5_vl,
    tiny_qwen2_vl,
)
from mmaccel.models.tiny.inputs import BOS, PAD, tiny_tiled_inputs

Rows = list[tuple[int, int]]  # one (images, seed) per prompt of a batch
TEST_MROPE_SECTION = (2, 3, 3)  # the family suites' Qwen decoders: head dim 16 split (t, h, w)


@dataclass(frozen=True)
class TinyFamily:
    """A family's tiny model and prompts. ``build(attn=, seed=)`` makes the model; ``inputs(model, rows)`` makes a
    left-padded batch, one prompt per ``(images, seed)`` row, every image of one size, so that a batch row equals
    the same row built alone. ``adapter`` is the adapter that must be registered for the family to run."""

    adapter: str
    build: Callable[..., Any]
    inputs: Callable[[Any, Rows], dict[str, torch.Tensor]]


def budget_units(model, family: TinyFamily, inputs: dict[str, torch.Tensor]) -> list[list[int]]:
    """Per visual item of ``inputs`` (images and videos, in batch and sequence order), the token counts its
    budget applies to separately: the units of the adapter's layouts (an image, an anyres tile, a video frame or
    frame group). Tokens outside every unit (anyres newlines) are structural: always kept, not counted."""
    from mmaccel.engine.visual import placed_items
    from mmaccel.models.registry import adapter_for

    return [item.layout.unit_sizes() for item in placed_items(adapter_for(model), inputs)]


def tokens_per_image(model, family: TinyFamily) -> int:
    """Placeholder tokens of one image in ``family``'s prompts (the same for every image)."""
    inputs = family.inputs(model, [(1, 0)])
    return int((inputs["input_ids"] == TINY_IMAGE_TOKEN).sum())


def _batch(rows: list[list[torch.Tensor]], images: list[dict[str, torch.Tensor]], model) -> dict[str, torch.Tensor]:
    """Left-pad prompts (lists of id pieces) and concatenate their images' tensors in order."""
    prompts = [torch.cat(pieces) for pieces in rows]
    length = max(p.numel() for p in prompts)
    input_ids = torch.full((len(prompts), length), PAD)
    attention_mask = torch.zeros((len(prompts), length), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, length - prompt.numel() :] = prompt
        attention_mask[row, length - prompt.numel() :] = 1
    out = {"input_ids": input_ids, "attention_mask": attention_mask}
    keys = dict.fromkeys(key for item in images for key in item)  # images' keys, then videos', in order
    for key in keys:
        out[key] = torch.cat([item[key] for item in images if key in item])
    if "image_grid_thw" in out:  # Qwen: 0 text, 1 image, 2 video (required by get_rope_index)
        out["mm_token_type_ids"] = (input_ids == TINY_IMAGE_TOKEN).int() + 2 * (input_ids == TINY_VIDEO_TOKEN).int()
    return out


def _rows(model, rows: Rows, image_ids: list[int], make_image, video=None) -> dict[str, torch.Tensor]:
    """``video``: (placeholder ids, maker) of one video that closes every row's visual items."""
    pieces, images = [], []
    for n_images, seed in rows:
        generator = torch.Generator().manual_seed(seed)
        before, after = torch.randint(2, 6, (2,), generator=generator).tolist()
        row = [torch.tensor([BOS]), torch.randint(3, 90, (before,), generator=generator)]
        for i in range(n_images):
            if i:
                row.append(torch.randint(3, 90, (1,), generator=generator))
            row.append(torch.tensor(image_ids))
            images.append(make_image(generator))
        if video is not None:
            video_ids, make_video = video
            row += [torch.randint(3, 90, (1,), generator=generator), torch.tensor(video_ids)]
            images.append(make_video(generator))
        row.append(torch.randint(3, 90, (after,), generator=generator))
        pieces.append(row)
    return _batch(pieces, images, model)


def llava_rows(model, rows: Rows) -> dict[str, torch.Tensor]:
    from mmaccel.models.registry import adapter_for

    size = model.config.vision_config.image_size
    n_tokens = adapter_for(model).tokens_per_image()
    return _rows(
        model,
        rows,
        [TINY_IMAGE_TOKEN] * n_tokens,
        lambda generator: {"pixel_values": torch.randn(1, 3, size, size, generator=generator)},
    )


ANYRES_SIZE = (32, 64)  # (height, width) of every LLaVA-NeXT / OneVision test image: base tile + 2 grid tiles


def anyres_rows(model, rows: Rows, video: bool = False) -> dict[str, torch.Tensor]:
    """``video`` (OneVision): a video of ``VIDEO_FRAMES`` frames closes every row."""
    side = model.config.vision_config.image_size
    n_tiles = 1 + (ANYRES_SIZE[0] // side) * (ANYRES_SIZE[1] // side)

    def make_image(generator):
        pixels = torch.randn(1, n_tiles, 3, side, side, generator=generator)
        return {"pixel_values": pixels, "image_sizes": torch.tensor([ANYRES_SIZE])}

    probe = make_image(torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = model.model.get_image_features(**probe).pooler_output
    image_ids = [TINY_IMAGE_TOKEN] * sum(f.shape[0] for f in features)
    if not video:
        return _rows(model, rows, image_ids, make_image)

    def make_video(generator):
        return {"pixel_values_videos": torch.randn(1, VIDEO_FRAMES, 3, side, side, generator=generator)}

    with torch.no_grad():
        n_video = model.model.get_video_features(**make_video(torch.Generator())).pooler_output[0].shape[0]
    return _rows(model, rows, image_ids, make_image, video=([TINY_VIDEO_TOKEN] * n_video, make_video))


VIDEO_FRAMES = 2  # frames of every OneVision test video
QWEN_VIDEO_GRID = (2, 8, 8)  # (t, h, w) patches of every Qwen test video: 2 frame groups of 16 tokens
QWEN_GRID = (1, 8, 8)  # (t, h, w) patches of every Qwen test image: 16 tokens after the 2x2 merge


def qwen_rows(model, rows: Rows, video: bool = False) -> dict[str, torch.Tensor]:
    """``video``: a video of grid ``QWEN_VIDEO_GRID`` closes every row."""
    vision = model.config.vision_config
    n_patches = QWEN_GRID[0] * QWEN_GRID[1] * QWEN_GRID[2]
    channels = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
    n_tokens = n_patches // vision.spatial_merge_size**2

    def make_image(generator):
        pixels = torch.randn(n_patches, channels, generator=generator)
        return {"pixel_values": pixels, "image_grid_thw": torch.tensor([QWEN_GRID])}

    image_ids = [TINY_VISION_START, *[TINY_IMAGE_TOKEN] * n_tokens, TINY_VISION_END]
    if not video:
        return _rows(model, rows, image_ids, make_image)
    video_patches = QWEN_VIDEO_GRID[0] * QWEN_VIDEO_GRID[1] * QWEN_VIDEO_GRID[2]

    def make_video(generator):
        pixels = torch.randn(video_patches, channels, generator=generator)
        return {"pixel_values_videos": pixels, "video_grid_thw": torch.tensor([QWEN_VIDEO_GRID])}

    video_tokens = video_patches // vision.spatial_merge_size**2
    video_ids = [TINY_VISION_START, *[TINY_VIDEO_TOKEN] * video_tokens, TINY_VISION_END]
    return _rows(model, rows, image_ids, make_image, video=(video_ids, make_video))


# Adding a family is one line: its adapter's name, a builder and a prompt builder.
FAMILIES: dict[str, TinyFamily] = {
    "llava": TinyFamily("llava", partial(tiny_llava, **SMALL_LLAVA), llava_rows),
    "siglip_llava": TinyFamily("llava", partial(siglip_llava, layers=4), llava_rows),
    "llava_next": TinyFamily("llava_next", tiny_llava_next, anyres_rows),
    "llava_onevision": TinyFamily("llava_onevision", tiny_llava_onevision, anyres_rows),
    "llava_onevision+video": TinyFamily("llava_onevision", tiny_llava_onevision, partial(anyres_rows, video=True)),
    "qwen2_vl": TinyFamily("qwen2_vl", partial(tiny_qwen2_vl, mrope_section=TEST_MROPE_SECTION), qwen_rows),
    "qwen2_5_vl": TinyFamily(
        "qwen2_5_vl", partial(tiny_qwen2_5_vl, mrope_section=TEST_MROPE_SECTION, vision_depth=2), qwen_rows
    ),
    "qwen2_vl+video": TinyFamily(
        "qwen2_vl", partial(tiny_qwen2_vl, mrope_section=TEST_MROPE_SECTION), partial(qwen_rows, video=True)
    ),
}


def available_families() -> list[str]:
    """The families of :data:`FAMILIES` whose adapter is registered in this version of mmaccel."""
    from mmaccel.models.registry import ADAPTERS

    registered = {adapter.name for adapter in ADAPTERS}
    return [name for name, family in FAMILIES.items() if family.adapter in registered]


# -- anyres families with images of several sizes (and OneVision's video) ------------------------------------------
TILED_GENERATE_KWARGS = {
    "do_sample": False,
    "suppress_tokens": [TINY_IMAGE_TOKEN, TINY_VIDEO_TOKEN],
    "pad_token_id": PAD,
}
TILE_TOKENS = 16  # 4 x 4 patches per 32-pixel tile
TILED_PARTIAL_BUDGET = 6  # tokens kept per tile in the contract tests (of 16)


@dataclass(frozen=True)
class TiledFamily:
    name: str
    build: Callable[..., torch.nn.Module]
    image_sizes: tuple[tuple[int, int], ...]  # one prompt's images, (height, width) pixels
    frames: int  # video frames in the prompt (0: no video)

    def inputs(self, model, rows: int = 1, seed: int = 0, text_before=None, text_after=None):
        """``rows`` prompts with this family's images (and video); row b drops its last b images."""
        sizes = [list(self.image_sizes[: len(self.image_sizes) - b]) for b in range(rows)]
        return tiny_tiled_inputs(
            model,
            sizes,
            videos=[self.frames] * rows if self.frames else None,
            text_before=text_before,
            text_after=text_after,
            seed=seed,
        )

    def unit_sizes(self, model, inputs) -> list[list[int]]:
        """Per image, then per video (in batch order): the patch tokens of each tile or frame."""
        from mmaccel.models.registry import adapter_for

        adapter = adapter_for(model)
        runs = []
        if "image_sizes" in inputs:
            layouts = adapter.visual_layouts(
                "image", {"image_sizes": inputs["image_sizes"]}, len(inputs["image_sizes"])
            )
            runs += [[len(layout.positions(u)) for u in layout.grids] for layout in layouts]
        if "pixel_values_videos" in inputs:
            layouts = adapter.visual_layouts(
                "video", {"pixel_values_videos": inputs["pixel_values_videos"]}, len(inputs["pixel_values_videos"])
            )
            runs += [[len(layout.positions(u)) for u in layout.grids] for layout in layouts]
        return runs


NEXT = TiledFamily("llava_next", tiny_llava_next, ((32, 64), (20, 64)), frames=0)
ONEVISION = TiledFamily("llava_onevision", tiny_llava_onevision, ((64, 32), (32, 32)), frames=2)
TILED_FAMILIES = {family.name: family for family in (NEXT, ONEVISION)}
