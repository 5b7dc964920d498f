"""Letter extraction of the video multiple-choice references (Video-MME, MVBench, NExT-QA), re-implemented.

Each function reproduces one reference rule, quirks included; ``docs/benchmarks-protocol.md`` lists the
per-item test vectors. An empty string (or ``None`` where noted) means "could not read a letter".
"""

from __future__ import annotations

import re

from mmaccel.eval.benchmarks.normalize import process_punctuation

__all__ = [
    "extract_mcq_answer",
    "leading_letter",
    "mvbench_check_ans",
    "mvbench_lmms_eval_correct",
    "parse_multi_choice_response",
    "videomme_lmms_eval_legacy",
    "videomme_official",
]

# BradyFU/Video-MME eval_your_results.py: two commas are missing in its list, so Python joins four of the
# prefixes into two strings that never occur; "Best answer:" is therefore never removed and its "B" is read.
_VIDEOMME_PREFIXES_OFFICIAL = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option isThe correct option is",  # the reference's missing comma, kept
    "Best answer:Best option:",
)
# lmms-eval's copy (videomme/utils.py extract_characters_regex) has the commas.
_VIDEOMME_PREFIXES_LMMS = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option is",
    "The correct option is",
    "Best answer:",
    "Best option:",
)
_ABCD = re.compile(r"[ABCD]")


def _videomme_regex(text: str, prefixes: tuple[str, ...]) -> str:
    text = text.strip()
    for prefix in prefixes:
        text = text.replace(prefix, "")
    if len(text.split()) > 10 and not _ABCD.search(text):
        return ""
    match = _ABCD.search(text)
    return match[0] if match else ""


def videomme_official(text: str) -> str:
    """Video-MME's ``extract_characters_regex``: the first capital A-D anywhere after removing answer prefixes."""
    return _videomme_regex(text, _VIDEOMME_PREFIXES_OFFICIAL)


def videomme_lmms_eval_legacy(text: str) -> str:
    """lmms-eval's Video-MME extraction before 2026-04: the official rule with the prefix list fixed."""
    return _videomme_regex(text, _VIDEOMME_PREFIXES_LMMS)


_THINK = re.compile(r"(?is)<think>.*?</think>")
_TAGGED = re.compile(r"(?is)<answer>\s*[\(\[]?\s*([A-Z])\s*[\)\]]?[^<]*</answer>|\\boxed\{\s*\(?([A-Z])\)?\s*\}")
_STATED = re.compile(
    r"(?i:\b(?:final\s+|best\s+|correct\s+)?(?:answer|option|choice)(?:\s+is)?)\s*:?\s*[\(\[]?\s*([A-Z])\b"
)
_ALONE = re.compile(r"^[\(\[]?([A-Z])[\)\]]?[.:,]?$")
_LEADING = re.compile(r"^(?:\(([A-Z])\)|\[([A-Z])\]|([A-Z])[.):,])")
_BRACKETED = re.compile(r"\(([A-Z])\)")
_TOKEN = re.compile(r"\b([A-Z])\b")


def extract_mcq_answer(response: str, letters: str = "ABCD") -> str:
    """lmms-eval's priority-based letter extraction (``_task_utils/mcq_extract.py``, Video-MME since 2026-04).

    The first rule that finds a valid letter wins; ``""`` when none does:

    1. reasoning in ``<think>...</think>`` is dropped, then ``*`` and backticks and surrounding space;
    2. the whole answer is a letter: ``B``, ``(B)``, ``[B]``, ``B.``;
    3. an answer tag: ``<answer>B</answer>`` or ``\\boxed{B}``;
    4. an answer statement, the last one: ``answer is B``, ``Answer: (B)``, ``best option: B``, ``choice B``;
    5. a leading option label: ``B.``, ``B)``, ``B:``, ``(B)``, ``[B]`` at the start;
    6. exactly one distinct bracketed letter ``(B)`` anywhere;
    7. exactly one distinct capital option letter standing alone as a word anywhere.

    This is mmaccel's reading of the current rule; see docs/benchmarks-protocol.md for what is uncertain.
    """
    valid = set(letters)
    text = _THINK.sub(" ", response)
    if "</think>" in text:  # an unclosed block: keep what follows the last closing tag
        text = text.rsplit("</think>", 1)[1]
    text = text.replace("*", "").replace("`", "").strip()
    if not text:
        return ""
    match = _ALONE.match(text)
    if match and match[1] in valid:
        return match[1]
    for match in _TAGGED.finditer(text):
        letter = (match[1] or match[2]).upper()
        if letter in valid:
            return letter
    stated = [m[1] for m in _STATED.finditer(text) if m[1] in valid]
    if stated:
        return stated[-1]
    match = _LEADING.match(text)
    if match:
        letter = match[1] or match[2] or match[3]
        if letter in valid:
            return letter
    for pattern in (_BRACKETED, _TOKEN):
        found = {m[1] for m in pattern.finditer(text)} & valid
        if len(found) == 1:
            return found.pop()
    return ""


def mvbench_check_ans(prediction: str, target: str) -> bool:
    """MVBench's ``check_ans`` (OpenGVLab/Ask-Anything video_chat2/mvbench.ipynb).

    Only the first space-separated word of each side is compared, lowercased: the prediction's word (periods
    removed) must be a substring of the target's ``(x)``, or contain it. ``target`` is ``"(B) option text"``.
    So ``A``, ``(``, ``)`` and an empty first word (a leading space) match any ``(a)`` target.
    """
    pred_option = prediction.lower().split(" ")[0]
    gt_option = target.lower().split(" ")[0]
    return pred_option.replace(".", "") in gt_option or gt_option in pred_option


_LMMS_OPTION = re.compile(r"^([A-E])\.\s*(.+)$", re.IGNORECASE)
_LMMS_LETTER = re.compile(r"\b([A-E])\b", re.IGNORECASE)


def _mvbench_lmms_process(answer: str) -> str:
    match = _LMMS_OPTION.match(answer.strip())
    if match:
        return match[1].upper()
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    answer = process_punctuation(answer)
    answer = answer.strip("'").strip('"').strip(")").strip("(").strip().lower()
    letter = _LMMS_LETTER.search(answer)
    return letter[1].upper() if letter else answer


def mvbench_lmms_eval_correct(prediction: str, target_letter: str) -> tuple[str, bool]:
    """lmms-eval's MVBench ``mcq_acc``: ``(the letter or text read, correct)``.

    ``X. text`` gives X; otherwise the answer is punctuation-processed and lowercased and the first letter a-e
    standing alone as a word is taken (so the article in ``a cat`` reads as A); else the processed text itself.
    """
    parsed = _mvbench_lmms_process(prediction)
    return parsed, parsed == _mvbench_lmms_process(target_letter)


def parse_multi_choice_response(response: str, choices: list[str], index2ans: dict[str, str]) -> str | None:
    """MMMU's ``parse_multi_choice_response`` as lmms-eval's NExT-QA task uses it, without its random guess.

    ``(B)`` forms first, then ``B `` (letter then space), then ``B.``; with several candidates the one whose
    form occurs last wins. Answers of more than 5 words without a letter are matched against the option texts.
    Where the reference picks a random letter, this returns ``None`` (scored wrong).
    """
    for char in (",", ".", "!", "?", ";", ":", "'"):
        response = response.strip(char)
    response = f" {response} "
    candidates: list[str] = []
    bracketed = False
    for choice in choices:
        if f"({choice})" in response:
            candidates.append(choice)
            bracketed = True
    if not candidates:
        candidates = [choice for choice in choices if f"{choice} " in response]
    if not candidates:
        candidates = [choice for choice in choices if f"{choice}." in response]
    by_text = False
    if not candidates and len(response.split()) > 5:
        candidates = [index for index, text in index2ans.items() if text.lower() in response.lower()]
        by_text = True
    if not candidates:
        return None
    if len(candidates) == 1:
        return candidates[0]
    if by_text:
        starts = [response.lower().rfind(index2ans[c].lower()) for c in candidates]
    elif bracketed:
        starts = [response.rfind(f"({c})") for c in candidates]
    else:
        starts = [response.rfind(f" {c} ") for c in candidates]
    return candidates[starts.index(max(starts))]


_OPTION_LABEL = re.compile(r"^\s*(?:\(([A-Z])\)|([A-Z])(?:$|[.):,]))")


def leading_letter(text: str, letters: str) -> str | None:
    """The option label an answer starts with: ``B``, ``B.``, ``B)``, ``B:``, ``B,``, ``(B)``; else ``None``."""
    match = _OPTION_LABEL.match(text.strip())
    if not match:
        return None
    letter = match[1] or match[2]
    return letter if letter in letters else None
