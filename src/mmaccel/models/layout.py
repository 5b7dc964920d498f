"""Visual layouts: how one image's (or video's) placeholder run is made of units (tiles, frames, frame groups).

Every family describes each visual item it hands the language model by a :class:`TileLayout`: LLaVA-1.5 an
image of one unit (its patch grid); Qwen2-VL / Qwen2.5-VL an image of one unit and a video of one unit per
temporal patch group, each the merged (h/2, w/2) grid.

Tiled models (LLaVA-NeXT "anyres", LLaVA-OneVision images and video) hand the language model a run of visual
tokens that is not one patch grid: a base tile, then the unpadded grid of high-resolution tiles with an
``image_newline`` token at the end of every row (images); or every frame's pooled grid, then one newline
(video). A :class:`TileLayout` says, for every token of such a run, which unit (tile or frame) it belongs to
and which tower patches it was computed from, so that scores captured in the vision tower (per tile or frame)
can be read for it, and budgets can apply per unit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class TileLayout:
    """Token structure of one image's (or video's) placeholder run of ``n`` tokens.

    ``unit`` (n,) long: the tower tile (image) or frame (video) each token comes from, numbered within the image
    in tower order; -1 for a structural token (``image_newline``), which stands for no patch.
    ``patches`` (n, k) long: the tower patches (indices into the unit's h x w patch grid, -1 padded) whose
    captures (attention scores, keys) are averaged for the token: one patch for a tile token, the pooling
    window for a pooled video token.
    ``grids``: unit -> (rows, cols) of that unit's tokens, in the order they appear in the run (raster order).
    ``tower_units``: tiles or frames the vision tower ran for this image (a tile may contribute no token when
    unpadding removes it entirely).
    ``frames``: unit -> frame (temporal index) of a video's units; empty for images (every unit is frame 0).
    """

    unit: torch.Tensor
    patches: torch.Tensor
    grids: dict[int, tuple[int, int]]
    tower_units: int
    frames: dict[int, int] = field(default_factory=dict)
    visual: int | None = None  # tokens that stand for patches, when the builder knows it (saves a host read)
    sizes: list[int] | None = None  # tokens of each unit of ``grids``, when the builder knows it
    _positions: dict[int, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)  # cache

    @property
    def n_tokens(self) -> int:
        return self.unit.numel()

    @property
    def structural(self) -> torch.Tensor:
        """(n,) bool: tokens that stand for no patch (newlines)."""
        return self.unit < 0

    @property
    def n_visual(self) -> int:
        """Tokens that stand for patches (the budgeted ones)."""
        if self.visual is None:
            self.visual = int((self.unit >= 0).sum())
        return self.visual

    def unit_sizes(self) -> list[int]:
        """Tokens of each unit, in the order of ``grids`` (structural tokens belong to none)."""
        if self.sizes is None:
            counts = torch.bincount(self.unit[self.unit >= 0], minlength=max(self.grids, default=-1) + 1).tolist()
            self.sizes = [counts[unit] for unit in self.grids]
        return self.sizes

    def frame_of(self, labels: torch.Tensor) -> torch.Tensor:
        """(n',) frame of each token given its unit ``labels`` (n',); -1 for structural tokens."""
        if not self.frames:
            return torch.where(labels >= 0, 0, -1)
        table = torch.full((max(self.frames) + 1,), -1, dtype=torch.long, device=labels.device)
        table[list(self.frames)] = torch.tensor(list(self.frames.values()), device=labels.device)
        return torch.where(labels >= 0, table[labels.clamp(min=0)], -1)

    def positions(self, unit: int) -> torch.Tensor:
        """(n_u,) positions of ``unit``'s tokens in the run, in raster order (computed once per layout: the
        engine reads them at every prefill, and a family's items often share one layout)."""
        if unit not in self._positions:
            self._positions[unit] = torch.nonzero(self.unit == unit).flatten()
        return self._positions[unit]


def grid_layout_from_coordinates(
    packed: torch.Tensor, base_tokens: int, tile_height: int, tile_width: int, tiles_per_row: int, n_tiles: int
) -> TileLayout:
    """Layout of an anyres image from the model's own packing run on coordinates.

    ``packed`` (n, 3) float: what the model's packing function returns when every tile's feature of patch
    (y, x) is the vector (Y, X, 1), with (Y, X) the patch's row and column in the full grid of high-resolution
    tiles ((y, x) itself for the base tile), and the newline vector is (0, 0, 0). Unpadding crops this grid,
    interpolation (LLaVA-OneVision's ``anyres_max``) blends it; the rounded coordinates give each token's
    nearest patch. The first ``base_tokens`` tokens are the base tile's (tile 0).
    """
    n = packed.shape[0]
    unit = torch.full((n,), -1, dtype=torch.long)
    patch = torch.full((n,), -1, dtype=torch.long)
    real = packed[:, 2] > 0.5
    y = packed[:, 0].round().long()
    x = packed[:, 1].round().long()
    base = torch.arange(n) < base_tokens
    unit[base] = 0
    patch[base] = y[base] * tile_width + x[base]
    grid = real & ~base
    unit[grid] = 1 + (y[grid] // tile_height) * tiles_per_row + x[grid] // tile_width
    patch[grid] = (y[grid] % tile_height) * tile_width + x[grid] % tile_width
    grids = {0: (tile_height, tile_width)} if base_tokens else {}
    rows = _rows(real, base_tokens)
    for u in unit[grid].unique().tolist():
        members = unit == u
        grids[u] = (int(rows[members].unique().numel()), int(members.sum()) // int(rows[members].unique().numel()))
    return TileLayout(unit=unit, patches=patch[:, None], grids=grids, tower_units=n_tiles)


def _rows(real: torch.Tensor, base_tokens: int) -> torch.Tensor:
    """(n,) row number of each token of the grid part (newlines end rows); -1 for the base tile."""
    newline = ~real
    newline[:base_tokens] = False
    rows = torch.cumsum(newline.long(), 0) - newline.long()  # a newline belongs to the row it ends
    rows[:base_tokens] = -1
    return rows


def pooled_frame_layout(
    n_frames: int, height: int, width: int, pooled: tuple[int, int], newline: bool = True
) -> TileLayout:
    """Layout of a video whose frames' (height x width) patch grids were pooled to ``pooled`` = (h', w') tokens
    each, frame after frame, then one newline token. Pooled token (i, j) reads the patches of its adaptive
    pooling window: rows floor(i h / h') .. ceil((i + 1) h / h') - 1, the same for columns."""
    pooled_h, pooled_w = pooled
    windows = []
    for i in range(pooled_h):
        rows = range(i * height // pooled_h, -((-(i + 1) * height) // pooled_h))
        for j in range(pooled_w):
            cols = range(j * width // pooled_w, -((-(j + 1) * width) // pooled_w))
            windows.append([r * width + c for r in rows for c in cols])
    k = max(len(w) for w in windows)
    frame = torch.tensor([w + [-1] * (k - len(w)) for w in windows], dtype=torch.long)  # (h' w', k)
    per_frame = pooled_h * pooled_w
    unit = torch.arange(n_frames).repeat_interleave(per_frame)
    patches = frame.repeat(n_frames, 1)
    if newline:
        unit = torch.cat([unit, unit.new_full((1,), -1)])
        patches = torch.cat([patches, patches.new_full((1, k), -1)])
    return TileLayout(
        unit=unit,
        patches=patches,
        grids=dict.fromkeys(range(n_frames), pooled),
        tower_units=n_frames,
        frames={f: f for f in range(n_frames)},
        visual=n_frames * per_frame,
        sizes=[per_frame] * n_frames,
    )


def grid_layout(height: int, width: int, extra_first: int = 0) -> TileLayout:
    """Layout of an image of one unit, its (height x width) patch grid in raster order.

    ``extra_first`` tokens (a CLS token the model hands on) precede the grid; they belong to the unit but stand
    for no patch.
    """
    n = extra_first + height * width
    patches = torch.arange(n, dtype=torch.long) - extra_first
    return TileLayout(
        unit=torch.zeros(n, dtype=torch.long),
        patches=patches[:, None],
        grids={0: (height, width)},
        tower_units=1,
        visual=n,
        sizes=[n],
    )


def frame_groups_layout(groups: int, height: int, width: int, video: bool) -> TileLayout:
    """Layout of an item of ``groups`` temporal groups, each a (height x width) token grid, group after group.

    Every group is one unit; a video's group g is frame g (its temporal index), an image has one group.
    """
    per_group = height * width
    unit = torch.arange(groups).repeat_interleave(per_group)
    patches = torch.arange(per_group).repeat(groups)[:, None]
    return TileLayout(
        unit=unit,
        patches=patches,
        grids=dict.fromkeys(range(groups), (height, width)),
        tower_units=groups,
        frames={g: g for g in range(groups)} if video else {},
        visual=groups * per_group,
        sizes=[per_group] * groups,
    )
