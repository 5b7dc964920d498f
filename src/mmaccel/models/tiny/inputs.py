"""Input batches for the tiny models of :mod:`mmaccel.models.tiny.builders`: token ids with placeholder runs of
the right length, attention masks and random pixels, left-padded. Ids follow the builders' conventions; text ids
are drawn from 3..89.
"""

from __future__ import annotations

import torch

from mmaccel.models.tiny.builders import (
    SMALL_LLAVA,
    TINY_IMAGE_TOKEN,
    TINY_QWEN_GRID,
    TINY_QWEN_PATCH,
    TINY_VIDEO_TOKEN,
    TINY_VISION_END,
    TINY_VISION_START,
)

PAD, BOS, EOS = 0, 1, 2
IMAGE_SIZE, PATCH = SMALL_LLAVA["image_size"], SMALL_LLAVA["patch_size"]
TOKENS_PER_IMAGE = (IMAGE_SIZE // PATCH) ** 2  # 16 patches (+ CLS inside the tower) of a SMALL_LLAVA image
GENERATE_KWARGS = {"do_sample": False, "suppress_tokens": [TINY_IMAGE_TOKEN], "pad_token_id": PAD}


def tiny_inputs(model, batch: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch of prompts ``<s> text <image tokens> text`` with random pixels for ``tiny_llava`` models."""
    generator = torch.Generator().manual_seed(seed)
    n_image = model.config.image_seq_length
    size = model.config.vision_config.image_size
    rows = []
    for _ in range(batch):
        before = torch.randint(3, 90, (4,), generator=generator)
        after = torch.randint(3, 90, (8,), generator=generator)
        rows.append(torch.cat([torch.tensor([1]), before, torch.full((n_image,), TINY_IMAGE_TOKEN), after]))
    return {"input_ids": torch.stack(rows), "pixel_values": torch.randn(batch, 3, size, size, generator=generator)}


def qwen_patches(grid: tuple[int, int, int], generator: torch.Generator | None = None) -> torch.Tensor:
    """Random flattened patches of an image or video of ``grid`` = (t, h, w) patches: (t * h * w, 3 * 2 * 14 * 14)."""
    t, h, w = grid
    return torch.randn(t * h * w, 3 * 2 * TINY_QWEN_PATCH**2, generator=generator)


def qwen_visual_run(token: int, grid: tuple[int, int, int]) -> torch.Tensor:
    """``<vision_start>`` + one placeholder per language-model token of ``grid`` + ``<vision_end>``."""
    t, h, w = grid
    placeholders = torch.full((t * h * w // 4,), token)
    return torch.cat([torch.tensor([TINY_VISION_START]), placeholders, torch.tensor([TINY_VISION_END])])


def tiny_qwen_inputs(
    model=None,
    batch: int = 1,
    seed: int = 0,
    grids: list[tuple[int, int, int]] | None = None,
    video_grid: tuple[int, int, int] | None = None,
    images_per_row: int = 1,
) -> dict[str, torch.Tensor]:
    """A left-padded batch ``<s> text <vision_start> image <vision_end> [video] text`` for tiny Qwen models.

    ``grids``: the (t, h, w) patch grid of each row's images (default ``TINY_QWEN_GRID`` for every row); rows get
    different text lengths, so a batch is padded. ``images_per_row`` images per row, separated by a text token.
    ``video_grid`` adds a video (2 frames per temporal patch) after each row's images. Returns input_ids,
    attention_mask, pixel_values, image_grid_thw and mm_token_type_ids (0 text, 1 image, 2 video), plus
    pixel_values_videos and video_grid_thw with a video. ``model`` is accepted for symmetry with other builders
    and not read.
    """
    generator = torch.Generator().manual_seed(seed)
    grids = grids or [TINY_QWEN_GRID] * batch
    if len(grids) != batch:
        raise ValueError(f"grids has {len(grids)} entries for a batch of {batch}")
    rows = []
    for row, grid in enumerate(grids):
        before = torch.randint(3, 90, (2 + 3 * row,), generator=generator)
        after = torch.randint(3, 90, (5 + row,), generator=generator)
        parts = [torch.tensor([1]), before, qwen_visual_run(TINY_IMAGE_TOKEN, grid)]
        for _ in range(images_per_row - 1):
            parts += [torch.randint(3, 90, (1,), generator=generator), qwen_visual_run(TINY_IMAGE_TOKEN, grid)]
        if video_grid is not None:
            parts += [torch.randint(3, 90, (1,), generator=generator), qwen_visual_run(TINY_VIDEO_TOKEN, video_grid)]
        rows.append(torch.cat([*parts, after]))
    length = max(r.numel() for r in rows)
    input_ids = torch.zeros(batch, length, dtype=torch.long)
    attention_mask = torch.zeros(batch, length, dtype=torch.long)
    for b, r in enumerate(rows):
        input_ids[b, length - r.numel() :] = r
        attention_mask[b, length - r.numel() :] = 1
    mm_token_type_ids = (input_ids == TINY_IMAGE_TOKEN).int() + 2 * (input_ids == TINY_VIDEO_TOKEN).int()
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values": torch.cat([qwen_patches(g, generator) for g in grids for _ in range(images_per_row)]),
        "image_grid_thw": torch.tensor([g for g in grids for _ in range(images_per_row)]),
        "mm_token_type_ids": mm_token_type_ids,
    }
    if video_grid is not None:
        inputs["pixel_values_videos"] = torch.cat([qwen_patches(video_grid, generator) for _ in range(batch)])
        inputs["video_grid_thw"] = torch.tensor([video_grid] * batch)
    return inputs


def tiny_tiled_inputs(
    model,
    image_sizes: list[list[tuple[int, int]]],
    videos: list[int] | None = None,
    text_before: list[int] | None = None,
    text_after: list[int] | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A left-padded batch for ``tiny_llava_next`` / ``tiny_llava_onevision``: row b holds BOS, text, its images
    (``image_sizes[b]``, (height, width) in pixels, one placeholder run each, separated by a text token), then
    ``videos[b]`` frames of video (OneVision; 0 for none), then text.

    Returns input_ids, attention_mask, and when used pixel_values (images, max tiles, 3, S, S) zero-padded past
    each image's tiles, image_sizes (images, 2), pixel_values_videos (rows with video, frames, 3, S, S). The
    placeholder count of each image is the model's own (its ``get_image_features`` on the same sizes).
    """
    import importlib

    generator = torch.Generator().manual_seed(seed)
    batch = len(image_sizes)
    videos = videos or [0] * batch
    text_before = text_before or [3] * batch
    text_after = text_after or [5] * batch
    size = model.config.vision_config.image_size
    flat_sizes = [s for row in image_sizes for s in row]
    image_runs: list[int] = []
    pixel_values = None
    if flat_sizes:
        sizes = torch.tensor(flat_sizes)
        modeling = importlib.import_module(type(model).__module__)
        tiles = [modeling.image_size_to_num_patches(s, model.config.image_grid_pinpoints, size) for s in flat_sizes]
        pixel_values = torch.zeros(len(flat_sizes), max(tiles), 3, size, size)
        for i, n in enumerate(tiles):
            pixel_values[i, :n] = torch.randn(n, 3, size, size, generator=generator)
        with torch.no_grad():
            features = model.model.get_image_features(pixel_values=pixel_values, image_sizes=sizes).pooler_output
        image_runs = [f.shape[0] for f in features]
    frames = max(videos)
    if frames and any(n not in (0, frames) for n in videos):
        raise ValueError(f"videos={videos}: every row with a video must have the same number of frames")
    patches = size // model.config.vision_config.patch_size
    video_run = frames * ((patches + 1) // 2) ** 2 + 1  # frames pooled 2x2, then one newline
    rows, image = [], 0
    for b in range(batch):
        parts = [torch.tensor([1]), torch.randint(3, 90, (text_before[b],), generator=generator)]
        for i in range(len(image_sizes[b])):
            if i:
                parts.append(torch.randint(3, 90, (1,), generator=generator))
            parts.append(torch.full((image_runs[image],), TINY_IMAGE_TOKEN))
            image += 1
        if videos[b]:
            parts.append(torch.full((video_run,), TINY_VIDEO_TOKEN))
        parts.append(torch.randint(3, 90, (text_after[b],), generator=generator))
        rows.append(torch.cat(parts))
    length = max(r.numel() for r in rows)
    input_ids = torch.zeros(batch, length, dtype=torch.long)
    attention_mask = torch.zeros(batch, length, dtype=torch.long)
    for b, row in enumerate(rows):
        input_ids[b, length - row.numel() :] = row
        attention_mask[b, length - row.numel() :] = 1
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if pixel_values is not None:
        inputs["pixel_values"] = pixel_values
        inputs["image_sizes"] = torch.tensor(flat_sizes)
    if frames:
        with_video = sum(1 for n in videos if n)
        inputs["pixel_values_videos"] = torch.randn(with_video, frames, 3, size, size, generator=generator)
    return inputs


def prompt_ids(n_images: int = 1, text_before: int = 3, text_after: int = 5, strategy: str = "default", seed=0):
    """One ``SMALL_LLAVA`` prompt: BOS, text, n images (placeholder runs separated by a text token), text."""
    generator = torch.Generator().manual_seed(seed)
    per_image = TOKENS_PER_IMAGE + (1 if strategy == "full" else 0)
    parts = [torch.tensor([BOS]), torch.randint(3, 90, (text_before,), generator=generator)]
    for i in range(n_images):
        if i:
            parts.append(torch.randint(3, 90, (1,), generator=generator))
        parts.append(torch.full((per_image,), TINY_IMAGE_TOKEN))
    parts.append(torch.randint(3, 90, (text_after,), generator=generator))
    return torch.cat(parts)


def batch_inputs(prompts: list[torch.Tensor], n_images: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    """Left-padded batch of ``SMALL_LLAVA`` prompts with pixel values for every image of every prompt, in order."""
    length = max(p.numel() for p in prompts)
    input_ids = torch.full((len(prompts), length), PAD)
    attention_mask = torch.zeros((len(prompts), length), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, length - prompt.numel() :] = prompt
        attention_mask[row, length - prompt.numel() :] = 1
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(sum(n_images), 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}


def single_inputs(n_images: int = 1, seed: int = 0, strategy: str = "default", **kwargs) -> dict[str, torch.Tensor]:
    """One ``SMALL_LLAVA`` prompt (:func:`prompt_ids`) with its pixels."""
    return batch_inputs([prompt_ids(n_images, strategy=strategy, seed=seed, **kwargs)], [n_images], seed=seed)
