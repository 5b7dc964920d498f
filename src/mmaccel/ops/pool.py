"""Spatial pooling of a patch grid down to a token budget."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def pool_grid_shape(height: int, width: int, n_keep: int) -> tuple[int, int]:
    """Output grid (h', w') with h' * w' == n_keep, as close as possible to the input aspect ratio.

    Among the factorisations of ``n_keep`` with h' <= height and w' <= width, pick the one whose aspect ratio
    is closest (in log space) to height / width. A prime ``n_keep`` gives a 1 x n or n x 1 strip.
    """
    best: tuple[float, int, int] | None = None
    target = math.log(height / width)
    for rows in range(1, n_keep + 1):
        if n_keep % rows:
            continue
        cols = n_keep // rows
        if rows > height or cols > width:
            continue
        distance = abs(math.log(rows / cols) - target)
        if best is None or distance < best[0]:
            best = (distance, rows, cols)
    if best is None:
        raise ValueError(f"cannot arrange {n_keep} tokens on a grid inside {height}x{width}")
    return best[1], best[2]


def largest_pool_count(height: int, width: int, n_keep: int) -> int:
    """The largest count <= ``n_keep`` that an output grid inside ``height`` x ``width`` can hold (a prime count
    longer than both sides cannot be a strip: 5 on a 4 x 4 grid gives 4)."""
    for count in range(min(n_keep, height * width), 0, -1):
        if any(count % rows == 0 and count // rows <= width for rows in range(1, min(count, height) + 1)):
            return count
    raise ValueError(f"n_keep={n_keep} must be >= 1")


def pool_grid(features: torch.Tensor, height: int, width: int, n_keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive average pooling of a raster-ordered patch grid to exactly ``n_keep`` tokens.

    features: (I, height * width, D) -> pooled (I, n_keep, D) in raster order of the output grid, and
    groups (height * width,) long: the output token each input patch is averaged into (bins may overlap in
    adaptive pooling; a patch is assigned to the bin that contains its centre).
    """
    n_images, n_tokens, dim = features.shape
    if n_tokens != height * width:
        raise ValueError(f"features have {n_tokens} tokens, expected a {height}x{width} grid")
    out_h, out_w = pool_grid_shape(height, width, n_keep)
    grid = features.transpose(1, 2).reshape(n_images, dim, height, width)  # (I, D, h, w)
    pooled = F.adaptive_avg_pool2d(grid.float(), (out_h, out_w)).to(features.dtype)  # (I, D, h', w')
    pooled = pooled.flatten(2).transpose(1, 2)  # (I, h' * w', D)
    row_bin = (torch.arange(height) * out_h) // height  # (h,)
    col_bin = (torch.arange(width) * out_w) // width  # (w,)
    groups = (row_bin[:, None] * out_w + col_bin[None, :]).flatten().to(features.device)  # (h * w,)
    return pooled, groups
