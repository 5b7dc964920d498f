"""The yes/no suites: ``shapes-mme`` (MME's release folders) and ``shapes-pope`` (POPE's three split files).

MME: five perception subtasks the shapes world supports (existence, count, position, color, OCR); every image
has one question whose answer is Yes and one whose answer is No, written as MME's ``<image>.txt`` files
(``question Please answer yes or no.<TAB>Yes``, then the No line). POPE: every image holds at least three
objects; the same three present objects are asked about in all three splits (label yes), and each split adds
three absent objects (label no) chosen by its own rule, questions alternating yes/no per image, as POPE builds
its COCO splits. POPE ranks absent objects by frequency (popular) or by co-occurrence with the present ones
(adversarial); the shapes world draws all 18 (colour, shape) objects uniformly, so those rankings would be
random, and the world's own difficulty rules stand in for them (:func:`~.common.absent_pools`): popular objects
share one attribute with a present object, adversarial ones combine a present colour with a present shape. When
an image has fewer than three such objects the next easier rule fills in, as POPE falls back to the next object.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmaccel.eval.benchmarks.pope import SPLITS
from mmaccel.toy.font import CHARACTERS
from mmaccel.toy.suites.common import absent_pools, draw, item_rng, pick, save_image, write_jsonl
from mmaccel.toy.world import COLOR_NAMES, GRID, Scene

__all__ = ["MME_SUBTASKS", "MMEItem", "POPEItem", "mme_items", "pope_items", "write_mme", "write_pope"]

MME_SUBTASKS = ("existence", "count", "position", "color", "OCR")  # MME's perception names, in its order
MME_SUFFIX = " Please answer yes or no."
POPE_FALLBACK = {"random": ("random",), "popular": ("popular", "random"),
                 "adversarial": ("adversarial", "popular", "random")}  # fmt: skip
POPE_OBJECTS_PER_IMAGE = 3


@dataclass(frozen=True)
class MMEItem:
    """One MME image: its subtask, the scene and the (Yes question, No question) pair."""

    category: str
    scene: Scene
    yes: str
    no: str


def _existence(scene: Scene, rng: np.random.Generator) -> tuple[str, str] | None:
    present = pick(rng, [(item.color, item.shape) for item in scene.objects])
    absent = pick(rng, absent_pools(scene)["random"])
    return tuple(f"Is there a {color} {shape} in the image?" for color, shape in (present, absent))


def _count_question(count: int, singular: str, plural: str) -> str:
    if count == 1:
        return f"Is there 1 {singular} in the image?"
    return f"Are there {count} {plural} in the image?"


def _count(scene: Scene, rng: np.random.Generator) -> tuple[str, str] | None:
    target = pick(rng, ["all", "shape", "color"])
    if target == "all":
        count, singular, plural = len(scene.objects), "shape", "shapes"
    elif target == "shape":
        shape = pick(rng, [item.shape for item in scene.objects])
        count, singular, plural = len(scene.find(shape=shape)), shape, shape + "s"
    else:
        color = pick(rng, [item.color for item in scene.objects])
        count, singular, plural = len(scene.find(color=color)), f"{color} shape", f"{color} shapes"
    wrong = pick(rng, [value for value in (count - 1, count + 1) if 1 <= value <= 5])
    return _count_question(count, singular, plural), _count_question(wrong, singular, plural)


def _position(scene: Scene, rng: np.random.Generator) -> tuple[str, str] | None:
    item = pick(rng, list(scene.objects))
    if rng.random() < 0.5:
        sides = ("left", "right") if item.col < GRID // 2 else ("right", "left")
        return tuple(f"Is the {item.name} on the {side} of the image?" for side in sides)
    sides = ("top", "bottom") if item.row < GRID // 2 else ("bottom", "top")
    return tuple(f"Is the {item.name} at the {side} of the image?" for side in sides)


def _color(scene: Scene, rng: np.random.Generator) -> tuple[str, str] | None:
    unique = [item for item in scene.objects if len(scene.find(shape=item.shape)) == 1]
    if not unique:
        return None
    item = pick(rng, unique)
    wrong = pick(rng, [color for color in COLOR_NAMES if color != item.color])
    return tuple(f"Is the {item.shape} in the image {color}?" for color in (item.color, wrong))


def _ocr(scene: Scene, rng: np.random.Generator) -> tuple[str, str] | None:
    if scene.sign is None:
        return None
    text = scene.sign.text
    position = int(rng.integers(0, len(text)))
    other = pick(rng, [character for character in CHARACTERS if character != text[position]])
    wrong = text[:position] + other + text[position + 1 :]
    return tuple(f'Is the text on the sign "{value}"?' for value in (text, wrong))


# MME subtask -> (scene, rng) -> (question whose answer is yes, question whose answer is no), or None
MME_QUESTIONS = {"existence": _existence, "count": _count, "position": _position, "color": _color, "OCR": _ocr}


def mme_items(suite_number: int, per_subtask: int) -> list[MMEItem]:
    """``per_subtask`` images for each of :data:`MME_SUBTASKS`; item ``i`` of subtask ``k`` uses
    ``item_rng(suite_number, k, i)``."""
    items = []
    for k, category in enumerate(MME_SUBTASKS):
        for index in range(per_subtask):
            rng = item_rng(suite_number, k, index)
            sign = 1.0 if category == "OCR" else 0.5
            scene, (yes, no) = draw(rng, MME_QUESTIONS[category], sign_probability=sign)
            items.append(MMEItem(category, scene, yes, no))
    return items


def write_mme(root: Path, suite_number: int, per_subtask: int) -> dict[str, Any]:
    """``MME_Benchmark_release_version/<subtask>/<NNNN>.png`` + ``<NNNN>.txt`` (MME's flat subtask layout)."""
    items = mme_items(suite_number, per_subtask)
    release = root / "MME_Benchmark_release_version"
    for index, item in enumerate(items):
        stem = release / item.category / f"{index % per_subtask:04d}"
        save_image(item.scene, stem.with_suffix(".png"))
        lines = f"{item.yes}{MME_SUFFIX}\tYes\n{item.no}{MME_SUFFIX}\tNo\n"
        stem.with_suffix(".txt").write_text(lines, encoding="utf-8")
    return {"subtasks": list(MME_SUBTASKS), "images": len(items), "questions": 2 * len(items)}


@dataclass(frozen=True)
class POPEItem:
    """One POPE image: three present objects and, per split, three absent ones (``(colour, shape)`` pairs)."""

    scene: Scene
    positives: tuple[tuple[str, str], ...]
    negatives: dict[str, tuple[tuple[str, str], ...]]
    fallbacks: dict[str, int]  # per split: absent objects taken from an easier rule


def _pope_negatives(scene: Scene, split: str, rng: np.random.Generator) -> tuple[tuple, int]:
    pools = absent_pools(scene)
    chosen: list[tuple[str, str]] = []
    fallbacks = 0
    for level, rule in enumerate(POPE_FALLBACK[split]):
        candidates = [pair for pair in pools[rule] if pair not in chosen]
        order = rng.permutation(len(candidates))
        for index in order[: POPE_OBJECTS_PER_IMAGE - len(chosen)]:
            chosen.append(candidates[int(index)])
            fallbacks += int(level > 0)
    return tuple(chosen), fallbacks


def pope_items(suite_number: int, images: int) -> list[POPEItem]:
    """``images`` scenes with at least three objects; image ``i`` uses ``item_rng(suite_number, i)``."""
    items = []
    for index in range(images):
        rng = item_rng(suite_number, index)
        scene, _ = draw(rng, lambda scene, rng: True, min_objects=POPE_OBJECTS_PER_IMAGE)
        present = [(item.color, item.shape) for item in scene.objects]
        positives = tuple(present[int(i)] for i in rng.permutation(len(present))[:POPE_OBJECTS_PER_IMAGE])
        negatives, fallbacks = {}, {}
        for split in SPLITS:
            negatives[split], fallbacks[split] = _pope_negatives(scene, split, rng)
        items.append(POPEItem(scene, positives, negatives, fallbacks))
    return items


def write_pope(root: Path, suite_number: int, images: int) -> dict[str, Any]:
    """``coco/coco_pope_{adversarial,popular,random}.json`` (JSON lines) and ``val2014/<image>.png``."""
    items = pope_items(suite_number, images)
    names = [f"shapes_pope_{index:06d}.png" for index in range(len(items))]
    for item, name in zip(items, names):
        save_image(item.scene, root / "val2014" / name)
    for split in SPLITS:
        rows = []
        for item, name in zip(items, names):
            for positive, negative in zip(item.positives, item.negatives[split]):
                for (color, shape), label in ((positive, "yes"), (negative, "no")):
                    text = f"Is there a {color} {shape} in the image?"
                    rows.append({"question_id": len(rows) + 1, "image": name, "text": text, "label": label})
        write_jsonl(root / "coco" / f"coco_pope_{split}.json", rows)
    fallbacks = {split: sum(item.fallbacks[split] for item in items) for split in SPLITS}
    return {"images": len(items), "questions_per_split": 6 * len(items), "fallback_negatives": fallbacks}
