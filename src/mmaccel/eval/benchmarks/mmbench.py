"""MMBench: multiple choice with CircularEval (a question counts only if every option rotation is right).

References:
    * ``"llava"``: the MMBench evaluation server LLaVA-1.5 was scored on, i.e. open-compass/VLMEvalKit
      ``mcq_circular_eval`` (vlmeval/dataset/utils/multiple_choice.py) with ``can_infer`` as it was until
      2025-07 (vlmeval/utils/matching_util.py before c3371551). Prompt of
      haotian-liu/LLaVA:llava/eval/model_vqa_mmbench.py (``--single-pred-prompt``).
    * ``"lmms_eval"``: EvolvingLMMs-Lab/lmms-eval:lmms_eval/tasks/mmbench/mmbench_evals.py ``can_infer_option``
      (whitespace split, letters A-E, prefix/suffix forms, gives up on a bare ``A`` with more than 3 tokens)
      and the same circular grouping. Prompt of lmms_eval/tasks/mmbench/en_utils.py.
    * ``"vlmevalkit"``: VLMEvalKit's current ``can_infer`` (the letter must be among the last 4 tokens, the text
      match gives up on long answers, ``answer is X`` accepted). Prompt of vlmeval/vlm/llava/llava.py (the
      layout VLMEvalKit uses for LLaVA-family models; :func:`vlmevalkit_generic_prompt` is its generic one).

Rows ``index + k * 1_000_000`` are the rotations of question ``index``; they are grouped by
``index % 1_000_000``.

Differences from reference:
    * No LLM fallback: an answer ``can_infer`` cannot read makes its group wrong (VLMEvalKit's
      ``exact_matching``). Pass ``judge=`` to :class:`MMBench` to plug one in.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from typing import Any, ClassVar

from mmaccel.eval.benchmarks.base import LETTER_SUFFIX, Benchmark, Sample
from mmaccel.eval.benchmarks.registry import register_benchmark

__all__ = ["MMBench", "can_infer", "lmms_eval_can_infer", "vlmevalkit_generic_prompt"]

CIRCULAR_STRIDE = 1_000_000
CN_SUFFIX = "\n请直接回答选项字母。"
_REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
_ANSWER_IS = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")


def _infer_text(answer: str, choices: dict[str, str], give_up_long: bool = False) -> str | None:
    """The letter whose choice text is the only one contained in the (lowercased) answer."""
    if give_up_long and len(answer) > 2 * sum(len(str(text)) for text in choices.values()):
        return None
    answer = answer.lower()
    hits = [letter for letter, text in choices.items() if str(text).lower() in answer]
    return hits[0] if len(hits) == 1 else None


def can_infer(answer: str, choices: dict[str, str], version: str = "legacy") -> str | None:
    """VLMEvalKit's letter extraction; ``None`` when it cannot tell.

    Args:
        answer: the model's response.
        choices: option letter -> option text, only the options the question has.
        version: ``"legacy"`` (until 2025-07, the MMBench server era) or ``"head"`` (2025-08 onwards: the
            letter must be among the last 4 tokens, long answers skip the text match, and since 2026-06
            ``answer is X`` is accepted).
    """
    answer = str(answer)
    if "Failed to obtain answer via API" in answer:  # the option match gives up; the text match still runs
        return _infer_text(answer, choices, give_up_long=version == "head")
    if any(refusal in answer for refusal in _REFUSALS):
        return "Z"
    if version == "head":
        match = _ANSWER_IS.search(answer)
        if match and match.group(1) in choices:
            return match.group(1)
    spaced = answer
    for char in ".()[],:;!*#{}":
        spaced = spaced.replace(char, " ")
    tokens = spaced.split()
    if version == "head":
        tokens_for_letters = tokens[max(0, len(tokens) - 4) :]
    else:
        tokens_for_letters = tokens
    found = [letter for letter in choices if letter in tokens_for_letters]
    if len(found) == 1:
        return found[0]
    if not found and "Z" in tokens_for_letters:
        return "Z"
    return _infer_text(answer, choices, give_up_long=version == "head")


_LMMS_FORMS = (
    ("", "."), ("", ","), ("", ":"), ("", ")"), ("", ")."), ("(", ")"), ("(", ")."),
    (":", ""), (":", ","), (":", "."), (":", ")"), (":", ")."),
)  # fmt: skip


def lmms_eval_can_infer(answer: str, choices: dict[str, str]) -> str | None:
    """lmms-eval's MMBench extraction (letters A-E, no punctuation removal), then its text match."""
    tokens = [token.strip() for token in answer.split()]
    letters = "ABCDE"
    plain = [letter for letter in letters if letter in tokens]
    if len(plain) == 1:
        if "A" in tokens and len(tokens) > 3:
            return _infer_text(answer, choices)
        return plain[0]
    for prefix, suffix in _LMMS_FORMS:
        formed = [letter for letter in letters if prefix + letter + suffix in tokens]
        if len(formed) == 1:
            return formed[0]
    return _infer_text(answer, choices)


def option_letters(sample: Sample) -> dict[str, str]:
    return dict(sample.meta["options"])


def vlmevalkit_generic_prompt(sample: Sample) -> str:
    """VLMEvalKit ``ImageMCQDataset.build_prompt`` (used for models without their own prompt)."""
    hint = sample.meta.get("hint")
    prompt = f"Hint: {hint}\n" if hint else ""
    prompt += f"Question: {sample.question}\n"
    options = option_letters(sample)
    if options:
        prompt += "Options:\n" + "".join(f"{k}. {v}\n" for k, v in options.items())
        prompt += "Please select the correct answer from the options above. \n"
    return prompt


@register_benchmark
class MMBench(Benchmark):
    name = "mmbench"
    headline = "circular_accuracy"
    references: ClassVar[dict[str, str]] = {
        "llava": "open-compass/VLMEvalKit:vlmeval/dataset/utils/multiple_choice.py (can_infer until 2025-07)",
        "lmms_eval": "EvolvingLMMs-Lab/lmms-eval:lmms_eval/tasks/mmbench/mmbench_evals.py",
        "vlmevalkit": "open-compass/VLMEvalKit:vlmeval/dataset/utils/multiple_choice.py (can_infer HEAD)",
    }
    description = "MMBench dev, CircularEval accuracy"

    def __init__(self, judge: Callable[[str, dict[str, str]], str | None] | None = None):
        self.judge = judge

    def prompt(self, sample: Sample, protocol: str = "llava") -> str:
        options = option_letters(sample)
        hint = sample.meta.get("hint")
        lines = "\n".join(f"{k}. {v}" for k, v in options.items())
        suffix = CN_SUFFIX if sample.meta.get("lang") == "cn" else LETTER_SUFFIX
        if self.check(protocol) == "lmms_eval":
            head = f"{hint} {sample.question}" if hint else sample.question
            return f"{head} There are several options:\n{lines}{LETTER_SUFFIX}"
        head = f"{hint}\n{sample.question}" if hint else sample.question
        return f"{head}\n{lines}{suffix}"

    def score(self, sample: Sample, prediction: str, protocol: str = "llava") -> dict[str, Any]:
        self.check(protocol)
        options = option_letters(sample)
        if protocol == "lmms_eval":
            parsed = lmms_eval_can_infer(prediction, options)
        else:
            parsed = can_infer(prediction, options, "legacy" if protocol == "llava" else "head")
        if parsed is None and self.judge is not None:
            parsed = self.judge(prediction, options)
        index = int(sample.meta["index"])
        return {
            "id": sample.id,
            "index": index,
            "group": index % CIRCULAR_STRIDE,
            "category": sample.meta.get("category", ""),
            "l2_category": sample.meta.get("l2_category", ""),
            "parsed": parsed,
            "target": sample.answers[0],
            "correct": float(parsed == sample.answers[0]),
        }

    def aggregate(self, rows: list[dict[str, Any]], protocol: str = "llava") -> dict[str, Any]:
        """CircularEval: a group hits when every pass parses to its own answer; reported in percent."""
        self.check(protocol)
        groups: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            groups[row["group"]].append(row)
        hits = {group: float(all(r["correct"] for r in members)) for group, members in groups.items()}
        result: dict[str, Any] = {
            "headline": "circular_accuracy",
            "circular_accuracy": 100 * sum(hits.values()) / len(hits) if hits else 0.0,
            "questions": len(groups),
            "n": len(rows),
            "pass_accuracy": 100 * sum(r["correct"] for r in rows) / len(rows) if rows else 0.0,
            "unparsed": sum(1 for r in rows if r["parsed"] is None),
        }
        for key in ("category", "l2_category"):
            buckets: dict[str, list[float]] = defaultdict(list)
            for group, members in groups.items():
                main = min(members, key=lambda r: r["index"])
                buckets[main[key]].append(hits[group])
            result[f"by_{key}"] = {name: 100 * sum(v) / len(v) for name, v in sorted(buckets.items()) if name}
        return result
