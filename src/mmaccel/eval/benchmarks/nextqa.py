"""NExT-QA multiple choice: five options per question; accuracy per question type (causal, temporal, descriptive).

Type codes: causal ``CW`` (why) and ``CH`` (how); temporal ``TN`` (before/after, with ``TP`` merged into it as
the official script does) and ``TC`` (when); descriptive ``DC`` (count), ``DL`` (location), ``DO`` (other).

References:
    * ``"official"``: doc-doc/NExT-QA ``eval_mc.py`` (per-type and overall accuracy over every question) on the
      letter the answer starts with (:func:`~mmaccel.eval.benchmarks.mcq.leading_letter`: ``B``, ``B.``,
      ``B)``, ``(B)``...); the official script compares option indices, so reading the letter is mmaccel's.
    * ``"lmms_eval"``: EvolvingLMMs-Lab/lmms-eval ``tasks/nextqa/utils.py`` (``nextqa_mc_test``): MMMU's
      ``parse_multi_choice_response`` (:func:`~mmaccel.eval.benchmarks.mcq.parse_multi_choice_response`),
      without its random guess for unreadable answers (they are wrong here).

Both protocols use lmms-eval's prompt (the official code has no language-model prompt).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, ClassVar

from mmaccel.errors import DataError
from mmaccel.eval.benchmarks.base import LETTER_SUFFIX, Sample
from mmaccel.eval.benchmarks.loaders import read_json
from mmaccel.eval.benchmarks.mcq import leading_letter, parse_multi_choice_response
from mmaccel.eval.benchmarks.registry import register_benchmark
from mmaccel.eval.benchmarks.video_common import (
    VideoBenchmark,
    accuracy_table,
    count_table,
    first_existing,
    percent,
)

__all__ = ["CATEGORIES", "TYPE_NAMES", "NExTQA", "load_nextqa"]

LETTERS = "ABCDE"
TYPE_NAMES = {"CW": "Why", "CH": "How", "TN": "Bef&Aft", "TC": "When", "DC": "Cnt", "DL": "Loc", "DO": "Other"}
MERGED = {"TP": "TN"}
CATEGORIES = {"C": "causal", "T": "temporal", "D": "descriptive"}
COLUMNS = ("video", "question", "answer", "qid", "type", "a0", "a1", "a2", "a3", "a4")
SPLIT_FILES = {"test": "test.csv", "val": "val.csv", "validation": "val.csv", "train": "train.csv"}


def _sample(root: Path, row: dict[str, Any], vid_map: dict[str, str], where: str) -> Sample:
    qtype = str(row["type"]).strip()
    group = MERGED.get(qtype, qtype)
    if group not in TYPE_NAMES:
        raise DataError(f"{where}: question type {qtype!r} is not one of {', '.join([*TYPE_NAMES, *MERGED])}")
    try:
        answer = int(row["answer"])
    except (TypeError, ValueError):
        raise DataError(f"{where}: answer {row['answer']!r} is not an option index 0-4") from None
    if not 0 <= answer < len(LETTERS):
        raise DataError(f"{where}: answer {answer} is not an option index 0-4")
    vid = str(row["video"]).strip()
    candidates = [root / "NExTVideo" / f"{vid_map[vid]}.mp4"] if vid in vid_map else []
    candidates += [root / folder / f"{vid}.mp4" for folder in ("NExTVideo", "videos", ".")]
    meta = {
        "options": {LETTERS[i]: str(row[f"a{i}"]).strip() for i in range(len(LETTERS))},
        "type": qtype, "type_group": group, "category": CATEGORIES[group[0]], "video_key": vid,
        "video": str(first_existing(candidates)),
    }  # fmt: skip
    return Sample(id=f"{vid}_{row['qid']}", question=str(row["question"]), answers=[LETTERS[answer]], meta=meta)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}; has {reader.fieldnames}")
        return list(reader)


def _official_csv(root: Path, split: str | None) -> tuple[Path, str]:
    folders = (root, root / "dataset" / "nextqa", root / "nextqa")
    names = [split] if split else ["test", "val"]
    for name in names:
        file = SPLIT_FILES.get(name, name if name.endswith(".csv") else f"{name}.csv")
        for folder in folders:
            if (folder / file).is_file():
                return folder / file, name
    raise DataError(
        f"{root} matches neither NExT-QA layout: expected lmms-lab parquet files (MC/<split>-*.parquet) or the "
        f"official CSV ({' or '.join(SPLIT_FILES.get(n, n) for n in names)}, at the top or in "
        "dataset/nextqa/); see docs/benchmarks-protocol.md"
    )


def load_nextqa(root: Path, split: str | None) -> tuple[list[Sample], dict[str, Any]]:
    """Read NExT-QA multiple choice from the lmms-lab parquet layout or the official CSV layout."""
    map_file = next((p for p in (root / "map_vid_vidorID.json", root / "dataset" / "nextqa" / "map_vid_vidorID.json")
                     if p.is_file()), None)  # fmt: skip
    vid_map = {str(k): str(v) for k, v in read_json(map_file).items()} if map_file else {}
    if any(root.rglob("*.parquet")):
        from mmaccel.eval.benchmarks.layout_lmms_lab import find_parquet, read_parquet

        split = split or "test"
        files = find_parquet(root, split, ("MC",))
        rows = read_parquet(files, list(COLUMNS))
        samples = [_sample(root, row, vid_map, f"{files[0]} row {i}") for i, row in enumerate(rows)]
        layout, source = "lmms_lab", f"lmms-lab/NExTQA {files[0].parent.name}/{split}"
    else:
        path, split = _official_csv(root, split)
        samples = [_sample(root, row, vid_map, f"{path}:{i + 2}") for i, row in enumerate(_csv_rows(path))]
        layout, source = "official", f"NExT-QA {path.name}"
    per_type = {code: sum(1 for s in samples if s.meta["type_group"] == code) for code in TYPE_NAMES}
    info = {"layout": layout, "split": split, "version": f"{source} ({len(samples)} questions)", "per_type": per_type}
    return samples, info


@register_benchmark
class NExTQA(VideoBenchmark):
    name = "nextqa"
    references: ClassVar[dict[str, str]] = {
        "official": "doc-doc/NExT-QA:eval_mc.py (on the leading option letter)",
        "lmms_eval": "EvolvingLMMs-Lab/lmms-eval:lmms_eval/tasks/nextqa/utils.py (parse_multi_choice_response)",
    }
    description = "NExT-QA multiple choice: accuracy per question type"

    def read(self, root: Path, split: str | None, videos: bool) -> tuple[list[Sample], dict[str, Any]]:
        return load_nextqa(root, split)

    def prompt(self, sample: Sample, protocol: str = "official") -> str:
        self.check(protocol)
        lines = [f"{k}. {v}" for k, v in sample.meta["options"].items()]
        return "\n".join([sample.question.strip(), *lines]) + LETTER_SUFFIX

    def score(self, sample: Sample, prediction: str, protocol: str = "official") -> dict[str, Any]:
        self.check(protocol)
        options = sample.meta["options"]
        if protocol == "official":
            parsed = leading_letter(prediction, "".join(options))
        else:
            parsed = parse_multi_choice_response(prediction, list(options), options)
        return {
            "id": sample.id,
            "parsed": parsed,
            "target": sample.answers[0],
            "correct": float(parsed == sample.answers[0]),
            "counted": True,
            "type": sample.meta["type_group"],
            "category": sample.meta["category"],
        }

    def aggregate(self, rows: list[dict[str, Any]], protocol: str = "official") -> dict[str, Any]:
        """Overall accuracy, per category (causal, temporal, descriptive) and per type (TP counted as TN)."""
        self.check(protocol)
        by_category = accuracy_table(rows, "category", CATEGORIES.values())
        return {
            "headline": "accuracy",
            "accuracy": percent(sum(r["correct"] for r in rows), len(rows)),
            **by_category,
            "n": len(rows),
            "unparsed": sum(1 for r in rows if r["parsed"] is None),
            "by_category": by_category,
            "by_type": accuracy_table(rows, "type", TYPE_NAMES),
            "n_by_type": count_table(rows, "type", TYPE_NAMES),
        }
