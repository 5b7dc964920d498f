"""Qwen2-VL / Qwen2.5-VL video inputs built without ``torchvision``.

Hugging Face's Qwen video processor needs ``torchvision``; the PIL image processor does not. A video input is
the image processor's own pipeline applied frame by frame (resize to a multiple of ``patch_size * merge_size``
within the pixel bounds, rescale, normalise), then cut into patches as the video processor cuts them: frames
grouped by ``temporal_patch_size`` (an odd last frame repeated), every group a (h, w) grid of patches in 2x2
merge-group order. The model reads ``pixel_values_videos`` (patches, C * t * p * p) and ``video_grid_thw``
(t, h, w) per video. A clip of ``temporal_patch_size`` identical frames gives exactly the image processor's
patches of that frame (the image processor repeats an image over the temporal patch): tested.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = ["qwen_video_inputs"]


def qwen_video_inputs(videos: list[np.ndarray], image_processor: Any) -> dict[str, torch.Tensor]:
    """``videos``: per video, uint8 frames (T, H, W, 3). ``image_processor``: the checkpoint's Qwen2-VL image
    processor (its patch, merge and temporal sizes, pixel bounds, mean and std are used).

    Returns ``pixel_values_videos`` (sum of patches, C * t * p * p) float32 and ``video_grid_thw`` (V, 3) long.
    """
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    patch, merge = image_processor.patch_size, image_processor.merge_size
    temporal = image_processor.temporal_patch_size
    size = image_processor.size
    mean = np.asarray(image_processor.image_mean, dtype=np.float32)[:, None, None]
    std = np.asarray(image_processor.image_std, dtype=np.float32)[:, None, None]
    patches, grids = [], []
    for number, frames in enumerate(videos):
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"video {number}: expected uint8 frames (T, H, W, 3), got {frames.dtype} {frames.shape}")
        height, width = smart_resize(
            frames.shape[1], frames.shape[2], factor=patch * merge, min_pixels=size.shortest_edge,
            max_pixels=size.longest_edge,
        )  # fmt: skip
        resized = [
            np.asarray(Image.fromarray(frame).resize((width, height), resample=image_processor.resample))
            if frame.shape[:2] != (height, width)
            else frame
            for frame in frames
        ]
        pixels = np.stack(resized).astype(np.float32).transpose(0, 3, 1, 2)  # (T, C, H, W)
        pixels = (pixels * image_processor.rescale_factor - mean) / std
        if pad := -len(pixels) % temporal:
            pixels = np.concatenate([pixels, np.repeat(pixels[-1:], pad, axis=0)])
        video = torch.from_numpy(pixels)
        grid_t, grid_h, grid_w = video.shape[0] // temporal, height // patch, width // patch
        channels = video.shape[1]
        video = video.view(grid_t, temporal, channels, grid_h // merge, merge, patch, grid_w // merge, merge, patch)
        video = video.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # (t, h/m, w/m, m, m, C, temporal, p, p)
        patches.append(video.reshape(grid_t * grid_h * grid_w, channels * temporal * patch * patch))
        grids.append((grid_t, grid_h, grid_w))
    return {"pixel_values_videos": torch.cat(patches), "video_grid_thw": torch.tensor(grids, dtype=torch.long)}
