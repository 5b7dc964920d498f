"""The open-answer suites: ``shapes-textvqa``, ``shapes-vqav2`` (ten human answers each) and ``shapes-gqa``.

TextVQA: ``what is written on the sign?`` about a scene with a sign, in ``TextVQA_0.5.1_val.json`` with ten
answers (:mod:`.answers`) and LLaVA's ``llava_textvqa_val_v051_ocr.jsonl`` prompt file. Its ``Reference OCR
token`` line comes from a simulated OCR engine that finds the sign 85 % of the time and misreads each character
with probability 0.25 (into a look-alike: ``0``/``O``, ``5``/``S``, ...), so, as with the Rosetta tokens of the
real file, the tokens often but not always give the answer away.

VQAv2: the val2014 question and annotation files, with VQAv2's answer types in roughly its proportions:
yes/no 38 % (``Is there a red circle in the image?``), number 12 % (``How many circles are there?``) and other
50 % (colour, shape, left/right or top/bottom, and the relation questions), ten answers each.

GQA: ``testdev_balanced_questions.json`` with one answer per question and GQA's structural types: ``query``
(relation questions, 50 %, and colour or shape questions, 10 %), ``verify`` (existence, 20 %) and ``choose``
(``left or right``, 20 %).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmaccel.eval.benchmarks.base import SHORT_ANSWER_SUFFIX
from mmaccel.toy.questions import GENERATORS, Question, ask_text
from mmaccel.toy.suites.answers import CONFUSABLE, human_answers
from mmaccel.toy.suites.common import draw, item_rng, save_image, write_json, write_jsonl
from mmaccel.toy.world import Scene

__all__ = ["GQA_MIX", "VQAV2_MIX", "OpenItem", "gqa_items", "textvqa_items", "vqav2_items", "write_gqa",
           "write_textvqa", "write_vqav2"]  # fmt: skip

OCR_FOUND = 0.85
OCR_MISREAD = 0.25
# question type -> probability; "other" types share VQAv2's 50 % equally
VQAV2_MIX = {"exist": 0.38, "count": 0.12, "color": 0.125, "shape": 0.125, "position": 0.125, "relation": 0.125}
VQAV2_ANSWER_TYPES = {"exist": "yes/no", "count": "number"}
GQA_MIX = {"relation": 0.5, "exist": 0.2, "position": 0.2, "color": 0.05, "shape": 0.05}
GQA_TYPES = {  # question type -> (structural, semantic)
    "relation": ("query", "rel"), "exist": ("verify", "obj"), "position": ("choose", "rel"),
    "color": ("query", "attr"), "shape": ("query", "attr"),
}  # fmt: skip


@dataclass(frozen=True)
class OpenItem:
    """One open-answer question with its scene, its ten answers (empty for GQA) and its OCR tokens (TextVQA)."""

    scene: Scene
    question: Question
    answers: tuple[str, ...] = ()
    ocr_tokens: tuple[str, ...] = ()


def lower_first(text: str) -> str:
    """TextVQA stores its questions in lowercase (``what is written on the sign?``)."""
    return text[:1].lower() + text[1:]


OCR_LINE = "Reference OCR token: "  # LLaVA's TextVQA prompt line with the OCR system's tokens


def simulated_ocr(text: str, rng: np.random.Generator) -> tuple[str, ...]:
    """OCR tokens of a sign: none with probability 0.15, else the text with look-alike misreadings."""
    if rng.random() >= OCR_FOUND:
        return ()
    read = "".join(CONFUSABLE[c][0] if rng.random() < OCR_MISREAD else c for c in text)
    return (read.lower(),)


def textvqa_items(suite_number: int, questions: int) -> list[OpenItem]:
    """Question ``i`` uses ``item_rng(suite_number, i)``."""
    items = []
    for index in range(questions):
        rng = item_rng(suite_number, index)
        scene, question = draw(rng, ask_text, sign_probability=1.0)
        answers = human_answers(question.answer, "text", rng)
        items.append(OpenItem(scene, question, tuple(answers), simulated_ocr(question.answer, rng)))
    return items


def _mixed_question(mix: dict[str, float], rng: np.random.Generator) -> tuple[Scene, Question]:
    kinds = list(mix)
    kind = kinds[int(rng.choice(len(kinds), p=np.array([mix[k] for k in kinds]) / sum(mix.values())))]
    ask: Callable = GENERATORS[kind]
    return draw(rng, ask)


def vqav2_items(suite_number: int, questions: int) -> list[OpenItem]:
    """Question ``i`` uses ``item_rng(suite_number, i)``; question types drawn from :data:`VQAV2_MIX`."""
    items = []
    for index in range(questions):
        rng = item_rng(suite_number, index)
        scene, question = _mixed_question(VQAV2_MIX, rng)
        items.append(OpenItem(scene, question, tuple(human_answers(question.answer, question.kind, rng))))
    return items


def gqa_items(suite_number: int, questions: int) -> list[OpenItem]:
    """Question ``i`` uses ``item_rng(suite_number, i)``; question types drawn from :data:`GQA_MIX`."""
    return [OpenItem(*_mixed_question(GQA_MIX, item_rng(suite_number, index))) for index in range(questions)]


def write_textvqa(root: Path, suite_number: int, questions: int) -> dict[str, Any]:
    """``TextVQA_0.5.1_val.json``, ``llava_textvqa_val_v051_ocr.jsonl`` and ``train_images/<image_id>.jpg``."""
    items = textvqa_items(suite_number, questions)
    data, prompts = [], []
    for index, item in enumerate(items):
        image_id = f"{index:016x}"
        question = lower_first(item.question.text)
        save_image(item.scene, root / "train_images" / f"{image_id}.jpg")
        data.append({
            "question_id": index, "question": question, "image_id": image_id, "answers": list(item.answers),
            "image_classes": ["sign"], "image_width": 112, "image_height": 112, "set_name": "val",
        })  # fmt: skip
        ocr = ", ".join(item.ocr_tokens)
        prompts.append({
            "question_id": image_id, "image": f"{image_id}.jpg", "category": "default",
            "text": f"{question.capitalize()}\n{OCR_LINE}{ocr}{SHORT_ANSWER_SUFFIX}",
        })  # fmt: skip
    write_json(root / "TextVQA_0.5.1_val.json", {"dataset_type": "val", "dataset_name": "textvqa", "data": data})
    write_jsonl(root / "llava_textvqa_val_v051_ocr.jsonl", prompts)
    with_ocr = sum(1 for item in items if item.ocr_tokens)
    return {"questions": len(items), "with_ocr_tokens": with_ocr}


def _question_type(question: Question) -> str:
    """VQAv2-style question type: the question's first words."""
    words = question.text.lower().rstrip("?").split()
    length = 3 if words[0] == "what" else 2
    return " ".join(words[:length])


def write_vqav2(root: Path, suite_number: int, questions: int) -> dict[str, Any]:
    """``v2_OpenEnded_mscoco_val2014_questions.json``, ``v2_mscoco_val2014_annotations.json`` and
    ``val2014/COCO_val2014_<image_id:012d>.jpg``; question ids are ``image_id * 1000``, as in VQAv2."""
    items = vqav2_items(suite_number, questions)
    entries, annotations = [], []
    for index, item in enumerate(items):
        image_id = index + 1
        question_id = image_id * 1000
        save_image(item.scene, root / "val2014" / f"COCO_val2014_{image_id:012d}.jpg")
        entries.append({"image_id": image_id, "question": item.question.text, "question_id": question_id})
        answers = [{"answer": text, "answer_confidence": "yes", "answer_id": k + 1} for k, text in
                   enumerate(item.answers)]  # fmt: skip
        annotations.append({
            "question_id": question_id, "image_id": image_id, "question_type": _question_type(item.question),
            "answer_type": VQAV2_ANSWER_TYPES.get(item.question.kind, "other"),
            "multiple_choice_answer": item.question.answer, "answers": answers,
        })  # fmt: skip
    header = {"task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": "val2014"}
    write_json(root / "v2_OpenEnded_mscoco_val2014_questions.json", {**header, "questions": entries})
    write_json(root / "v2_mscoco_val2014_annotations.json", {**header, "annotations": annotations})
    types: dict[str, int] = {}
    for annotation in annotations:
        types[annotation["answer_type"]] = types.get(annotation["answer_type"], 0) + 1
    return {"questions": len(items), "answer_types": dict(sorted(types.items()))}


def write_gqa(root: Path, suite_number: int, questions: int) -> dict[str, Any]:
    """``data/testdev_balanced_questions.json`` and ``data/images/<imageId>.jpg``, one answer per question."""
    items = gqa_items(suite_number, questions)
    entries = {}
    for index, item in enumerate(items):
        image_id = f"n{index:06d}"
        save_image(item.scene, root / "data" / "images" / f"{image_id}.jpg")
        structural, semantic = GQA_TYPES[item.question.kind]
        entries[str(20_000_000 + index)] = {
            "imageId": image_id, "question": item.question.text, "answer": item.question.answer,
            "fullAnswer": item.question.answer, "isBalanced": True,
            "types": {"structural": structural, "semantic": semantic,
                      "detailed": f"{item.question.kind}_{item.question.subtype}"},
        }  # fmt: skip
    write_json(root / "data" / "testdev_balanced_questions.json", entries)
    structural_counts: dict[str, int] = {}
    for entry in entries.values():
        key = entry["types"]["structural"]
        structural_counts[key] = structural_counts.get(key, 0) + 1
    return {"questions": len(items), "structural": dict(sorted(structural_counts.items()))}
