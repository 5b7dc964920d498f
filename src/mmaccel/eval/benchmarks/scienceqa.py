"""ScienceQA-IMG: multiple choice over 2-5 options, questions with an image from the test split (2,017).

References:
    * ``"llava"``: haotian-liu/LLaVA:llava/eval/eval_science_qa.py. The answer counts as letter X when it is
      exactly ``X``, or starts with ``"X. "``, or contains exactly one match of ``The answer is ([A-Z]).``
      (the ``.`` matches any character); otherwise it is ``FAILED``. A letter beyond the number of choices is
      wrong. Prompt of haotian-liu/LLaVA:llava/eval/model_vqa_science.py with ``--single-pred-prompt``.
    * ``"lmms_eval"``: EvolvingLMMs-Lab/lmms-eval:lmms_eval/tasks/scienceqa/utils.py (since 8ada8050): after
      ``strip()``, correct when it equals the letter case-insensitively, or when it is at least 2 characters
      with an uppercase first letter equal to the target and ``.`` second.
    * ``"vlmevalkit"``: open-compass/VLMEvalKit ``ScienceQA_TEST``: vanilla multiple choice with ``can_infer``
      (see :mod:`mmaccel.eval.benchmarks.mmbench`); prompt ``{hint}\\n{question}\\nA. ...`` without "Context:".

Differences from reference:
    * No LLM judge for VLMEvalKit answers that ``can_infer`` cannot read.
    * Only questions with an image are loaded; the headline is LLaVA's IMG-Accuracy over them.
"""

from __future__ import annotations

import re
import string
from typing import Any, ClassVar

from mmaccel.eval.benchmarks.base import LETTER_SUFFIX, Benchmark, Sample
from mmaccel.eval.benchmarks.registry import register_benchmark

__all__ = ["ScienceQAImg", "parse_scienceqa_llava"]

OPTIONS = ("A", "B", "C", "D", "E")
_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")


def parse_scienceqa_llava(text: str) -> str:
    """The letter LLaVA's eval_science_qa.py reads from an answer, or ``"FAILED"``."""
    if text in OPTIONS:
        return text
    if len(text) >= 3 and text[0] in OPTIONS and text[1:3] == ". ":
        return text[0]
    matches = _ANSWER_IS.findall(text)
    return matches[0] if len(matches) == 1 else "FAILED"


def lmms_eval_correct(text: str, target: str) -> bool:
    """lmms-eval's ScienceQA rule (HEAD): letter case-insensitively, or an ``"X."`` prefix."""
    pred = text.strip()
    if pred.lower() == target.lower():
        return True
    return len(pred) >= 2 and pred[0].isupper() and pred[1] == "." and pred[0].lower() == target.lower()


def format_choices(choices: list[str]) -> str:
    return "\n".join(f"{letter}. {choice}" for letter, choice in zip(string.ascii_uppercase, choices))


@register_benchmark
class ScienceQAImg(Benchmark):
    name = "scienceqa_img"
    headline = "img_accuracy"
    references: ClassVar[dict[str, str]] = {
        "llava": "haotian-liu/LLaVA:llava/eval/eval_science_qa.py",
        "lmms_eval": "EvolvingLMMs-Lab/lmms-eval:lmms_eval/tasks/scienceqa/utils.py",
        "vlmevalkit": "open-compass/VLMEvalKit:vlmeval/utils/matching_util.py",
    }
    description = "ScienceQA test, questions with an image; multiple-choice accuracy"

    def prompt(self, sample: Sample, protocol: str = "llava") -> str:
        hint = sample.meta.get("hint") or ""
        choices = format_choices(sample.meta["choices"])
        if self.check(protocol) == "vlmevalkit":
            context = f"{hint}\n" if hint else ""
        else:
            context = f"Context: {hint}\n" if hint else ""
        return f"{context}{sample.question}\n{choices}{LETTER_SUFFIX}"

    def score(self, sample: Sample, prediction: str, protocol: str = "llava") -> dict[str, Any]:
        self.check(protocol)
        choices = sample.meta["choices"]
        target = string.ascii_uppercase[int(sample.answers[0])]
        if protocol == "llava":
            parsed = parse_scienceqa_llava(prediction)
            correct = parsed in OPTIONS[: len(choices)] and parsed == target
        elif protocol == "lmms_eval":
            parsed = prediction.strip()
            correct = lmms_eval_correct(prediction, target)
        else:
            from mmaccel.eval.benchmarks.mmbench import can_infer

            parsed = can_infer(prediction, dict(zip(string.ascii_uppercase, choices))) or "FAILED"
            correct = parsed == target
        return {"id": sample.id, "parsed": parsed, "target": target, "correct": float(correct)}

    def aggregate(self, rows: list[dict[str, Any]], protocol: str = "llava") -> dict[str, Any]:
        self.check(protocol)
        n = len(rows)
        accuracy = 100 * sum(r["correct"] for r in rows) / n if n else 0.0
        return {
            "headline": "img_accuracy",
            "img_accuracy": accuracy,
            "n": n,
            "failed": sum(1 for r in rows if r["parsed"] == "FAILED"),
        }
