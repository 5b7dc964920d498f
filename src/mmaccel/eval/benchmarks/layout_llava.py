"""Readers of LLaVA's evaluation layout (haotian-liu/LLaVA:docs/Evaluation.md, ``playground/data/eval``).

Each reader takes the benchmark's folder (e.g. ``playground/data/eval/pope``) and returns ``(samples, info)``.
The files read are listed in ``docs/benchmarks-protocol.md``; synthetic suites write the same files.
"""

from __future__ import annotations

import base64
import csv
import io
import logging
import re
import sys
from pathlib import Path
from typing import Any

from mmaccel.errors import DataError
from mmaccel.eval.benchmarks.base import Sample
from mmaccel.eval.benchmarks.loaders import (
    mmbench_version,
    pope_version,
    read_json,
    read_jsonl,
    read_text,
    require,
)
from mmaccel.eval.benchmarks.pope import LLAVA_ID_OFFSETS, SPLITS

__all__ = ["LLAVA_LOADERS"]

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def _image(path: Path, images: bool) -> Path | None:
    return path if images else None


def load_pope(root: Path, split: str | None, images: bool) -> tuple[list[Sample], dict[str, Any]]:
    """``coco/coco_pope_{adversarial,popular,random}.json`` (JSON lines: question_id, image, text, label)."""
    folder = root / "coco" if (root / "coco").is_dir() else root
    wanted = SPLITS if split is None else (split,)
    if split is not None and split not in SPLITS:
        raise DataError(f"POPE split {split!r}: choose one of {', '.join(SPLITS)}")
    samples, per_split, missing = [], {}, []
    for category in wanted:
        path = folder / f"coco_pope_{category}.json"
        if not path.is_file() and not path.is_dir():
            if split is None:
                log.warning("%s: missing, POPE split %s skipped (the mean F1 covers the other splits)", path, category)
                missing.append(category)
                continue
            raise DataError(f"{path}: file not found")
        rows = read_jsonl(path)
        if not rows:
            raise DataError(
                f"{path}: no questions (an empty file); the POPE headline averages the F1 of every split found, so "
                f"an empty {category} split would silently leave it out: restore the file, delete it to score the "
                "other splits, or pick one with --split"
            )
        per_split[category] = len(rows)
        for number, row in rows:
            require(row, ("question_id", "image", "text", "label"), f"{path}:{number}")
            llava_id = LLAVA_ID_OFFSETS[category] + int(row["question_id"])
            samples.append(
                Sample(
                    id=str(llava_id),
                    question=row["text"],
                    image=_image(root / "val2014" / row["image"], images),
                    answers=[row["label"]],
                    meta={"category": category, "question_id": row["question_id"]},
                )
            )
    typos = sum(1 for s in samples if "imange" in s.question)
    info = {"split": split or "all", "per_split": per_split, "version": pope_version(per_split, len(samples))}
    if missing:
        info["missing_splits"] = missing
    if typos:
        info["imange_typos"] = typos
    return samples, info


def load_mme(root: Path, split: str | None, images: bool) -> tuple[list[Sample], dict[str, Any]]:
    """``MME_Benchmark_release_version/<category>/`` with ``images/`` + ``questions_answers_YN/*.txt`` or flat
    image/txt pairs; each txt line is ``question<TAB>answer``, two lines per image."""
    release = root / "MME_Benchmark_release_version"
    if not release.is_dir():
        raise DataError(f"{release}: directory not found")
    samples = []
    for category_dir in sorted(p for p in release.iterdir() if p.is_dir()):
        category = category_dir.name
        if split is not None and category != split:
            continue
        nested = (category_dir / "images").is_dir() or (category_dir / "questions_answers_YN").is_dir()
        image_dir = category_dir / "images" if nested else category_dir
        qa_dir = category_dir / "questions_answers_YN" if nested else category_dir
        found = image_dir.iterdir() if image_dir.is_dir() else ()
        stems = {p.stem: p.name for p in found if p.suffix.lower() in IMAGE_SUFFIXES}
        for txt in sorted(qa_dir.glob("*.txt")):
            if txt.stem not in stems and images:
                raise DataError(f"{txt}: no image named {txt.stem}.* in {image_dir}")
            image_name = stems.get(txt.stem, txt.stem)  # scoring reads no image: the name without its suffix
            image_id = f"{category}/images/{image_name}" if nested else f"{category}/{image_name}"
            lines = [line for line in read_text(txt, "question file").split("\n") if line.strip()]
            for k, line in enumerate(lines):
                parts = line.strip().split("\t")
                if len(parts) != 2:
                    raise DataError(f"{txt}:{k + 1}: expected 'question<TAB>answer', got {len(parts)} field(s)")
                samples.append(
                    Sample(
                        id=f"{image_id}#{k}",
                        question=parts[0],
                        image=_image(image_dir / image_name, images),
                        answers=[parts[1]],
                        meta={"category": category, "image_id": image_id, "llava_question_id": image_id},
                    )
                )
    return samples, {"split": split or "all", "version": f"MME ({len(samples)} questions)"}


def load_scienceqa(root: Path, split: str | None, images: bool) -> tuple[list[Sample], dict[str, Any]]:
    """``problems.json`` + ``pid_splits.json`` (lupantech/ScienceQA data/scienceqa); images in
    ``images/<split>/<pid>/image.png``. Only problems with an image are kept (the IMG subset)."""
    split = split or "test"
    problems = read_json(root / "problems.json")
    splits_path = root / "pid_splits.json"
    if splits_path.is_file():
        splits = read_json(splits_path)
        if split not in splits:
            raise DataError(f"{splits_path}: no split {split!r}; has {', '.join(splits)}")
        pids = [str(pid) for pid in splits[split]]
    else:
        pids = [pid for pid, problem in problems.items() if problem.get("split") == split]
    samples, text_only = [], []
    for pid in pids:
        if pid not in problems:
            raise DataError(f"{splits_path}: problem id {pid} is not in {root / 'problems.json'}")
        problem = problems[pid]
        require(problem, ("question", "choices", "answer"), f"{root / 'problems.json'}: problem {pid}")
        if not problem.get("image"):
            text_only.append(pid)
            continue
        samples.append(
            Sample(
                id=pid,
                question=problem["question"],
                image=_image(root / "images" / split / pid / problem["image"], images),
                answers=[str(int(problem["answer"]))],
                meta={"choices": list(problem["choices"]), "hint": problem.get("hint") or ""},
            )
        )
    version = f"ScienceQA {split} IMG ({len(samples)} of {len(pids)} questions)"
    return samples, {"split": split, "version": version, "excluded_ids": text_only}


def _is_none(value: str | None) -> bool:
    return value is None or value.strip() == "" or value.strip().lower() in ("nan", "none")


def load_mmbench(root: Path, split: str | None, images: bool) -> tuple[list[Sample], dict[str, Any]]:
    """A MMBench TSV (``mmbench_dev_20230712.tsv``): index, question, hint, A-D, answer, category,
    l2-category, image (base64). ``split`` picks the TSV by a substring of its name when there are several."""
    tsvs = sorted(root.glob("*.tsv"))
    if split is not None:
        tsvs = [p for p in tsvs if split in p.name]
    if len(tsvs) != 1:
        raise DataError(f"{root}: expected one MMBench .tsv (use --split to pick), found {[p.name for p in tsvs]}")
    path = tsvs[0]
    csv.field_size_limit(sys.maxsize)
    try:
        samples = _read_mmbench(path, images)
    except UnicodeDecodeError as error:
        byte = error.object[error.start]
        raise DataError(f"{path}: byte 0x{byte:02x} is not UTF-8; save the TSV as UTF-8") from None
    questions = len({s.meta["index"] % 1_000_000 for s in samples})
    return samples, {"split": path.stem, "version": mmbench_version(path.name, len(samples), questions)}


def _read_mmbench(path: Path, images: bool) -> list[Sample]:
    samples = []
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        for number, row in enumerate(reader, start=2):
            require(row, ("index", "question", "A", "B", "answer"), f"{path}:{number}")
            options = {}
            for letter in "ABCDEFGHI":
                if letter not in row or _is_none(row[letter]):
                    break
                options[letter] = row[letter]
            image = _mmbench_image(row.get("image"), f"{path}:{number}") if images else None
            try:
                index = int(float(row["index"]))
            except ValueError:
                raise DataError(f"{path}:{number}: index {row['index']!r} is not a number") from None
            samples.append(
                Sample(
                    id=str(index),
                    question=row["question"],
                    image=image,
                    answers=[row["answer"]],
                    meta={
                        "index": index,
                        "options": options,
                        "hint": None if _is_none(row.get("hint")) else row["hint"],
                        "category": row.get("category", ""),
                        "l2_category": row.get("l2-category", row.get("L2-category", "")),
                        "lang": "cn" if "_cn" in path.name.lower() else "en",
                    },
                )
            )
    return samples


def _mmbench_image(value: str | None, where: str):
    """The lazily decoded image of a base64 TSV cell (None when empty); :class:`DataError` naming the row."""
    if _is_none(value):
        return None
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(io.BytesIO(base64.b64decode(value)))
    except (ValueError, UnidentifiedImageError) as error:
        raise DataError(f"{where}: the image column is not a base64 image ({error})") from None


def _ocr_tokens(prompt: str) -> list[str]:
    match = re.search(r"\nReference OCR token: (.*)\n", prompt)
    if match is None or not match.group(1):
        return []
    return match.group(1).split(", ")


def load_textvqa(root: Path, split: str | None, images: bool) -> tuple[list[Sample], dict[str, Any]]:
    """``TextVQA_0.5.1_val.json`` (ground truth) + ``llava_textvqa_val_v051_ocr.jsonl`` (the OCR tokens);
    images in ``train_images/<image_id>.jpg``."""
    annotation_path = root / "TextVQA_0.5.1_val.json"
    data = read_json(annotation_path)
    if not isinstance(data, dict) or "data" not in data:
        raise DataError(f"{annotation_path}: expected an object with a 'data' list")
    ocr: dict[tuple[str, str], list[str]] = {}
    questions_path = root / "llava_textvqa_val_v051_ocr.jsonl"
    if questions_path.is_file():
        for number, row in read_jsonl(questions_path):
            require(row, ("question_id", "text"), f"{questions_path}:{number}")
            key = (str(row["question_id"]), row["text"].split("\n")[0].strip().lower())
            ocr[key] = _ocr_tokens(row["text"])
    else:
        log.warning("%s not found: TextVQA prompts of protocol 'llava' (with OCR tokens) are unavailable",
                    questions_path)  # fmt: skip
    samples = []
    for position, entry in enumerate(data["data"]):
        require(entry, ("question_id", "question", "image_id", "answers"), f"{annotation_path}: data[{position}]")
        image_id = str(entry["image_id"])
        samples.append(
            Sample(
                id=str(entry["question_id"]),
                question=entry["question"],
                image=_image(root / "train_images" / f"{image_id}.jpg", images),
                answers=list(entry["answers"]),
                meta={
                    "image_id": image_id,
                    "llava_question_id": image_id,
                    "ocr_tokens": ocr.get((image_id, entry["question"].strip().lower())) if ocr else None,
                },
            )
        )
    return samples, {"split": "val", "version": f"TextVQA 0.5.1 val ({len(samples)} questions)"}


def load_gqa(root: Path, split: str | None, images: bool) -> tuple[list[Sample], dict[str, Any]]:
    """``data/testdev_balanced_questions.json`` (GQA's {qid: {imageId, question, answer, isBalanced, types}});
    images in ``data/images/<imageId>.jpg``."""
    name = f"{split or 'testdev_balanced'}_questions.json"
    path = root / "data" / name if (root / "data" / name).is_file() else root / name
    questions = read_json(path)
    samples = []
    for qid, entry in questions.items():
        require(entry, ("imageId", "question", "answer"), f"{path}: question {qid}")
        if not entry.get("isBalanced", True):
            continue
        samples.append(
            Sample(
                id=str(qid),
                question=entry["question"],
                image=_image(path.parent / "images" / f"{entry['imageId']}.jpg", images),
                answers=[entry["answer"]],
                meta={"structural": (entry.get("types") or {}).get("structural", "")},
            )
        )
    return samples, {"split": path.stem.removesuffix("_questions"), "version": f"GQA {path.name}"}


def load_vqav2(root: Path, split: str | None, images: bool) -> tuple[list[Sample], dict[str, Any]]:
    """``v2_OpenEnded_mscoco_val2014_questions.json`` + ``v2_mscoco_val2014_annotations.json``; images in
    ``val2014/COCO_val2014_<image_id:012d>.jpg``. test-dev/test answers exist only on the EvalAI server."""
    split = split or "val2014"
    annotation_path = root / f"v2_mscoco_{split}_annotations.json"
    if not annotation_path.is_file():
        raise DataError(
            f"{annotation_path}: file not found; VQAv2 test-dev/test answers are scored only on the EvalAI "
            "server, local scoring needs the val2014 annotations and questions"
        )
    questions_path = root / f"v2_OpenEnded_mscoco_{split}_questions.json"
    questions = {q["question_id"]: q for q in read_json(questions_path).get("questions", [])}
    samples = []
    for position, entry in enumerate(read_json(annotation_path).get("annotations", [])):
        require(entry, ("question_id", "answers", "image_id"), f"{annotation_path}: annotations[{position}]")
        if entry["question_id"] not in questions:
            raise DataError(f"{questions_path}: no question {entry['question_id']} (annotated in {annotation_path})")
        image = root / split / f"COCO_{split}_{int(entry['image_id']):012d}.jpg"
        samples.append(
            Sample(
                id=str(entry["question_id"]),
                question=questions[entry["question_id"]]["question"],
                image=_image(image, images),
                answers=[answer["answer"] for answer in entry["answers"]],
                meta={"answer_type": entry.get("answer_type", ""), "question_type": entry.get("question_type", "")},
            )
        )
    return samples, {"split": split, "version": f"VQAv2 {split} ({len(samples)} questions)"}


LLAVA_LOADERS = {
    "gqa": load_gqa,
    "mmbench": load_mmbench,
    "mme": load_mme,
    "pope": load_pope,
    "scienceqa_img": load_scienceqa,
    "textvqa": load_textvqa,
    "vqav2": load_vqav2,
}
