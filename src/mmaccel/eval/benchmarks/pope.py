"""POPE: yes/no object-hallucination probing, scored with F1 per split (adversarial, popular, random).

References:
    * ``"llava"``: haotian-liu/LLaVA:llava/eval/eval_pope.py (same logic as AoiDragon/POPE:evaluate.py). The
      answer is cut at the first ``.``, commas are removed, it is split on single spaces, and it reads as no
      when ``No``, ``no`` or ``not`` is a word (case-sensitive: ``"NO"`` reads as yes); anything else is yes.
      The LLaVA-1.5 headline is the mean F1 over the three splits.
    * ``"lmms_eval"``: EvolvingLMMs-Lab/lmms-eval:lmms_eval/tasks/pope/utils.py. ``pred.lower().strip()`` must
      equal ``"yes"``/``"no"`` exactly; other answers are wrong for accuracy and left out of precision/recall.
      Metrics are pooled over all rows, and its ``yes_ratio`` counts ground-truth yes (kept, as it is what
      lmms-eval reports; ``pred_yes_ratio`` is added beside it).
    * ``"vlmevalkit"``: open-compass/VLMEvalKit:vlmeval/dataset/utils/yorn.py (``YOrN_Extraction`` and
      ``POPE_rating``) with exact matching: yes when ``yes`` is a word and ``no`` is not, no for the reverse,
      otherwise unknown (wrong, and not yes). ``Overall`` is the pooled F1.

Differences from reference:
    * Predictions are joined to labels by id, not zipped by position as eval_pope.py does.
    * Divisions by zero give 0.0 (eval_pope.py raises).
    * No LLM judge for VLMEvalKit's unknown answers (its ``exact_matching`` mode).
    * Every protocol reports per-split and pooled numbers; the headline follows the protocol's reference.
"""

from __future__ import annotations

from typing import Any, ClassVar

from mmaccel.eval.benchmarks.base import SHORT_ANSWER_SUFFIX, Benchmark, Sample
from mmaccel.eval.benchmarks.normalize import PERIOD_STRIP_FIXED, process_punctuation
from mmaccel.eval.benchmarks.registry import register_benchmark

__all__ = ["POPE", "parse_pope"]

SPLITS = ("adversarial", "popular", "random")
# LLaVA's llava_pope_test.jsonl ids: offset + POPE question_id.
LLAVA_ID_OFFSETS = {"adversarial": 0, "random": 10_000_000, "popular": 20_000_000}


def parse_pope(text: str, protocol: str = "llava") -> str:
    """Read a response as ``"yes"``, ``"no"`` or (lmms-eval, VLMEvalKit) something else."""
    if protocol == "llava":
        if "." in text:
            text = text.split(".")[0]
        words = text.replace(",", "").split(" ")
        return "no" if ("No" in words or "not" in words or "no" in words) else "yes"
    if protocol == "lmms_eval":
        return text.lower().strip()
    words = process_punctuation(text.lower(), PERIOD_STRIP_FIXED).split()
    if "yes" in words and "no" not in words:
        return "yes"
    if "no" in words and "yes" not in words:
        return "no"
    return "unknown"


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def binary_metrics(rows: list[dict[str, Any]], protocol: str) -> dict[str, float]:
    """acc/precision/recall/F1/yes-ratio (fractions) of rows with ``label`` and ``parsed``."""
    n = len(rows)
    tp = sum(1 for r in rows if r["label"] == "yes" and r["parsed"] == "yes")
    fp = sum(1 for r in rows if r["label"] != "yes" and r["parsed"] == "yes")
    if protocol == "lmms_eval":  # only exact "no" counts as a negative answer
        fn = sum(1 for r in rows if r["label"] == "yes" and r["parsed"] == "no")
    else:
        fn = sum(1 for r in rows if r["label"] == "yes" and r["parsed"] != "yes")
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    metrics = {
        "acc": _ratio(sum(r["correct"] for r in rows), n),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "pred_yes_ratio": _ratio(sum(1 for r in rows if r["parsed"] == "yes"), n),
        "n": n,
    }
    if protocol == "lmms_eval":
        metrics["yes_ratio"] = _ratio(sum(1 for r in rows if r["label"] == "yes"), n)
    else:
        metrics["yes_ratio"] = metrics["pred_yes_ratio"]
    return metrics


@register_benchmark
class POPE(Benchmark):
    name = "pope"
    headline = "mean_f1"
    references: ClassVar[dict[str, str]] = {
        "llava": "haotian-liu/LLaVA:llava/eval/eval_pope.py",
        "lmms_eval": "EvolvingLMMs-Lab/lmms-eval:lmms_eval/tasks/pope/utils.py",
        "vlmevalkit": "open-compass/VLMEvalKit:vlmeval/dataset/utils/yorn.py",
    }
    description = "POPE object hallucination (COCO), F1 per split"

    def prompt(self, sample: Sample, protocol: str = "llava") -> str:
        if self.check(protocol) == "vlmevalkit":
            return sample.question
        return sample.question + SHORT_ANSWER_SUFFIX

    def score(self, sample: Sample, prediction: str, protocol: str = "llava") -> dict[str, Any]:
        self.check(protocol)
        label = sample.answers[0].lower().strip() if protocol != "llava" else sample.answers[0]
        parsed = parse_pope(prediction, protocol)
        if protocol == "llava":  # eval_pope.py: label 'no' -> 0, anything else -> 1
            label = "no" if label == "no" else "yes"
        return {
            "id": sample.id,
            "category": sample.meta.get("category", ""),
            "label": label,
            "parsed": parsed,
            "correct": float(parsed == label),
        }

    def score_missing(self, sample: Sample, protocol: str = "llava") -> dict[str, Any]:
        """A missing answer reads as the wrong one of yes/no, in accuracy, precision, recall and F1 alike (an
        empty answer would read as yes under the ``llava`` rule, right for every yes question)."""
        row = super().score_missing(sample, protocol)
        row["parsed"] = "no" if row["label"] == "yes" else "yes"
        return row

    def aggregate(self, rows: list[dict[str, Any]], protocol: str = "llava") -> dict[str, Any]:
        """Per-split and pooled metrics in percent; the headline depends on the protocol's reference.

        ``llava``: the headline is ``mean_f1``, the mean of the per-split F1 (the LLaVA-1.5 "POPE" number).
        ``lmms_eval`` and ``vlmevalkit``: the headline is ``f1``, pooled over all rows (their "Overall").
        """
        self.check(protocol)
        splits = sorted({r["category"] for r in rows})
        per_split = {s: binary_metrics([r for r in rows if r["category"] == s], protocol) for s in splits}
        pooled = binary_metrics(rows, protocol)
        result: dict[str, Any] = {"splits": {s: _percent(m) for s, m in per_split.items()}}
        result["pooled"] = _percent(pooled)
        result["mean_f1"] = 100 * sum(m["f1"] for m in per_split.values()) / len(per_split) if per_split else 0.0
        result["f1"] = 100 * pooled["f1"]
        result["acc"] = 100 * pooled["acc"]
        result["yes_ratio"] = 100 * pooled["yes_ratio"]
        result["headline"] = "mean_f1" if protocol == "llava" else "f1"
        result["n"] = len(rows)
        return result


def _percent(metrics: dict[str, float]) -> dict[str, float]:
    return {k: (v if k == "n" else 100 * v) for k, v in metrics.items()}
