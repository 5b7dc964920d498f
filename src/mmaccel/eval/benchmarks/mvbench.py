"""MVBench: 20 temporal tasks of 200 multiple-choice questions (4,000), options in ``candidates``.

References:
    * ``"official"``: OpenGVLab/Ask-Anything ``video_chat2/mvbench.ipynb``: options printed ``(A) text``, the
      target is ``"(A) text"``, and ``check_ans`` compares only the *first word* of the prediction
      (:func:`~mmaccel.eval.benchmarks.mcq.mvbench_check_ans`). The reference runs the model after the answer
      prompt ``Best option:(`` and stores ``"(" + generation``; :meth:`MVBench.answer_prefix` gives that prompt.
    * ``"lmms_eval"``: EvolvingLMMs-Lab/lmms-eval ``tasks/mvbench/utils.py`` ``mcq_acc``
      (:func:`~mmaccel.eval.benchmarks.mcq.mvbench_lmms_eval_correct`), options printed ``A. text``.

Headline ``average``: the mean of the 20 per-task accuracies (the papers' "Avg"); ``overall`` pools the
questions (the notebook's "Total Acc"; equal when every task has 200).
"""

from __future__ import annotations

import logging
import string
from pathlib import Path
from typing import Any, ClassVar

from mmaccel.errors import ConfigError, DataError
from mmaccel.eval.benchmarks.base import Sample
from mmaccel.eval.benchmarks.loaders import read_json
from mmaccel.eval.benchmarks.mcq import mvbench_check_ans, mvbench_lmms_eval_correct
from mmaccel.eval.benchmarks.registry import register_benchmark
from mmaccel.eval.benchmarks.video_common import (
    VideoBenchmark,
    accuracy_table,
    count_table,
    first_existing,
    percent,
)

__all__ = ["TASKS", "MVBench", "load_mvbench"]

log = logging.getLogger(__name__)

# display name -> (file stem, video folder under video/, clip has start/end, frames are a folder of images at fps)
TASKS: dict[str, tuple[str, str, bool, float | None]] = {
    "Action Sequence": ("action_sequence", "star/Charades_v1_480", True, None),
    "Action Prediction": ("action_prediction", "star/Charades_v1_480", True, None),
    "Action Antonym": ("action_antonym", "ssv2_video", False, None),
    "Fine-grained Action": ("fine_grained_action", "Moments_in_Time_Raw/videos", False, None),
    "Unexpected Action": ("unexpected_action", "FunQA_test/test", False, None),
    "Object Existence": ("object_existence", "clevrer/video_validation", False, None),
    "Object Interaction": ("object_interaction", "star/Charades_v1_480", True, None),
    "Object Shuffle": ("object_shuffle", "perception/videos", False, None),
    "Moving Direction": ("moving_direction", "clevrer/video_validation", False, None),
    "Action Localization": ("action_localization", "sta/sta_video", True, None),
    "Scene Transition": ("scene_transition", "scene_qa/video", False, None),
    "Action Count": ("action_count", "perception/videos", False, None),
    "Moving Count": ("moving_count", "clevrer/video_validation", False, None),
    "Moving Attribute": ("moving_attribute", "clevrer/video_validation", False, None),
    "State Change": ("state_change", "perception/videos", False, None),
    "Fine-grained Pose": ("fine_grained_pose", "nturgbd", False, None),
    "Character Order": ("character_order", "perception/videos", False, None),
    "Egocentric Navigation": ("egocentric_navigation", "vlnqa", False, None),
    "Episodic Reasoning": ("episodic_reasoning", "tvqa/frames_fps3_hq", True, 3.0),
    "Counterfactual Inference": ("counterfactual_inference", "clevrer/video_validation", False, None),
}
_BY_STEM = {stem: name for name, (stem, *_rest) in TASKS.items()}
SYSTEM = (
    "Carefully watch the video and pay attention to the cause and sequence of events, the detail and movement of "
    "objects, and the action and pose of persons. Based on your observations, select the best option that "
    "accurately addresses the question.\n"
)
OFFICIAL_QUESTION_SUFFIX = "\nOnly give the best option."
OFFICIAL_ANSWER_PREFIX = "Best option:("
LMMS_EVAL_SUFFIX = "Answer with the option's letter from the given choices directly."


def _task_names(split: str | None) -> list[str]:
    if split is None or split in ("all", "test", "train"):
        return list(TASKS)
    names = []
    for part in (p.strip() for p in split.split(",")):
        name = part if part in TASKS else _BY_STEM.get(part.replace(".json", ""))
        if name is None:
            raise ConfigError(f"split={part!r}: not an MVBench task; choose from {', '.join(TASKS)} or their files "
                              f"({', '.join(_BY_STEM)})")  # fmt: skip
        names.append(name)
    return names


def _task_file(root: Path, stem: str) -> Path | None:
    for path in (root / "json" / f"{stem}.json", root / f"{stem}.json"):
        if path.is_file():
            return path
    return None


def _read_task(root: Path, name: str, path: Path) -> list[Sample]:
    stem, folder, bounded, frame_fps = TASKS[name]
    items = read_json(path)
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a JSON list of questions")
    samples = []
    for position, item in enumerate(items):
        where = f"{path} item {position}"
        missing = [k for k in ("video", "question", "candidates", "answer") if k not in item]
        if missing:
            raise DataError(f"{where}: missing field(s) {', '.join(missing)}")
        candidates = [str(c) for c in item["candidates"]]
        if item["answer"] not in candidates:
            raise DataError(f"{where}: answer {item['answer']!r} is not among the candidates {candidates}")
        letter = string.ascii_uppercase[candidates.index(item["answer"])]
        video = first_existing([root / "video" / folder / item["video"], root / folder / item["video"]])
        meta: dict[str, Any] = {
            "task": name, "task_file": stem, "options": dict(zip(string.ascii_uppercase, candidates)),
            "answer_text": str(item["answer"]), "video": str(video),
        }  # fmt: skip
        if bounded and "start" in item and "end" in item:
            meta["bound"] = (float(item["start"]), float(item["end"]))
        if frame_fps is not None:
            meta["folder_fps"] = frame_fps  # frames extracted at this rate, numbered from 1
        samples.append(Sample(id=f"{stem}/{position}", question=str(item["question"]), answers=[letter], meta=meta))
    return samples


def load_mvbench(root: Path, split: str | None) -> tuple[list[Sample], dict[str, Any]]:
    """Read the task files ``json/<task>.json`` (or at the top level) of OpenGVLab/MVBench."""
    names = _task_names(split)
    samples, per_task, absent = [], {}, []
    for name in names:
        path = _task_file(root, TASKS[name][0])
        if path is None:
            absent.append(TASKS[name][0])
            continue
        task_samples = _read_task(root, name, path)
        per_task[name] = len(task_samples)
        samples.extend(task_samples)
    if absent and split is not None:
        raise DataError(f"{root}: no task file for {', '.join(absent)} (looked in json/ and the top level)")
    if not per_task:
        raise DataError(f"{root}: no MVBench task file (json/<task>.json, e.g. json/action_sequence.json)")
    if absent:
        log.warning("%s: %d of 20 MVBench tasks have no file (%s); scoring the others", root, len(absent),
                    ", ".join(absent))  # fmt: skip
    version = f"OpenGVLab/MVBench ({len(samples)} questions, {len(per_task)} tasks)"
    return samples, {"layout": "official", "split": split or "all", "version": version, "per_task": per_task,
                     "absent_tasks": absent}  # fmt: skip


@register_benchmark
class MVBench(VideoBenchmark):
    name = "mvbench"
    headline = "average"
    references: ClassVar[dict[str, str]] = {
        "official": "OpenGVLab/Ask-Anything:video_chat2/mvbench.ipynb (check_ans)",
        "lmms_eval": "EvolvingLMMs-Lab/lmms-eval:lmms_eval/tasks/mvbench/utils.py (mcq_acc)",
    }
    description = "MVBench, 20 tasks: per-task accuracy and their mean"

    def read(self, root: Path, split: str | None, videos: bool) -> tuple[list[Sample], dict[str, Any]]:
        return load_mvbench(root, split)

    def prompt(self, sample: Sample, protocol: str = "official") -> str:
        options = sample.meta["options"]
        if self.check(protocol) == "official":
            lines = "\n".join(f"({k}) {v}" for k, v in options.items())
            return f"{SYSTEM}Question: {sample.question}\nOptions:\n{lines}{OFFICIAL_QUESTION_SUFFIX}"
        lines = "".join(f"{k}. {v}\n" for k, v in options.items())
        return f"Question: {sample.question}\nOption:\n{lines}{LMMS_EVAL_SUFFIX}"

    def answer_prefix(self, protocol: str = "official") -> str:
        """Text the reference puts at the start of the model's turn (``Best option:(``; none for lmms-eval)."""
        return OFFICIAL_ANSWER_PREFIX if self.check(protocol) == "official" else ""

    def score(self, sample: Sample, prediction: str, protocol: str = "official") -> dict[str, Any]:
        self.check(protocol)
        letter = sample.answers[0]
        if protocol == "official":
            target = f"({letter}) {sample.meta['answer_text']}"
            parsed, correct = prediction.lower().split(" ")[0], mvbench_check_ans(prediction, target)
        else:
            parsed, correct = mvbench_lmms_eval_correct(prediction, letter)
        return {"id": sample.id, "task": sample.meta["task"], "parsed": parsed, "target": letter,
                "correct": float(correct), "counted": True}  # fmt: skip

    def aggregate(self, rows: list[dict[str, Any]], protocol: str = "official") -> dict[str, Any]:
        """``average`` (mean of the per-task accuracies), ``overall`` (pooled) and ``by_task``."""
        self.check(protocol)
        by_task = accuracy_table(rows, "task", TASKS)
        accuracies = list(by_task.values())
        return {
            "headline": "average",
            "average": sum(accuracies) / len(accuracies) if accuracies else 0.0,
            "overall": percent(sum(r["correct"] for r in rows), len(rows)),
            "tasks": len(by_task),
            "n": len(rows),
            "by_task": by_task,
            "n_by_task": count_table(rows, "task", TASKS),
        }
