"""The shapes world: procedural scenes of coloured shapes and lettered signs on a grid, rendered with numpy.

A scene is a 112×112 RGB image split into a 4×4 grid of 28-pixel cells (2×2 vision patches of 14 pixels each).
Every shape sits in its own cell with a random size and offset; colour and shape pairs are unique in a scene.
Some scenes also hold a light sign with one or two dark characters from :mod:`mmaccel.toy.font`. Everything is a
pure function of a ``numpy.random.Generator``, so a seed reproduces a scene exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmaccel.toy.font import CHARACTERS, render_text

IMAGE_SIZE = 112
GRID = 4
CELL = IMAGE_SIZE // GRID  # 28 px
PATCH = 14
PATCHES_PER_SIDE = IMAGE_SIZE // PATCH  # 8
NUM_PATCHES = PATCHES_PER_SIDE**2  # 64

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 235),
    "yellow": (235, 220, 50),
    "purple": (165, 60, 205),
    "cyan": (50, 210, 220),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
CORNERS: dict[str, int] = {"circle": 0, "square": 4, "triangle": 3}
MAX_OBJECTS = 5


@dataclass(frozen=True)
class ToyObject:
    """One shape: its attributes, its grid cell and its pixel box (centre and size)."""

    color: str
    shape: str
    row: int
    col: int
    center_x: float
    center_y: float
    size: int

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class Sign:
    """A light rectangle with ``text`` (one or two characters) in grid cell ``(row, col)``."""

    text: str
    row: int
    col: int
    left: int
    top: int
    width: int
    height: int


@dataclass(frozen=True)
class Scene:
    """A scene description; :func:`render` turns it into pixels, :func:`patch_labels` into per-patch targets."""

    objects: tuple[ToyObject, ...]
    sign: Sign | None
    background: tuple[int, int, int]
    noise_seed: int

    def find(self, color: str | None = None, shape: str | None = None) -> list[ToyObject]:
        """Objects matching the given colour and/or shape."""
        return [
            item
            for item in self.objects
            if (color is None or item.color == color) and (shape is None or item.shape == shape)
        ]


def sample_scene(
    rng: np.random.Generator, min_objects: int = 1, max_objects: int = MAX_OBJECTS, sign_probability: float = 0.5
) -> Scene:
    """Draw a random scene: 1–5 shapes with unique (colour, shape) pairs, and a sign with some probability."""
    num_objects = int(rng.integers(min_objects, max_objects + 1))
    cells = rng.permutation(GRID * GRID)
    pairs = rng.permutation(len(COLOR_NAMES) * len(SHAPES))[:num_objects]
    objects = []
    for cell, pair in zip(cells[:num_objects], pairs):
        row, col = divmod(int(cell), GRID)
        size = int(rng.integers(13, 26))
        slack = (CELL - size) / 2
        center_x = col * CELL + CELL / 2 + float(rng.uniform(-slack, slack))
        center_y = row * CELL + CELL / 2 + float(rng.uniform(-slack, slack))
        color = COLOR_NAMES[int(pair) // len(SHAPES)]
        shape = SHAPES[int(pair) % len(SHAPES)]
        objects.append(ToyObject(color, shape, row, col, center_x, center_y, size))
    sign = None
    if rng.random() < sign_probability:
        row, col = divmod(int(cells[num_objects]), GRID)
        length = 1 if rng.random() < 0.6 else 2
        text = "".join(CHARACTERS[int(index)] for index in rng.integers(0, len(CHARACTERS), size=length))
        width, height = (14, 18) if length == 1 else (26, 18)
        left = col * CELL + int(rng.integers(0, CELL - width + 1))
        top = row * CELL + int(rng.integers(0, CELL - height + 1))
        sign = Sign(text, row, col, left, top, width, height)
    background = tuple(int(value) for value in rng.integers(0, 70, size=3))
    return Scene(tuple(objects), sign, background, int(rng.integers(0, 2**31 - 1)))


def _shape_mask(item: ToyObject) -> np.ndarray:
    """Bool mask ``[IMAGE_SIZE, IMAGE_SIZE]`` of the pixels covered by ``item``."""
    ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] + 0.5
    dx, dy = xs - item.center_x, ys - item.center_y
    half = item.size / 2
    if item.shape == "circle":
        return dx**2 + dy**2 <= half**2
    if item.shape == "square":
        return (np.abs(dx) <= half * 0.85) & (np.abs(dy) <= half * 0.85)
    # upward triangle: apex at the top, base at the bottom
    inside_y = (dy >= -half) & (dy <= half)
    return inside_y & (np.abs(dx) <= (dy + half) / 2)


def _text_mask(sign: Sign) -> np.ndarray:
    """Bool mask ``[IMAGE_SIZE, IMAGE_SIZE]`` of the ink pixels of the sign's text."""
    bitmap = render_text(sign.text, scale=2)
    mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    top = sign.top + (sign.height - bitmap.shape[0]) // 2
    left = sign.left + (sign.width - bitmap.shape[1]) // 2
    mask[top : top + bitmap.shape[0], left : left + bitmap.shape[1]] = bitmap
    return mask


def render(scene: Scene) -> np.ndarray:
    """Render ``scene`` to a uint8 image of shape ``[IMAGE_SIZE, IMAGE_SIZE, 3]``."""
    rng = np.random.default_rng(scene.noise_seed)
    image = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)
    image[:] = scene.background
    for item in scene.objects:
        mask = _shape_mask(item)
        color = np.asarray(COLORS[item.color], dtype=np.float32) + rng.normal(0, 12, size=3)
        image[mask] = color + rng.normal(0, 6, size=(int(mask.sum()), 3))
    if scene.sign is not None:
        sign = scene.sign
        paper = 225 + rng.normal(0, 8, size=3)
        image[sign.top : sign.top + sign.height, sign.left : sign.left + sign.width] = paper
        ink = _text_mask(sign)
        image[ink] = 25 + rng.normal(0, 8, size=3)
    image += rng.normal(0, 10, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class PatchLabels:
    """Per-patch targets in raster order, each of shape ``[NUM_PATCHES]`` (0 means background / none)."""

    color: np.ndarray  # 1 + COLOR_NAMES index
    shape: np.ndarray  # 1 + SHAPES index
    character: np.ndarray  # 1 + CHARACTERS index of the glyph with most ink in the patch
    sign: np.ndarray  # 1 where the patch overlaps the sign


def _patch_sums(mask: np.ndarray) -> np.ndarray:
    """Count pixels of ``mask`` per patch: ``[IMAGE_SIZE, IMAGE_SIZE]`` -> ``[NUM_PATCHES]``."""
    side = PATCHES_PER_SIDE
    return mask.reshape(side, PATCH, side, PATCH).sum(axis=(1, 3)).reshape(-1)


def object_patches(item: ToyObject, min_cover: float = 1 / 8) -> np.ndarray:
    """Bool ``[NUM_PATCHES]``: the patches ``item`` covers by at least ``min_cover``, or its best-covered patch."""
    cover = _patch_sums(_shape_mask(item))
    return cover >= min(min_cover * PATCH * PATCH, cover.max())


def sign_patches(sign: Sign) -> np.ndarray:
    """Bool ``[NUM_PATCHES]``: the patches that hold at least 16 pixels of ``sign``'s box."""
    box = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    box[sign.top : sign.top + sign.height, sign.left : sign.left + sign.width] = True
    return _patch_sums(box) >= 16


def patch_labels(scene: Scene, min_cover: float = 1 / 8) -> PatchLabels:
    """Label each patch with its dominant object if it covers at least ``min_cover`` of the patch."""
    color = np.zeros(NUM_PATCHES, dtype=np.int64)
    shape = np.zeros(NUM_PATCHES, dtype=np.int64)
    best = np.zeros(NUM_PATCHES, dtype=np.int64)
    for item in scene.objects:
        cover = _patch_sums(_shape_mask(item))
        take = (cover >= min_cover * PATCH * PATCH) & (cover > best)
        color[take] = COLOR_NAMES.index(item.color) + 1
        shape[take] = SHAPES.index(item.shape) + 1
        best = np.maximum(best, cover)
    character = np.zeros(NUM_PATCHES, dtype=np.int64)
    sign = np.zeros(NUM_PATCHES, dtype=np.int64)
    if scene.sign is not None:
        s = scene.sign
        sign = sign_patches(s).astype(np.int64)
        ink_best = np.zeros(NUM_PATCHES, dtype=np.int64)
        for position, letter in enumerate(s.text):
            single = Sign(s.text, s.row, s.col, s.left, s.top, s.width, s.height)
            ink = _text_mask(single)
            # keep only the pixels of glyph ``position``: glyphs are 10 px wide with a 2 px gap at scale 2
            left = s.left + (s.width - (12 * len(s.text) - 2)) // 2 + 12 * position
            column_keep = np.zeros(IMAGE_SIZE, dtype=bool)
            column_keep[left : left + 10] = True
            cover = _patch_sums(ink & column_keep[None, :])
            take = (cover >= 4) & (cover > ink_best)
            character[take] = CHARACTERS.index(letter) + 1
            ink_best = np.maximum(ink_best, cover)
    return PatchLabels(color, shape, character, sign)
