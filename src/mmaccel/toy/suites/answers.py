"""Ten human-like answers per question for the VQA-accuracy suites (TextVQA and VQAv2 formats).

VQA accuracy is ``min(#matching human answers / 3, 1)``, averaged over the ten leave-one-out subsets, after the
benchmark's answer normalisation. Real annotators agree on the meaning but not on the spelling, and some of them
disagree. Each question therefore gets:

* ``10 - k`` answers that *mean* the correct answer, in natural surface forms that the reference normalisers map
  to the same string (``"2"``, ``"two"``, ``"Two"``; ``"circle"``, ``"a circle"``, ``"Circle."``; ``"K7"``,
  ``"k7"``), so the correct answer in any of these forms scores 1;
* ``k`` in 0..4 (probabilities 0.35, 0.3, 0.2, 0.1, 0.05) disagreeing answers: a neighbouring count, a
  near colour (``"violet"`` for purple), a shape word (``"box"`` for square), a misread character, the opposite
  yes/no. A prediction equal to a disagreeing answer given ``j`` times scores ``min(1, j/3)``-style partial
  credit (0.3 for ``j = 1``, 0.6 for ``j = 2``, 0.9 for ``j = 3``).

At least six of the ten answers therefore normalise to the correct answer, so the correct answer scores 1 under
every protocol, and the normalisation rules and the partial credit are both exercised.
"""

from __future__ import annotations

import numpy as np

from mmaccel.eval.benchmarks.normalize import NUMBER_WORDS

__all__ = ["DISAGREEMENT_COUNTS", "alternatives", "human_answers", "surface_forms"]

NUM_ANSWERS = 10
DISAGREEMENT_COUNTS = (0, 1, 2, 3, 4)
DISAGREEMENT_PROBABILITIES = (0.35, 0.3, 0.2, 0.1, 0.05)
DIGIT_WORDS = {digit: word for word, digit in NUMBER_WORDS.items() if word not in ("none", "ten")}
NEAR_COLORS = {
    "red": ("orange", "pink", "maroon"),
    "green": ("lime", "dark green", "teal"),
    "blue": ("navy", "dark blue", "purple"),
    "yellow": ("gold", "orange", "beige"),
    "purple": ("violet", "pink", "magenta"),
    "cyan": ("light blue", "teal", "turquoise"),
}
NEAR_SHAPES = {
    "circle": ("round", "ball", "oval"),
    "square": ("box", "rectangle", "diamond"),
    "triangle": ("pyramid", "arrow", "cone"),
}
NEAR_POSITIONS = {"left": ("middle", "center"), "right": ("middle", "center"), "top": ("middle", "upper"),
                  "bottom": ("middle", "lower")}  # fmt: skip
CONFUSABLE = {
    "0": "OD8", "O": "0QD", "D": "0O", "Q": "O0", "1": "I7L", "I": "1L", "L": "1I", "7": "1T", "T": "7Y",
    "5": "S6", "S": "58", "8": "B3S", "B": "83", "3": "8B", "2": "Z7", "Z": "27", "6": "G5", "G": "6C",
    "C": "GO", "E": "FB", "F": "EP", "P": "FR", "R": "PB", "M": "NW", "N": "MH", "H": "NK", "K": "XH",
    "X": "KY", "Y": "VX", "V": "UY", "U": "VO", "W": "MV", "A": "4H", "4": "AH", "9": "6Q", "J": "1I",
}  # fmt: skip


def surface_forms(answer: str) -> list[str]:
    """Spellings of ``answer`` that the VQA normalisers map to the same string (``answer`` first)."""
    forms = [answer, answer.capitalize(), answer + "."]
    if answer.lower() != answer:
        forms.append(answer.lower())
    if answer in DIGIT_WORDS:
        forms += [DIGIT_WORDS[answer], DIGIT_WORDS[answer].capitalize()]
    if answer in NEAR_SHAPES or answer in NEAR_POSITIONS:  # nouns: annotators add an article
        forms += [f"the {answer}", f"a {answer}" if answer in NEAR_SHAPES else f"the {answer}."]
    return list(dict.fromkeys(forms))


def alternatives(answer: str, kind: str) -> list[str]:
    """Plausible disagreeing human answers for an answer of question type ``kind``."""
    if answer in ("yes", "no"):
        return ["no" if answer == "yes" else "yes"]
    if kind == "count" or (answer.isdigit() and kind != "text"):
        value = int(answer)
        return [str(n) for n in (value - 1, value + 1) if n >= 0]
    if answer in NEAR_COLORS:
        return list(NEAR_COLORS[answer])
    if answer in NEAR_SHAPES:
        return list(NEAR_SHAPES[answer])
    if answer in NEAR_POSITIONS:
        return list(NEAR_POSITIONS[answer])
    misreads = []
    for index, character in enumerate(answer):
        misreads += [answer[:index] + other + answer[index + 1 :] for other in CONFUSABLE.get(character, "")]
    if len(answer) > 1:
        misreads += [answer[1:], answer[:-1], " ".join(answer)]
    return [value for value in dict.fromkeys(misreads) if value and value != answer]


def human_answers(answer: str, kind: str, rng: np.random.Generator) -> list[str]:
    """Ten answers in random order: ``10 - k`` surface forms of ``answer`` and ``k`` disagreeing ones."""
    disagree = int(rng.choice(DISAGREEMENT_COUNTS, p=DISAGREEMENT_PROBABILITIES))
    forms = surface_forms(answer)
    others = alternatives(answer, kind)
    answers = []
    for _ in range(NUM_ANSWERS - disagree):
        answers.append(answer if rng.random() < 0.6 else forms[int(rng.integers(0, len(forms)))])
    for _ in range(disagree if others else 0):
        answers.append(others[int(rng.integers(0, len(others)))])
    while len(answers) < NUM_ANSWERS:
        answers.append(answer)
    return [answers[int(index)] for index in rng.permutation(NUM_ANSWERS)]
