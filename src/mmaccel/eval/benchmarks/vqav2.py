"""VQAv2: VQA accuracy over 10 human answers, by the official rules.

References:
    * ``"llava"``: haotian-liu/LLaVA:scripts/convert_vqav2_for_submission.py passes every prediction through
      ``EvalAIAnswerProcessor``; the EvalAI server then runs the official
      GT-Vision-Lab/VQA:PythonEvaluationTools/vqaEvaluation/vqaEval.py, which normalises prediction and human
      answers only when the human answers are not all identical. Locally: ``official(EvalAI(pred), answers)``.
    * ``"lmms_eval"``: EvolvingLMMs-Lab/lmms-eval:lmms_eval/tasks/vqav2/utils.py (since 28ea9a11): punctuation
      and digit/article steps on both sides, always, without word_tokenize.
    * ``"vlmevalkit"``: VLMEvalKit has no VQAv2 task; this applies its ``vqa_score`` rule
      (open-compass/VLMEvalKit:vlmeval/dataset/utils/vqa_eval.py) for comparison.

Also reported: accuracy per answer type (``yes/no``, ``number``, ``other``) when the data has it.

Differences from reference:
    * test-dev and test-std answers are only on the EvalAI server; local scoring needs the val annotations.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, ClassVar

from mmaccel.eval.benchmarks.base import SHORT_ANSWER_SUFFIX, Benchmark, Sample
from mmaccel.eval.benchmarks.normalize import (
    evalai_normalize,
    lmms_eval_vqav2_normalize,
    official_normalize,
    vlmevalkit_normalize,
    vqa_accuracy,
)
from mmaccel.eval.benchmarks.registry import register_benchmark
from mmaccel.eval.benchmarks.vqa_common import mean_percent

__all__ = ["VQAv2", "vqav2_accuracy"]


def vqav2_accuracy(prediction: str, answers: list[str], protocol: str = "llava") -> float:
    """Per-question VQAv2 accuracy under ``protocol`` (``"official"`` = the raw official evaluation)."""
    if protocol == "official":
        return vqa_accuracy(prediction, answers, official_normalize, conditional=True)
    if protocol == "llava":
        return vqa_accuracy(evalai_normalize(prediction), answers, official_normalize, conditional=True)
    if protocol == "lmms_eval":
        return vqa_accuracy(prediction, answers, lmms_eval_vqav2_normalize)
    return vqa_accuracy(prediction, answers, vlmevalkit_normalize)


@register_benchmark
class VQAv2(Benchmark):
    name = "vqav2"
    headline = "accuracy"
    references: ClassVar[dict[str, str]] = {
        "llava": (
            "haotian-liu/LLaVA:scripts/convert_vqav2_for_submission.py + "
            "GT-Vision-Lab/VQA:PythonEvaluationTools/vqaEvaluation/vqaEval.py"
        ),
        "lmms_eval": "EvolvingLMMs-Lab/lmms-eval:lmms_eval/tasks/vqav2/utils.py",
        "vlmevalkit": "open-compass/VLMEvalKit:vlmeval/dataset/utils/vqa_eval.py (vqa_score)",
    }
    description = "VQAv2, VQA accuracy (val annotations locally)"

    def prompt(self, sample: Sample, protocol: str = "llava") -> str:
        self.check(protocol)
        return sample.question + SHORT_ANSWER_SUFFIX

    def score(self, sample: Sample, prediction: str, protocol: str = "llava") -> dict[str, Any]:
        self.check(protocol)
        return {
            "id": sample.id,
            "answer_type": sample.meta.get("answer_type", ""),
            "accuracy": vqav2_accuracy(prediction, sample.answers, protocol),
        }

    def aggregate(self, rows: list[dict[str, Any]], protocol: str = "llava") -> dict[str, Any]:
        self.check(protocol)
        by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            if row["answer_type"]:
                by_type[row["answer_type"]].append(row)
        result = {"headline": "accuracy", "accuracy": mean_percent(rows), "n": len(rows)}
        if by_type:
            result["by_answer_type"] = {kind: mean_percent(members) for kind, members in sorted(by_type.items())}
        return result
