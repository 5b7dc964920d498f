"""Video-MME: 2,700 four-option questions on 900 videos, 300 each short (< 2 min), medium (4-15 min), long.

References:
    * ``"official"``: BradyFU/Video-MME ``eval_your_results.py`` (linked from its README). The letter is the
      first capital A-D anywhere in the response, even inside a word, after removing a few answer prefixes
      (:func:`~mmaccel.eval.benchmarks.mcq.videomme_official`); a response without one is *left out of the
      denominator* (counted in ``unparsed``). Prompt of its README.
    * ``"lmms_eval"``: EvolvingLMMs-Lab/lmms-eval ``tasks/videomme/utils.py``: every question in the
      denominator; letters read by the priority-based ``extract_mcq_answer`` used since 2026-04
      (:func:`~mmaccel.eval.benchmarks.mcq.extract_mcq_answer`). ``VideoMME(lmms_eval_rule="legacy")`` reads
      them with the earlier ``extract_characters_regex`` (the official rule with its prefix list fixed).

Registered twice: ``videomme`` (prompts without subtitles) and ``videomme_w_subtitle`` (prompts with the
video's subtitles, ``subtitle/<videoID>.srt``; "No subtitles available" where the video has none). Scoring is
the same; the metrics say which. Accuracy per duration, task type (12), domain (6) and sub-category (30).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

from mmaccel.errors import ConfigError, DataError
from mmaccel.eval.benchmarks.base import Sample
from mmaccel.eval.benchmarks.loaders import read_json
from mmaccel.eval.benchmarks.mcq import extract_mcq_answer, videomme_lmms_eval_legacy, videomme_official
from mmaccel.eval.benchmarks.registry import register_benchmark
from mmaccel.eval.benchmarks.video_common import (
    VideoBenchmark,
    accuracy_table,
    count_table,
    first_existing,
    percent,
    subtitle_text,
)

__all__ = ["DURATIONS", "TASK_TYPES", "VideoMME", "VideoMMESubtitles", "load_videomme"]

DURATIONS = ("short", "medium", "long")
TASK_TYPES = (
    "Temporal Perception", "Spatial Perception", "Attribute Perception", "Action Recognition", "Object Recognition",
    "OCR Problems", "Counting Problem", "Temporal Reasoning", "Spatial Reasoning", "Action Reasoning",
    "Object Reasoning", "Information Synopsis",
)  # fmt: skip
DOMAINS = ("Knowledge", "Film & Television", "Sports Competition", "Artistic Performance", "Life Record",
           "Multilingual")  # fmt: skip
INSTRUCTION = (
    "Select the best answer to the following multiple-choice question based on the video. "
    "Respond with only the letter (A, B, C, or D) of the correct option."
)
INSTRUCTION_SUBTITLES_LMMS = (
    "Select the best answer to the following multiple-choice question based on the video and the subtitles. "
    "Respond with only the letter (A, B, C, or D) of the correct option."
)
SUBTITLE_HEAD = "This video's subtitles are listed below:"
NO_SUBTITLES = "No subtitles available"
ANSWER_CUE = "The best answer is:"
LMMS_EVAL_RULES = ("2026-04", "legacy")
_LABEL = re.compile(r"^\s*([A-D])[.)]\s*")
_YOUTUBE_ID = re.compile(r"[?&]v=([\w-]+)")


def _options(lines: list[str], where: str) -> tuple[dict[str, str], list[str]]:
    """Letter -> text, and the option lines as printed (``"A. text"``); unlabelled options get A-D in order."""
    letters, texts, printed = [], [], []
    for position, line in enumerate(lines):
        match = _LABEL.match(str(line))
        letter = match[1] if match else "ABCD"[position]
        text = str(line)[match.end() :] if match else str(line)
        letters.append(letter)
        texts.append(text)
        printed.append(str(line) if match else f"{letter}. {text}")
    if len(lines) != 4 or sorted(letters) != list("ABCD"):
        raise DataError(f"{where}: expected four options labelled A-D, got {lines!r}")
    return dict(zip(letters, texts)), printed


def _files(root: Path, video_key: str) -> dict[str, str]:
    video = first_existing([root / folder / f"{video_key}.mp4" for folder in ("data", "videos", "video", ".")])
    subtitle = first_existing([root / folder / f"{video_key}.srt" for folder in ("subtitle", "subtitles", ".")])
    return {"video": str(video), "subtitle": str(subtitle) if subtitle.is_file() else ""}


def _sample(root: Path, video: dict[str, Any], question: dict[str, Any], where: str) -> Sample:
    for key in ("question_id", "task_type", "question", "options", "answer"):
        if key not in question:
            raise DataError(f"{where}: question {question.get('question_id', '?')} has no field {key!r}")
    key = video.get("videoID") or ""
    if not key and video.get("url"):
        found = _YOUTUBE_ID.search(str(video["url"]))
        key = found[1] if found else ""
    key = str(key or video["video_id"])
    options, printed = _options(list(question["options"]), f"{where}: question {question['question_id']}")
    if question["answer"] not in options:
        raise DataError(f"{where}: question {question['question_id']} answer {question['answer']!r} is not A-D")
    meta = {
        "options": options, "option_lines": printed, "duration": str(video["duration"]),
        "domain": str(video.get("domain", "")), "sub_category": str(video.get("sub_category", "")),
        "task_type": str(question["task_type"]), "video_id": str(video["video_id"]), "video_key": key,
        **_files(root, key),
    }  # fmt: skip
    return Sample(id=str(question["question_id"]), question=str(question["question"]), answers=[question["answer"]],
                  meta=meta)  # fmt: skip


def _durations(split: str | None) -> tuple[str, ...]:
    if split is None or split in ("test", "all"):
        return DURATIONS
    chosen = tuple(part.strip() for part in split.split(","))
    bad = [part for part in chosen if part not in DURATIONS]
    if bad:
        raise ConfigError(f"split={split!r}: Video-MME splits are durations, one or more of {', '.join(DURATIONS)}")
    return chosen


def _official_videos(root: Path) -> tuple[list[dict[str, Any]], Path]:
    """The official JSON (a list of videos, each with its ``questions``) at the top of ``root``."""
    found = []
    for path in sorted(root.glob("*.json")):
        value = read_json(path)
        if isinstance(value, list) and value and isinstance(value[0], dict) and "questions" in value[0]:
            found.append((value, path))
    if not found:
        raise DataError(
            f"{root} matches neither Video-MME layout: expected lmms-lab parquet files (videomme/test-*.parquet) "
            "or the official JSON (a list of videos with 'questions'); see docs/benchmarks-protocol.md"
        )
    if len(found) > 1:
        raise DataError(f"{root}: several Video-MME JSON files {[str(p.name) for _, p in found]}; keep one")
    return found[0]


def load_videomme(root: Path, split: str | None) -> tuple[list[Sample], dict[str, Any]]:
    """Read Video-MME from the lmms-lab parquet layout or the official JSON layout."""
    durations = _durations(split)
    if any(root.rglob("*.parquet")):
        from mmaccel.eval.benchmarks.layout_lmms_lab import find_parquet, read_parquet

        columns = ["video_id", "duration", "domain", "sub_category", "question_id", "task_type", "question",
                   "options", "answer"]  # fmt: skip
        files = find_parquet(root, "test", ("videomme",))
        rows = read_parquet(files, columns, ("videoID", "url"))
        samples = [_sample(root, row, row, str(files[0])) for row in rows]
        layout, source = "lmms_lab", files[0]
    else:
        videos, source = _official_videos(root)
        samples = []
        for number, video in enumerate(videos):
            where = f"{source} video #{number}"
            if "duration" not in video or "video_id" not in video:
                raise DataError(f"{where}: needs 'video_id' and 'duration'")
            samples.extend(_sample(root, video, question, where) for question in video["questions"])
        layout = "official"
    unknown = sorted({s.meta["duration"] for s in samples} - set(DURATIONS))
    if unknown:
        raise DataError(f"{source}: unknown duration(s) {unknown}; expected {', '.join(DURATIONS)}")
    samples = [s for s in samples if s.meta["duration"] in durations]
    per_duration = {d: sum(1 for s in samples if s.meta["duration"] == d) for d in durations}
    with_subtitles = sum(1 for s in samples if s.meta["subtitle"])
    version = f"Video-MME ({len(samples)} questions, {len({s.meta['video_id'] for s in samples})} videos)"
    info = {"layout": layout, "split": ",".join(durations), "version": version, "per_duration": per_duration,
            "with_subtitles": with_subtitles}  # fmt: skip
    return samples, info


@register_benchmark
class VideoMME(VideoBenchmark):
    name = "videomme"
    subtitles: ClassVar[bool] = False
    references: ClassVar[dict[str, str]] = {
        "official": "BradyFU/Video-MME:eval_your_results.py (extract_characters_regex; unparsed left out)",
        "lmms_eval": "EvolvingLMMs-Lab/lmms-eval:lmms_eval/tasks/videomme/utils.py (extract_mcq_answer, 2026-04)",
    }
    description = "Video-MME without subtitles: accuracy per duration and task type"

    def __init__(self, lmms_eval_rule: str = "2026-04"):
        if lmms_eval_rule not in LMMS_EVAL_RULES:
            raise ConfigError(f"lmms_eval_rule={lmms_eval_rule!r}: choose one of {', '.join(LMMS_EVAL_RULES)}")
        self.lmms_eval_rule = lmms_eval_rule

    def read(self, root: Path, split: str | None, videos: bool) -> tuple[list[Sample], dict[str, Any]]:
        return load_videomme(root, split)

    def subtitle_block(self, sample: Sample) -> str:
        """The subtitles shown with the question: the cues at ``meta["frame_times"]`` when set, else all."""
        if not sample.meta.get("subtitle"):
            return NO_SUBTITLES
        return subtitle_text(sample.meta["subtitle"], sample.meta.get("frame_times")) or NO_SUBTITLES

    def prompt(self, sample: Sample, protocol: str = "official") -> str:
        self.check(protocol)
        lines = sample.meta.get("option_lines") or [f"{k}. {v}" for k, v in sample.meta["options"].items()]
        body = "\n".join([sample.question, *lines, ANSWER_CUE])
        if not self.subtitles:
            return f"{INSTRUCTION}\n{body}"
        instruction = INSTRUCTION_SUBTITLES_LMMS if protocol == "lmms_eval" else INSTRUCTION
        return f"{SUBTITLE_HEAD}\n{self.subtitle_block(sample)}\n{instruction}\n{body}"

    def parse(self, prediction: str, protocol: str) -> str:
        if protocol == "official":
            return videomme_official(prediction)
        if self.lmms_eval_rule == "legacy":
            return videomme_lmms_eval_legacy(prediction)
        return extract_mcq_answer(prediction, "ABCD")

    def score(self, sample: Sample, prediction: str, protocol: str = "official") -> dict[str, Any]:
        self.check(protocol)
        parsed = self.parse(prediction, protocol)
        target = sample.answers[0]
        return {
            "id": sample.id,
            "parsed": parsed,
            "target": target,
            "correct": float(parsed == target),
            "counted": protocol == "lmms_eval" or parsed != "",
            "duration": sample.meta["duration"],
            "task_type": sample.meta["task_type"],
            "domain": sample.meta.get("domain", ""),
            "sub_category": sample.meta.get("sub_category", ""),
        }

    def aggregate(self, rows: list[dict[str, Any]], protocol: str = "official") -> dict[str, Any]:
        """Overall and per duration / task type / domain / sub-category; percent over the counted rows."""
        self.check(protocol)
        counted = [r for r in rows if r["counted"]]
        by_duration = accuracy_table(rows, "duration", DURATIONS)
        return {
            "headline": "accuracy",
            "accuracy": percent(sum(r["correct"] for r in counted), len(counted)),
            **{d: value for d, value in by_duration.items() if d in DURATIONS},
            "n": len(rows),
            "counted": len(counted),
            "unparsed": sum(1 for r in rows if r["parsed"] == ""),
            "subtitles": self.subtitles,
            "by_duration": by_duration,
            "counted_by_duration": count_table(rows, "duration", DURATIONS),
            "by_task_type": accuracy_table(rows, "task_type", TASK_TYPES),
            "by_domain": accuracy_table(rows, "domain", DOMAINS),
            "by_sub_category": accuracy_table(rows, "sub_category"),
        }


@register_benchmark
class VideoMMESubtitles(VideoMME):
    name = "videomme_w_subtitle"
    subtitles: ClassVar[bool] = True
    description = "Video-MME with subtitles in the prompt: accuracy per duration and task type"
