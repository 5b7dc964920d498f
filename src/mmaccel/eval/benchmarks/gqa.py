"""GQA (testdev-balanced): exact match after a light normalisation.

References:
    * ``"llava"``: haotian-liu/LLaVA:scripts/convert_gqa_for_eval.py (``pred.rstrip('.').lower()``) followed
      by GQA's official ``eval.py`` accuracy: ``prediction == answer`` over balanced questions, nothing else.
      Also reported: ``binary`` and ``open`` accuracy when the data gives ``types.structural``.
    * ``"lmms_eval"``: EvolvingLMMs-Lab/lmms-eval:lmms_eval/tasks/gqa (``exact_match`` with ``ignore_case`` and
      ``ignore_punctuation``): prediction stripped, then both sides lowercased with every ASCII punctuation
      character deleted.
    * ``"vlmevalkit"``: open-compass/VLMEvalKit:vlmeval/dataset/utils/vqa_eval.py ``process_line`` with
      ``accuracy``: ``pred.strip().lower() == gt.strip().lower()``.
"""

from __future__ import annotations

import string
from typing import Any, ClassVar

from mmaccel.eval.benchmarks.base import SHORT_ANSWER_SUFFIX, Benchmark, Sample
from mmaccel.eval.benchmarks.registry import register_benchmark
from mmaccel.eval.benchmarks.vqa_common import mean_percent

__all__ = ["GQA", "gqa_match"]

_DELETE_PUNCTUATION = str.maketrans("", "", string.punctuation)


def gqa_match(prediction: str, gold: str, protocol: str = "llava") -> bool:
    """Whether ``prediction`` counts as ``gold`` under ``protocol``."""
    if protocol == "llava":
        return prediction.rstrip(".").lower() == gold
    if protocol == "lmms_eval":
        return prediction.strip().lower().translate(_DELETE_PUNCTUATION) == gold.lower().translate(_DELETE_PUNCTUATION)
    return prediction.strip().lower() == gold.strip().lower()


@register_benchmark
class GQA(Benchmark):
    name = "gqa"
    headline = "accuracy"
    references: ClassVar[dict[str, str]] = {
        "llava": "haotian-liu/LLaVA:scripts/convert_gqa_for_eval.py + GQA eval.py",
        "lmms_eval": "EvolvingLMMs-Lab/lmms-eval:lmms_eval/tasks/gqa",
        "vlmevalkit": "open-compass/VLMEvalKit:vlmeval/dataset/utils/vqa_eval.py (accuracy)",
    }
    description = "GQA testdev-balanced, exact-match accuracy"

    def prompt(self, sample: Sample, protocol: str = "llava") -> str:
        self.check(protocol)
        return sample.question + SHORT_ANSWER_SUFFIX

    def score(self, sample: Sample, prediction: str, protocol: str = "llava") -> dict[str, Any]:
        self.check(protocol)
        correct = gqa_match(prediction, sample.answers[0], protocol)
        return {"id": sample.id, "structural": sample.meta.get("structural", ""), "accuracy": float(correct)}

    def aggregate(self, rows: list[dict[str, Any]], protocol: str = "llava") -> dict[str, Any]:
        self.check(protocol)
        result: dict[str, Any] = {"headline": "accuracy", "accuracy": mean_percent(rows), "n": len(rows)}
        typed = [row for row in rows if row["structural"]]
        if typed:
            result["binary"] = mean_percent([row for row in typed if row["structural"] != "query"])
            result["open"] = mean_percent([row for row in typed if row["structural"] == "query"])
        return result
