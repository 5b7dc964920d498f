"""Readers of local copies of the lmms-lab Hugging Face datasets (parquet files, read offline).

A dataset folder as ``huggingface-cli download --repo-type dataset lmms-lab/POPE --local-dir DIR`` leaves it:
``<config>/<split>-NNNNN-of-NNNNN.parquet`` or ``data/<split>-NNNNN-of-NNNNN.parquet``. Files are read with
``pyarrow`` (a dependency of ``datasets``), column by column, so scoring never reads image bytes and nothing
is copied into a cache; images are decoded lazily with PIL when asked for.
"""

from __future__ import annotations

import io
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from mmaccel.errors import DataError
from mmaccel.eval.benchmarks.base import Sample
from mmaccel.eval.benchmarks.loaders import mmbench_version, pope_version, unique_ids
from mmaccel.eval.benchmarks.pope import SPLITS

__all__ = ["LMMS_LAB_LOADERS", "find_parquet", "read_parquet"]

_SHARD = re.compile(r"^(?P<split>[A-Za-z0-9_.]+?)(-\d{5}-of-\d{5})?$")


def _split_of(path: Path) -> str:
    match = _SHARD.match(path.stem)
    return match.group("split") if match else path.stem


def find_parquet(root: Path, split: str, configs: tuple[str, ...] = ()) -> list[Path]:
    """The parquet shards of ``split``, preferring the first folder named in ``configs`` that has them."""
    files = sorted(root.rglob("*.parquet"))
    matching = [p for p in files if _split_of(p) == split]
    if not matching:
        available = sorted({f"{p.parent.relative_to(root)}/{_split_of(p)}" for p in files})
        raise DataError(f"{root}: no parquet files for split {split!r}; available (config/split): {available}")
    for config in configs:
        chosen = [p for p in matching if p.parent.name == config]
        if chosen:
            return chosen
    parents = sorted({str(p.parent.relative_to(root)) for p in matching})
    if len(parents) > 1:
        raise DataError(f"{root}: split {split!r} exists in several configs {parents}; point --data at one")
    return matching


def read_parquet(files: list[Path], columns: list[str], optional: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Rows of ``columns`` (required) and ``optional`` columns (when present) from parquet shards."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        import pyarrow.parquet as pq
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise DataError("reading lmms-lab parquet data needs pyarrow: pip install 'mmaccel[eval]'") from error
    import pyarrow as pa

    rows: list[dict[str, Any]] = []
    for path in files:
        try:
            names = pq.read_schema(path).names
        except (pa.ArrowException, OSError) as error:
            raise DataError(f"{path}: not a readable parquet file ({error})") from None
        missing = [c for c in columns if c not in names]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}; has {', '.join(names)}")
        table = pq.read_table(path, columns=columns + [c for c in optional if c in names and c not in columns])
        rows.extend(table.to_pylist())
    return rows


def _image(value: Any) -> Any:
    """A lazily decoded PIL image from a ``datasets`` Image cell ({"bytes", "path"}), or None."""
    if not value or not value.get("bytes"):
        return None
    from PIL import Image

    return Image.open(io.BytesIO(value["bytes"]))


def _cols(images: bool, *names: str) -> list[str]:
    return [*names, "image"] if images else list(names)


def load_pope(root: Path, split: str | None, images: bool) -> tuple[list[Sample], dict[str, Any]]:
    if split in SPLITS:  # the "Full" config has one split per category; the default config has them as rows
        try:
            files = find_parquet(root, split, ("Full",))
        except DataError:
            files = find_parquet(root, "test", ("data", "default"))
    else:
        files = find_parquet(root, split or "test", ("data", "default"))
    rows = read_parquet(files, _cols(images, "question_id", "question", "answer", "category"), ("image_source",))
    if split in SPLITS:
        rows = [r for r in rows if r["category"] == split]
    raw = [str(r["question_id"]) for r in rows]
    ids = raw if len(set(raw)) == len(raw) else [f"{r['category']}/{q}" for r, q in zip(rows, raw)]
    samples = [
        Sample(id=i, question=r["question"], image=_image(r.get("image")), answers=[r["answer"]],
               meta={"category": r["category"], "question_id": r["question_id"]})
        for i, r in zip(ids, rows)
    ]  # fmt: skip
    per_split = dict(Counter(r["category"] for r in rows))
    return samples, {"split": split or "test", "per_split": per_split, "version": pope_version(per_split, len(rows))}


def load_mme(root: Path, split: str | None, images: bool) -> tuple[list[Sample], dict[str, Any]]:
    rows = read_parquet(find_parquet(root, "test", ("data",)), _cols(images, "question_id", "question", "answer",
                                                                      "category"))  # fmt: skip
    if split is not None:
        rows = [r for r in rows if r["category"] == split]
    ids = unique_ids([str(r["question_id"]) for r in rows])
    samples = [
        Sample(id=i, question=r["question"], image=_image(r.get("image")), answers=[r["answer"]],
               meta={"category": r["category"], "image_id": str(r["question_id"]),
                     "llava_question_id": str(r["question_id"])})
        for i, r in zip(ids, rows)
    ]  # fmt: skip
    return samples, {"split": split or "test", "version": f"lmms-lab/MME ({len(rows)} questions)"}


def load_scienceqa(root: Path, split: str | None, images: bool) -> tuple[list[Sample], dict[str, Any]]:
    split = split or "test"
    files = find_parquet(root, split, ("ScienceQA-IMG", "ScienceQA-FULL"))
    img_config = files[0].parent.name == "ScienceQA-IMG"
    columns = ["question", "choices", "answer", "hint"]
    rows = read_parquet(files, columns + (["image"] if images or not img_config else []))
    samples, text_only = [], []
    for position, r in enumerate(rows):
        if not img_config and not (r.get("image") or {}).get("bytes"):
            text_only.append(f"{split}-{position}")  # ScienceQA-FULL: keep the questions with an image
            continue
        samples.append(
            Sample(id=f"{split}-{position}", question=r["question"], image=_image(r.get("image")) if images else None,
                   answers=[str(int(r["answer"]))], meta={"choices": list(r["choices"]), "hint": r["hint"] or ""})
        )  # fmt: skip
    version = f"lmms-lab/ScienceQA {files[0].parent.name} {split} ({len(samples)} questions with an image)"
    return samples, {"split": split, "version": version, "excluded_ids": text_only}


def load_textvqa(root: Path, split: str | None, images: bool) -> tuple[list[Sample], dict[str, Any]]:
    split = split or "validation"
    columns = _cols(images, "question_id", "question", "answers", "image_id")
    rows = read_parquet(find_parquet(root, split, ("data",)), columns, ("ocr_tokens",))
    samples = [
        Sample(id=str(r["question_id"]), question=r["question"], image=_image(r.get("image")),
               answers=list(r["answers"] or []),
               meta={"image_id": str(r["image_id"]), "llava_question_id": str(r["image_id"]),
                     "ocr_tokens": r.get("ocr_tokens")})
        for r in rows
    ]  # fmt: skip
    if any(not s.answers for s in samples):
        raise DataError(f"{root}: split {split!r} has questions without answers; it cannot be scored locally")
    return samples, {"split": split, "version": f"lmms-lab/textvqa {split} ({len(rows)} questions)"}


def load_gqa(root: Path, split: str | None, images: bool) -> tuple[list[Sample], dict[str, Any]]:
    split = split or "testdev"
    files = find_parquet(root, split, ("testdev_balanced_instructions",))
    rows = read_parquet(files, ["id", "imageId", "question", "answer"], ("types",))
    pictures: dict[str, Any] = {}
    if images:
        image_files = find_parquet(root, split, ("testdev_balanced_images",))
        pictures = {str(r["id"]): r["image"] for r in read_parquet(image_files, ["id", "image"])}
    samples = [
        Sample(id=str(r["id"]), question=r["question"], image=_image(pictures.get(str(r["imageId"]))),
               answers=[r["answer"]], meta={"structural": (r.get("types") or {}).get("structural", "")})
        for r in rows
    ]  # fmt: skip
    return samples, {"split": split, "version": f"lmms-lab/GQA {files[0].parent.name} ({len(rows)} questions)"}


def load_vqav2(root: Path, split: str | None, images: bool) -> tuple[list[Sample], dict[str, Any]]:
    split = split or "validation"
    columns = _cols(images, "question_id", "question", "answers")
    rows = read_parquet(find_parquet(root, split, ("data",)), columns, ("answer_type", "question_type"))
    if any(not r["answers"] for r in rows):
        raise DataError(f"{root}: VQAv2 split {split!r} has no answers (test-dev/test are scored on EvalAI only)")
    samples = [
        Sample(id=str(r["question_id"]), question=r["question"], image=_image(r.get("image")),
               answers=[a["answer"] for a in r["answers"]],
               meta={"answer_type": r.get("answer_type") or "", "question_type": r.get("question_type") or ""})
        for r in rows
    ]  # fmt: skip
    return samples, {"split": split, "version": f"lmms-lab/VQAv2 {split} ({len(rows)} questions)"}


def load_mmbench(root: Path, split: str | None, images: bool) -> tuple[list[Sample], dict[str, Any]]:
    split = split or "dev"
    files = find_parquet(root, split, ("en", "cn", "data"))
    optional = ("hint", "C", "D", "E", "category", "l2-category", "L2-category")
    rows = read_parquet(files, _cols(images, "index", "question", "A", "B", "answer"), optional)
    samples = []
    for r in rows:
        options = {}
        for letter in "ABCDE":
            value = r.get(letter)
            if value is None or str(value).strip().lower() in ("", "nan", "none"):
                break
            options[letter] = value
        hint = r.get("hint")
        index = int(float(r["index"]))  # one card revision stores index as a string
        samples.append(
            Sample(id=str(index), question=r["question"], image=_image(r.get("image")), answers=[r["answer"]],
                   meta={"index": index, "options": options,
                         "hint": None if hint is None or str(hint).lower() in ("", "nan", "none") else hint,
                         "category": r.get("category") or "",
                         "l2_category": r.get("l2-category") or r.get("L2-category") or "",
                         "lang": "cn" if files[0].parent.name == "cn" else "en"})
        )  # fmt: skip
    questions = len({s.meta["index"] % 1_000_000 for s in samples})
    source = f"lmms-lab {files[0].parent.name}/{split}"
    return samples, {"split": split, "version": mmbench_version(source, len(samples), questions)}


LMMS_LAB_LOADERS = {
    "gqa": load_gqa,
    "mmbench": load_mmbench,
    "mme": load_mme,
    "pope": load_pope,
    "scienceqa_img": load_scienceqa,
    "textvqa": load_textvqa,
    "vqav2": load_vqav2,
}
