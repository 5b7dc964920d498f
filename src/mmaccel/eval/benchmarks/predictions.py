"""Read prediction files and join them to benchmark questions by id, never by position.

Two JSONL formats are read, line by line (a file may not mix them):

* LLaVA's answer files (haotian-liu/LLaVA:llava/eval/model_vqa_loader.py and siblings):
  ``{"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}``.
* mmaccel's ``predictions.jsonl``: ``{"id", "prediction", ...}`` with ``id`` the :class:`Sample` id.

LLaVA's ``question_id`` is not always unique: MME uses the image path for both questions of an image and
TextVQA uses the image id. Such records are matched by ``question_id`` plus the question read from the first
line of their ``prompt``, as LLaVA's own converters do.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from mmaccel.errors import ConfigError, DataError
from mmaccel.eval.benchmarks.base import Benchmark, Sample
from mmaccel.eval.benchmarks.loaders import read_jsonl

__all__ = ["JoinReport", "PredictionRecord", "join_predictions", "read_predictions"]

log = logging.getLogger(__name__)
MISSING_POLICIES = ("error", "wrong", "skip")
UNKNOWN_POLICIES = ("error", "ignore")


@dataclasses.dataclass(frozen=True)
class PredictionRecord:
    key: str  # LLaVA question_id or mmaccel id, as a string
    text: str
    prompt: str | None
    line: int
    format: str  # "llava" or "mmaccel"


@dataclasses.dataclass
class JoinReport:
    path: str
    format: str
    lines: int
    matched: int
    missing_ids: list[str]
    unknown_ids: list[str]
    on_missing: str
    excluded: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "lines": self.lines,
            "matched": self.matched,
            "missing": len(self.missing_ids),
            "missing_ids": self.missing_ids[:50],
            "unknown": len(self.unknown_ids),
            "unknown_ids": self.unknown_ids[:50],
            "missing_scored_as": self.on_missing if self.missing_ids else None,
            "excluded": self.excluded,
        }


def read_predictions(path: str | Path) -> list[PredictionRecord]:
    """Read a LLaVA answer file or an mmaccel ``predictions.jsonl``; errors name the file and line."""
    path = Path(path)
    records, formats = [], set()
    for number, row in read_jsonl(path):
        if "question_id" in row and "text" in row:
            fmt, key, text = "llava", row["question_id"], row["text"]
        elif "id" in row and "prediction" in row:
            fmt, key, text = "mmaccel", row["id"], row["prediction"]
        else:
            raise DataError(
                f"{path}:{number}: a prediction line needs 'question_id' and 'text' (LLaVA answer file) or "
                f"'id' and 'prediction' (mmaccel predictions.jsonl); found keys {sorted(row)}"
            )
        if not isinstance(text, str):
            raise DataError(f"{path}:{number}: the prediction must be a string, got {type(text).__name__}")
        formats.add(fmt)
        records.append(PredictionRecord(str(key), text, row.get("prompt"), number, fmt))
    if len(formats) > 1:
        raise DataError(f"{path}: mixes LLaVA answer lines and mmaccel prediction lines")
    if not records:
        raise DataError(f"{path}: no predictions")
    return records


def join_predictions(
    benchmark: Benchmark,
    samples: list[Sample],
    records: list[PredictionRecord],
    path: str | Path,
    on_missing: str = "error",
    on_unknown: str = "error",
    excluded_ids: frozenset[str] = frozenset(),
) -> tuple[list[tuple[Sample, str | None]], JoinReport]:
    """Pair every sample with its prediction (None: a missing prediction to score as wrong).

    Args:
        on_missing: questions without a prediction: ``"error"`` (default), ``"wrong"`` (paired with None, which
            :meth:`Benchmark.score_missing` scores as wrong under every protocol; LLaVA's converters write an
            empty answer instead, which POPE's rule reads as yes) or ``"skip"`` (left out; the score covers fewer
            questions).
        on_unknown: predictions whose id matches no question: ``"error"`` (default) or ``"ignore"``.
        excluded_ids: ids of source questions the benchmark leaves out on purpose; their predictions are
            counted as ``excluded`` and dropped (a second prediction for one of them is refused, as for any
            question).
    Both are always logged and counted in the report, with the first ids.
    """
    if on_missing not in MISSING_POLICIES:
        raise ConfigError(f"on_missing={on_missing!r}: choose one of {', '.join(MISSING_POLICIES)}")
    if on_unknown not in UNKNOWN_POLICIES:
        raise ConfigError(f"on_unknown={on_unknown!r}: choose one of {', '.join(UNKNOWN_POLICIES)}")
    match = benchmark.match_key
    by_id = {match(sample.id): sample for sample in samples}
    by_llava_id: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_llava_id[match(str(sample.meta.get("llava_question_id", sample.id)))].append(sample)
    taken: dict[str, PredictionRecord] = {}
    unknown: list[str] = []
    excluded: dict[str, PredictionRecord] = {}
    for record in records:
        if record.key in excluded_ids and match(record.key) not in by_id:
            if record.key in excluded:
                raise DataError(
                    f"{path}:{record.line}: second prediction for question {record.key} (first on line "
                    f"{excluded[record.key].line}), which {benchmark.name} leaves out"
                )
            excluded[record.key] = record
            continue
        sample = by_id.get(match(record.key)) if record.format == "mmaccel" else None
        if sample is None and record.format == "llava":
            sample = _resolve_llava(benchmark, by_llava_id.get(match(record.key), []), record, taken, path)
        if sample is None:
            unknown.append(record.key)
            continue
        if sample.id in taken:
            raise DataError(
                f"{path}:{record.line}: second prediction for question {sample.id} "
                f"(first on line {taken[sample.id].line})"
            )
        taken[sample.id] = record
    missing = [sample.id for sample in samples if sample.id not in taken]
    if unknown:
        message = f"{path}: {len(unknown)} prediction(s) match no {benchmark.name} question, e.g. ids {unknown[:5]}"
        if on_unknown == "error":
            raise DataError(message + " (wrong dataset version or split? --unknown ignore to drop them)")
        log.warning("%s; ignored", message)
    if missing:
        message = f"{path}: {len(missing)} of {len(samples)} question(s) have no prediction, e.g. ids {missing[:5]}"
        if on_missing == "error":
            raise DataError(message + " (--missing wrong scores them as wrong, --missing skip leaves them out)")
        log.warning("%s; %s", message, "scored as wrong" if on_missing == "wrong" else "left out of the score")
    pairs = []
    for sample in samples:
        if sample.id in taken:
            pairs.append((sample, taken[sample.id].text))
        elif on_missing == "wrong":
            pairs.append((sample, None))
    report = JoinReport(
        str(path), records[0].format, len(records), len(taken), missing, unknown, on_missing, len(excluded)
    )
    return pairs, report


def _resolve_llava(
    benchmark: Benchmark,
    candidates: list[Sample],
    record: PredictionRecord,
    taken: dict[str, PredictionRecord],
    path: str | Path,
) -> Sample | None:
    """The sample a LLaVA answer line belongs to; uses the prompt when the question_id is shared."""
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    if record.prompt is None:
        raise DataError(
            f"{path}:{record.line}: question_id {record.key} is shared by {len(candidates)} questions and the "
            "line has no 'prompt' to tell them apart"
        )
    key = benchmark.question_key(record.prompt)
    matches = [s for s in candidates if benchmark.question_key(s.question) == key]
    free = [s for s in matches if s.id not in taken]
    if not matches:
        return None
    return free[0] if free else matches[0]  # a duplicate then raises in the caller, naming both lines
