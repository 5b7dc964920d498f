"""TextVQA (val): VQA accuracy over 10 human answers, after the EvalAI answer processor.

References:
    * ``"llava"``: haotian-liu/LLaVA:llava/eval/eval_textvqa.py with ``TextVQAAccuracyEvaluator`` and
      ``EvalAIAnswerProcessor`` of llava/eval/m4c_evaluator.py: the processor on the prediction and on every
      human answer, then the leave-one-out mean of ``min(1, matches / 3)``. The prompt carries the OCR tokens
      (``Reference OCR token: ...``), as in LLaVA's ``llava_textvqa_val_v051_ocr.jsonl``.
    * ``"lmms_eval"``: EvolvingLMMs-Lab/lmms-eval:lmms_eval/tasks/textvqa/utils.py: numerically identical
      scoring; the prompt has no OCR line (its default ``ocr: false``).
    * ``"vlmevalkit"``: open-compass/VLMEvalKit:vlmeval/dataset/utils/vqa_eval.py ``process_line`` with
      ``vqa_score``: its own normaliser (``"5."`` stays ``"5."``, commas become spaces) on both sides; no OCR.

Differences from reference:
    * LLaVA finds the annotation of an answer by ``(image_id, question.lower())``; mmaccel joins by question id
      and falls back to that key only for LLaVA answer files (whose ``question_id`` is the image id).
"""

from __future__ import annotations

from typing import Any, ClassVar

from mmaccel.errors import DataError
from mmaccel.eval.benchmarks.base import SHORT_ANSWER_SUFFIX, Benchmark, Sample
from mmaccel.eval.benchmarks.normalize import evalai_normalize, vlmevalkit_normalize, vqa_accuracy
from mmaccel.eval.benchmarks.registry import register_benchmark
from mmaccel.eval.benchmarks.vqa_common import mean_percent

__all__ = ["TextVQA"]


@register_benchmark
class TextVQA(Benchmark):
    name = "textvqa"
    headline = "accuracy"
    references: ClassVar[dict[str, str]] = {
        "llava": "haotian-liu/LLaVA:llava/eval/m4c_evaluator.py",
        "lmms_eval": "EvolvingLMMs-Lab/lmms-eval:lmms_eval/tasks/textvqa/utils.py",
        "vlmevalkit": "open-compass/VLMEvalKit:vlmeval/dataset/utils/vqa_eval.py",
    }
    description = "TextVQA val, VQA accuracy"

    def prompt(self, sample: Sample, protocol: str = "llava") -> str:
        if self.check(protocol) == "vlmevalkit":
            return sample.question + SHORT_ANSWER_SUFFIX
        question = sample.question.capitalize()
        if protocol == "llava":
            if sample.meta.get("ocr_tokens") is None:
                raise DataError(
                    f"TextVQA question {sample.id} has no OCR tokens; the 'llava' prompt needs them "
                    "(llava_textvqa_val_v051_ocr.jsonl or an ocr_tokens column)"
                )
            ocr = ", ".join(sample.meta["ocr_tokens"])
            return f"{question}\nReference OCR token: {ocr}{SHORT_ANSWER_SUFFIX}"
        return question + SHORT_ANSWER_SUFFIX

    def score(self, sample: Sample, prediction: str, protocol: str = "llava") -> dict[str, Any]:
        self.check(protocol)
        normalizer = vlmevalkit_normalize if protocol == "vlmevalkit" else evalai_normalize
        return {"id": sample.id, "accuracy": vqa_accuracy(prediction, sample.answers, normalizer)}

    def aggregate(self, rows: list[dict[str, Any]], protocol: str = "llava") -> dict[str, Any]:
        self.check(protocol)
        return {"headline": "accuracy", "accuracy": mean_percent(rows), "n": len(rows)}
