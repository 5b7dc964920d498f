"""VQA answer normalisers: the official VQA evaluation, the EvalAI processor and the VLMEvalKit variant.

Three normalisers are in use and they differ in small ways that change scores:

* :func:`official_normalize` reproduces ``processPunctuation`` + ``processDigitArticle`` of
  GT-Vision-Lab/VQA:PythonEvaluationTools/vqaEvaluation/vqaEval.py, quirks included: the period regex is the
  look-ahead typo ``(?!<=\\d)(\\.)(?!\\d)`` (every ``.`` not followed by a digit goes), it is applied with
  ``count=re.UNICODE`` (at most 32 periods removed), and a digit-comma-digit anywhere in the text makes every
  punctuation mark be deleted instead of replaced by a space.
* :func:`evalai_normalize` reproduces ``EvalAIAnswerProcessor`` of haotian-liu/LLaVA:llava/eval/m4c_evaluator.py
  (equal to EvolvingLMMs-Lab/lmms-eval:lmms_eval/tasks/_task_utils/vqa_eval_metric.py): it first lowercases,
  deletes ``,`` and ``?`` and splits off ``'s``, then runs the official steps.
* :func:`vlmevalkit_normalize` reproduces ``process_answer`` of
  open-compass/VLMEvalKit:vlmeval/dataset/utils/vqa_eval.py: the official steps with a real look-behind period
  regex, so a period right after a digit is kept (``"5."`` stays ``"5."``).

:func:`vqa_accuracy` is the leave-one-out accuracy over the human answers, with the normalisation policy of
each reference.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

__all__ = [
    "ARTICLES",
    "CONTRACTIONS",
    "NUMBER_WORDS",
    "PUNCTUATION",
    "evalai_normalize",
    "official_normalize",
    "process_digit_article",
    "process_punctuation",
    "vlmevalkit_normalize",
    "vqa_accuracy",
]

# Plain data shared by all three references (GT-Vision-Lab/VQA vqaEval.py).
NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})
PUNCTUATION: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)  # fmt: skip
# 120 entries, in source order. Keys with capitals ("Im", "Ive", ...) never match after lowercasing, and
# "somebody'd" -> "somebodyd" is a bug of the original kept by every reference; both are kept here too.
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't",
    "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't", "hed": "he'd",
    "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've",
    "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd",
    "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't",
    "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've",
    "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's",
    "somethingd": "something'd", "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've",
    "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've",
    "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip

# The official and EvalAI period regex: meant as a look-behind, written as a look-ahead, so it removes every
# period that is not followed by a digit.
PERIOD_STRIP_TYPO = re.compile(r"(?!<=\d)(\.)(?!\d)")
PERIOD_STRIP_FIXED = re.compile(r"(?<!\d)\.(?!\d)")  # VLMEvalKit
COMMA_DIGITS_OFFICIAL = re.compile(r"(\d)(\,)(\d)")  # official and VLMEvalKit
COMMA_DIGITS_EVALAI = re.compile(r"(?<=\d)(\,)+(?=\d)")  # EvalAI; moot after its word_tokenize step
# The references pass re.UNICODE (32) positionally to Pattern.sub, where it is the ``count`` argument.
_PERIOD_COUNT = int(re.UNICODE)


def process_punctuation(
    text: str, period_strip: re.Pattern[str] = PERIOD_STRIP_TYPO, comma_digits: re.Pattern[str] = COMMA_DIGITS_OFFICIAL
) -> str:
    """Delete or space out punctuation; both decisions test the *original* text, as the references do."""
    out = text
    digit_comma = comma_digits.search(text) is not None
    for mark in PUNCTUATION:
        if mark + " " in text or " " + mark in text or digit_comma:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return period_strip.sub("", out, count=_PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """Lowercase, map number words, drop articles, then expand contractions (in that order, as the references)."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [word for word in words if word not in ARTICLES]
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def _strip_controls(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def official_normalize(text: str) -> str:
    """``processDigitArticle(processPunctuation(text))`` of the official VQA evaluation (after its strip)."""
    return process_digit_article(process_punctuation(_strip_controls(text)))


def evalai_normalize(text: str) -> str:
    """``EvalAIAnswerProcessor()(text)``: word_tokenize (lower, delete ``,`` ``?``, split ``'s``), then official."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = _strip_controls(text)
    text = process_punctuation(text, PERIOD_STRIP_TYPO, COMMA_DIGITS_EVALAI)
    return process_digit_article(text)


def vlmevalkit_normalize(text: str) -> str:
    """VLMEvalKit ``process_answer``: the official steps with a real look-behind period regex."""
    return process_digit_article(process_punctuation(_strip_controls(text), PERIOD_STRIP_FIXED))


def lmms_eval_vqav2_normalize(text: str) -> str:
    """lmms-eval ``vqav2`` (since 28ea9a11): EvalAI's punctuation and digit/article steps, no word_tokenize."""
    text = _strip_controls(text)
    return process_digit_article(process_punctuation(text, PERIOD_STRIP_TYPO, COMMA_DIGITS_EVALAI))


def leave_one_out_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Mean over each human answer of ``min(1, matches among the others / 3)`` (the VQA accuracy)."""
    if not answers:
        raise ValueError("VQA accuracy needs at least one human answer")
    total = 0.0
    for held_out in range(len(answers)):
        matches = sum(1 for index, answer in enumerate(answers) if index != held_out and answer == prediction)
        total += min(1.0, matches / 3)
    return total / len(answers)


def vqa_accuracy(
    prediction: str, answers: Sequence[str], normalizer: Callable[[str], str] | None = None, conditional: bool = False
) -> float:
    """VQA accuracy of one prediction against its human answers.

    Args:
        prediction: the model's answer.
        answers: the human answers (10 in VQAv2 and TextVQA).
        normalizer: applied to the prediction and to every answer; ``None`` compares stripped strings.
        conditional: the official rule: normalise only when the human answers are not all identical
            (so ``"Yes"`` scores 0 against ten ``"yes"``). Both sides are stripped of tabs/newlines first.
    """
    if conditional:
        answers = [_strip_controls(answer) for answer in answers]
        prediction = _strip_controls(prediction)
        if len(set(answers)) > 1 and normalizer is not None:
            answers = [normalizer(answer) for answer in answers]
            prediction = normalizer(prediction)
    elif normalizer is not None:
        answers = [normalizer(answer) for answer in answers]
        prediction = normalizer(prediction)
    return leave_one_out_accuracy(prediction, answers)
