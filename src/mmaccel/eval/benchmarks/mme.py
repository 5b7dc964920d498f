"""MME: 14 yes/no subtasks, two questions per image; score = 100*acc + 100*acc+ per subtask.

References:
    * ``"llava"``: BradyFU/Awesome-Multimodal-Large-Language-Models (branch Evaluation):
      tools/eval_tool.zip -> eval_tool/calculation.py, as LLaVA runs it after
      haotian-liu/LLaVA:scripts/convert_answer_to_mme.py. The answer is lowercased; ``yes``/``no`` as is,
      else ``yes`` if ``"yes"`` is in its first 4 characters, else ``no`` if ``"no"`` is, else ``other``
      (wrong). So "Not sure", "None" and "know" read as no, "Yesterday" as yes.
    * ``"lmms_eval"``: EvolvingLMMs-Lab/lmms-eval:lmms_eval/tasks/mme/utils.py: ``lower().strip()`` and ``.``
      removed, single ``y``/``n`` accepted, then the same 4-character rule. Same aggregation.
    * ``"vlmevalkit"``: open-compass/VLMEvalKit:vlmeval/dataset/image_yorn.py (``MME_rating``) with
      ``YOrN_Extraction`` and exact matching (unknown is wrong); its cognition total is named ``reasoning``.

acc is the accuracy over the subtask's questions; acc+ the share of images whose questions are all right.
Perception sums 10 subtasks (max 2000), cognition 4 (max 800).

Differences from reference:
    * Questions are grouped by (subtask, image id), not by consecutive lines of a file.
    * No LLM judge for VLMEvalKit's unknown answers.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any, ClassVar

from mmaccel.eval.benchmarks.base import SHORT_ANSWER_SUFFIX, Benchmark, Sample
from mmaccel.eval.benchmarks.pope import parse_pope
from mmaccel.eval.benchmarks.registry import register_benchmark

__all__ = ["COGNITION", "MME", "PERCEPTION", "parse_mme"]

PERCEPTION = (
    "existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR",
)  # fmt: skip
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
YES_NO_SUFFIX = " Please answer yes or no."
_IMAGE_SUFFIX = re.compile(r"\.(png|jpe?g|bmp|gif|webp)$", re.IGNORECASE)


def parse_mme(text: str, protocol: str = "llava") -> str:
    """Read a response as ``"yes"``, ``"no"`` or ``"other"``/``"unknown"``."""
    if protocol == "vlmevalkit":
        return parse_pope(text, "vlmevalkit")
    text = text.lower()
    if protocol == "lmms_eval":
        text = text.strip().replace(".", "")
        if len(text) == 1:
            return {"y": "yes", "n": "no"}.get(text, "other")
    if text in ("yes", "no"):
        return text
    if "yes" in text[:4]:
        return "yes"
    if "no" in text[:4]:
        return "no"
    return "other"


@register_benchmark
class MME(Benchmark):
    name = "mme"
    headline = "perception"
    references: ClassVar[dict[str, str]] = {
        "llava": "BradyFU/Awesome-Multimodal-Large-Language-Models@Evaluation:tools/eval_tool/calculation.py",
        "lmms_eval": "EvolvingLMMs-Lab/lmms-eval:lmms_eval/tasks/mme/utils.py",
        "vlmevalkit": "open-compass/VLMEvalKit:vlmeval/dataset/image_yorn.py",
    }
    description = "MME perception and cognition, 100*acc + 100*acc+ per subtask"

    def prompt(self, sample: Sample, protocol: str = "llava") -> str:
        """LLaVA and lmms-eval replace " Please answer yes or no." by the short-answer suffix."""
        if self.check(protocol) == "vlmevalkit":
            return sample.question
        return sample.question.replace(YES_NO_SUFFIX, SHORT_ANSWER_SUFFIX)

    def match_key(self, question_id: str) -> str:
        """Ids name the image file (``existence/images/000.jpg#0``); joined without its suffix, so scoring needs
        only the question files, not the images (whose suffix it then cannot know)."""
        path, hash_, index = question_id.partition("#")
        return _IMAGE_SUFFIX.sub("", path) + hash_ + index

    def question_key(self, text: str) -> str:
        return super().question_key(text.replace(YES_NO_SUFFIX.strip(), ""))

    def score(self, sample: Sample, prediction: str, protocol: str = "llava") -> dict[str, Any]:
        self.check(protocol)
        gold = sample.answers[0].lower()
        if protocol == "lmms_eval":
            gold = gold.strip().replace(".", "")
        parsed = parse_mme(prediction, protocol)
        return {
            "id": sample.id,
            "category": sample.meta["category"],
            "image_id": sample.meta.get("image_id", sample.id),
            "label": gold,
            "parsed": parsed,
            "correct": float(parsed == gold),
        }

    def aggregate(self, rows: list[dict[str, Any]], protocol: str = "llava") -> dict[str, Any]:
        self.check(protocol)
        by_category: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for row in rows:
            by_category[row["category"]][row["image_id"]].append(row["correct"])
        subtasks: dict[str, dict[str, float]] = {}
        for category, images in sorted(by_category.items()):
            answers = [c for per_image in images.values() for c in per_image]
            acc = 100 * sum(answers) / len(answers)
            acc_plus = 100 * sum(1 for per_image in images.values() if all(per_image)) / len(images)
            subtasks[category] = {"acc": acc, "acc_plus": acc_plus, "score": acc + acc_plus, "n": len(answers)}
        cognition_key = "reasoning" if protocol == "vlmevalkit" else "cognition"
        result: dict[str, Any] = {
            "headline": "perception",
            "perception": sum(subtasks[c]["score"] for c in PERCEPTION if c in subtasks),
            cognition_key: sum(subtasks[c]["score"] for c in COGNITION if c in subtasks),
            "subtasks": subtasks,
            "n": len(rows),
            "other_answers": sum(1 for row in rows if row["parsed"] not in ("yes", "no")),
        }
        missing = [c for c in PERCEPTION + COGNITION if c not in subtasks]
        if missing:
            result["missing_subtasks"] = missing
        unknown = sorted(set(subtasks) - set(PERCEPTION) - set(COGNITION))
        if unknown:
            result["unknown_subtasks"] = unknown
        return result
