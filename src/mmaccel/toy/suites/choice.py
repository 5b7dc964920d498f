"""The multiple-choice suites: ``shapes-mmbench`` (an MMBench TSV) and ``shapes-sqa`` (ScienceQA's JSON files).

MMBench: the world's lettered-option questions (colour, shape, count, sign text; 3 or 4 options), a quarter of
them with a hint, each written as one TSV row per circular rotation of its options: row ``q + k * 1,000,000``
holds the options shifted by ``k`` and the letter that now points to the correct option, as MMBench's
CircularEval files do. The image is embedded as base64 JPEG, as in MMBench's TSVs.

ScienceQA: the world's corner-counting questions (half ``How many corners does the red object have?`` with the
options 0, 3 and 4, half ``Which object has the most corners?`` over 2-3 objects named by colour; the corner facts
as context in 80 % of them) in ``problems.json`` with ``choices``, a 0-based
``answer`` and ``hint``, plus ``pid_splits.json``. Like ScienceQA's test split, it also holds questions without
an image (one per four image questions: which shape has the most or fewest corners), which the ScienceQA-IMG
loader leaves out and which cost nothing to evaluate.
"""

from __future__ import annotations

import base64
import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mmaccel.toy.questions import CORNER_HINT, LETTERS, Question, ask_mc, ask_science, rotate_options
from mmaccel.toy.suites.common import JPEG_QUALITY, draw, item_rng, pick, save_image, write_json
from mmaccel.toy.world import CORNERS, SHAPES, Scene, render

__all__ = ["MMBENCH_CATEGORIES", "MMBenchItem", "ScienceItem", "mmbench_items", "sqa_items", "write_mmbench",
           "write_sqa"]  # fmt: skip

CIRCULAR_STRIDE = 1_000_000
MMBENCH_CATEGORIES = {  # question subtype -> (category, l2-category), MMBench's level-2 names
    "color": ("color_recognition", "finegrained_perception (instance-level)"),
    "shape": ("shape_recognition", "finegrained_perception (instance-level)"),
    "count": ("counting", "finegrained_perception (cross-instance)"),
    "text": ("ocr", "finegrained_perception (instance-level)"),
}
MMBENCH_HINTS = {
    "color": "The shapes come in six colours: red, green, blue, yellow, purple and cyan.",
    "shape": "Every object is a circle, a square or a triangle.",
    "count": "Each shape stands in its own cell of a four by four grid.",
    "text": "Signs show one or two characters, digits or capital letters.",
}
MMBENCH_HINT_PROBABILITY = 0.25
MMBENCH_COLUMNS = ("index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "source",
                   "comment", "split", "image")  # fmt: skip
TEXT_ONLY_EVERY = 4  # one ScienceQA question without an image after every four with one


@dataclass(frozen=True)
class MMBenchItem:
    """One MMBench question (options in pass-0 order) with its scene and optional hint."""

    scene: Scene
    question: Question
    hint: str


def mmbench_items(suite_number: int, questions: int) -> list[MMBenchItem]:
    """Question ``i`` uses ``item_rng(suite_number, i)``."""
    items = []
    for index in range(questions):
        rng = item_rng(suite_number, index)
        scene, question = draw(rng, ask_mc)
        hint = MMBENCH_HINTS[question.subtype] if rng.random() < MMBENCH_HINT_PROBABILITY else ""
        items.append(MMBenchItem(scene, question, hint))
    return items


def _jpeg_base64(scene: Scene) -> str:
    buffer = io.BytesIO()
    Image.fromarray(render(scene)).save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def mmbench_rows(index: int, item: MMBenchItem, image: str) -> list[dict[str, Any]]:
    """The CircularEval rows of question ``index``: one per rotation of its options."""
    category, l2_category = MMBENCH_CATEGORIES[item.question.subtype]
    rows = []
    for shift in range(len(item.question.options)):
        rotated = rotate_options(item.question, shift)
        options = {letter: "nan" for letter in "ABCD"}
        options.update(zip(LETTERS, rotated.options))
        rows.append({
            "index": index + shift * CIRCULAR_STRIDE, "question": rotated.text, "hint": item.hint or "nan",
            **options, "answer": rotated.answer, "category": category, "l2-category": l2_category,
            "source": "shapes", "comment": "nan", "split": "dev", "image": image,
        })  # fmt: skip
    return rows


def write_mmbench(root: Path, suite_number: int, questions: int) -> dict[str, Any]:
    """``shapes_mmbench_dev.tsv``: MMBench's columns, one row per rotation, base64 JPEG images."""
    items = mmbench_items(suite_number, questions)
    root.mkdir(parents=True, exist_ok=True)
    rows = 0
    with (root / "shapes_mmbench_dev.tsv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MMBENCH_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        for index, item in enumerate(items):
            for row in mmbench_rows(index, item, _jpeg_base64(item.scene)):
                writer.writerow(row)
                rows += 1
    return {"questions": len(items), "rows": rows, "hints": sum(1 for item in items if item.hint)}


@dataclass(frozen=True)
class ScienceItem:
    """One ScienceQA problem; ``scene`` is ``None`` for the questions without an image."""

    scene: Scene | None
    question: Question


def _text_only(rng: np.random.Generator) -> Question:
    """``Which shape has the most corners?`` over 2-3 shapes, answerable from the context alone."""
    count = int(rng.integers(2, len(SHAPES) + 1))
    shapes = [SHAPES[int(index)] for index in rng.permutation(len(SHAPES))[:count]]
    subtype = pick(rng, ["most", "fewest"])
    correct = (max if subtype == "most" else min)(shapes, key=CORNERS.__getitem__)
    options = tuple(f"the {shape}" for shape in shapes)
    answer = LETTERS[options.index(f"the {correct}")]
    return Question("science", subtype, f"Which shape has the {subtype} corners?", answer, options, CORNER_HINT)


def sqa_items(suite_number: int, questions: int) -> list[ScienceItem]:
    """``questions`` image problems (problem ``i`` from ``item_rng(suite_number, 0, i)``) and one text-only
    problem (``item_rng(suite_number, 1, j)``) after every :data:`TEXT_ONLY_EVERY` of them."""
    items = []
    for index in range(questions):
        scene, question = draw(item_rng(suite_number, 0, index), ask_science)
        items.append(ScienceItem(scene, question))
        if (index + 1) % TEXT_ONLY_EVERY == 0:
            items.append(ScienceItem(None, _text_only(item_rng(suite_number, 1, index // TEXT_ONLY_EVERY))))
    return items


def write_sqa(root: Path, suite_number: int, questions: int) -> dict[str, Any]:
    """``problems.json``, ``pid_splits.json`` and ``images/test/<pid>/image.png`` (ScienceQA's data folder)."""
    items = sqa_items(suite_number, questions)
    problems = {}
    for number, item in enumerate(items, start=1):
        pid = str(number)
        question = item.question
        problems[pid] = {
            "question": question.text, "choices": list(question.options), "answer": LETTERS.index(question.answer),
            "hint": question.hint, "image": "image.png" if item.scene is not None else None,
            "task": "closed choice", "grade": "grade2", "subject": "natural science", "topic": "shapes",
            "category": "Corners", "skill": "Compare corners", "lecture": "", "solution": "", "split": "test",
        }  # fmt: skip
        if item.scene is not None:
            save_image(item.scene, root / "images" / "test" / pid / "image.png")
    write_json(root / "problems.json", problems)
    write_json(root / "pid_splits.json", {"train": [], "val": [], "test": list(problems), "minival": []})
    with_image = sum(1 for item in items if item.scene is not None)
    return {"questions": with_image, "text_only": len(items) - with_image}
