"""Shared pieces of the synthetic suites: seed streams, scene drawing, image files and JSON writing.

Every item of a suite (an image with its questions) draws from its own generator,
``numpy.random.default_rng([SUITE_SEED, suite_number, *index])``, so a suite of size ``n`` is the first ``n``
items of any larger one and items never depend on each other. The entropy lists are disjoint from the training
draws ``[seed, stage, step]`` of the shipped recipe (seed 0) and from the held-out set ``[20_260_000, type, 0]`` of
:mod:`mmaccel.toy.training.evaluate`, because their first element differs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from mmaccel.toy.world import COLOR_NAMES, SHAPES, Scene, render, sample_scene

__all__ = [
    "SUITE_SEED",
    "absent_pools",
    "draw",
    "item_rng",
    "pick",
    "save_image",
    "write_json",
    "write_jsonl",
]

SUITE_SEED = 20_260_700
JPEG_QUALITY = 95  # with 4:4:4 chroma: mean absolute pixel error about 3, below the render noise (sigma 10)
T = TypeVar("T")


def item_rng(suite_number: int, *index: int) -> np.random.Generator:
    """The generator of one suite item: ``default_rng([SUITE_SEED, suite_number, *index])``."""
    return np.random.default_rng([SUITE_SEED, suite_number, *index])


def draw(
    rng: np.random.Generator,
    ask: Callable[[Scene, np.random.Generator], T | None],
    min_objects: int = 1,
    sign_probability: float = 0.5,
    max_tries: int = 200,
) -> tuple[Scene, T]:
    """Draw scenes from ``rng`` until ``ask(scene, rng)`` returns something; return the scene and that value."""
    for _ in range(max_tries):
        scene = sample_scene(rng, min_objects=min_objects, sign_probability=sign_probability)
        value = ask(scene, rng)
        if value is not None:
            return scene, value
    raise RuntimeError(f"no scene supported {getattr(ask, '__name__', ask)} in {max_tries} tries")


def absent_pools(scene: Scene) -> dict[str, list[tuple[str, str]]]:
    """Absent (colour, shape) objects of ``scene`` by difficulty, as the world's ``exist`` questions define them.

    ``random``: any absent pair; ``popular``: shares exactly one attribute with a present object;
    ``adversarial``: its colour and its shape are both present, but not together.
    """
    present = {(item.color, item.shape) for item in scene.objects}
    colors = {color for color, _ in present}
    shapes = {shape for _, shape in present}
    absent = [(c, s) for c in COLOR_NAMES for s in SHAPES if (c, s) not in present]
    return {
        "random": absent,
        "popular": [(c, s) for c, s in absent if (c in colors) != (s in shapes)],
        "adversarial": [(c, s) for c, s in absent if c in colors and s in shapes],
    }


def pick(rng: np.random.Generator, items: list[T]) -> T:
    return items[int(rng.integers(0, len(items)))]


def save_image(scene: Scene, path: Path) -> None:
    """Render ``scene`` to ``path``: lossless PNG, or JPEG (quality 95, no chroma subsampling) for ``.jpg``.

    JPEG is used only where the real benchmark's loader expects ``.jpg`` names or JPEG bytes. Both encoders are
    deterministic, so a seed reproduces the same bytes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(render(scene))
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    else:
        image.save(path, format="PNG")


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
