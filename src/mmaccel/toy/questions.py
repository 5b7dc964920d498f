"""Question generators for the shapes world, one per benchmark-like question type.

Every generator reads a :class:`~mmaccel.toy.world.Scene` and returns a :class:`Question` whose answer is computed
from the scene description, or ``None`` when the scene does not support that question (the caller then draws
another scene). Answers are single words, digits, letters or sign texts, because benchmarks compare strings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from mmaccel.toy.world import COLOR_NAMES, CORNERS, GRID, SHAPES, Scene, ToyObject, sample_scene

QUESTION_TYPES: tuple[str, ...] = (
    "exist",  # POPE-like yes/no with random, popular and adversarial absent objects
    "color",
    "shape",
    "count",
    "position",  # left/right, top/bottom
    "relation",  # GQA-like: attribute of the object left of / above another
    "text",  # TextVQA-like: read the sign
    "mc",  # MMBench-like lettered options
    "science",  # ScienceQA-like: context hint plus lettered options
)
LETTERS = "ABCD"
SHORT_ANSWER = "Answer the question using a single word or phrase."
POPE_SUFFIX = "Please answer this question with one word."
YES_NO_SUFFIX = "Please answer yes or no."
OPTION_SUFFIX = "Answer with the option's letter from the given choices directly."
CORNER_HINT = "Triangles have three corners. Squares have four corners. Circles have no corners."
COUNT_WORDS = ("0", "1", "2", "3", "4", "5")


@dataclass(frozen=True)
class Question:
    """A question about one scene.

    ``kind`` is one of :data:`QUESTION_TYPES`, ``subtype`` refines it (for example ``neg_adversarial``), ``text``
    is the question without any benchmark suffix, ``options`` the lettered choices of multiple-choice questions.
    ``focus`` names what the question points at in the image: object names such as ``red circle`` (for a relation
    the anchor, the first step of the lookup), or ``sign``; training uses it to guide attention
    (:mod:`mmaccel.toy.training.guidance`). It is empty where nothing named is in the image (absent objects) and
    for counts.
    """

    kind: str
    subtype: str
    text: str
    answer: str
    options: tuple[str, ...] = field(default=())
    hint: str = ""
    focus: tuple[str, ...] = ()

    def prompt(self, suffix: str = "") -> str:
        """The user text: hint, question, options one per line, then ``suffix`` on its own line."""
        lines = [f"Context: {self.hint}"] if self.hint else []
        lines.append(self.text)
        lines.extend(f"{LETTERS[index]}. {option}" for index, option in enumerate(self.options))
        if suffix:
            lines.append(suffix)
        return "\n".join(lines)


def rotate_options(question: Question, shift: int) -> Question:
    """Rotate the options by ``shift`` places (circular evaluation) and move the answer letter with them."""
    if not question.options:
        return question
    count = len(question.options)
    options = tuple(question.options[(index + shift) % count] for index in range(count))
    correct = question.options[LETTERS.index(question.answer)]
    return replace(question, options=options, answer=LETTERS[options.index(correct)])


def _pick(rng: np.random.Generator, items: list):
    return items[int(rng.integers(0, len(items)))]


def _unique_by_shape(scene: Scene) -> list[ToyObject]:
    return [item for item in scene.objects if len(scene.find(shape=item.shape)) == 1]


def _unique_by_color(scene: Scene) -> list[ToyObject]:
    return [item for item in scene.objects if len(scene.find(color=item.color)) == 1]


def ask_exist(scene: Scene, rng: np.random.Generator) -> Question | None:
    """``Is there a red circle in the image?``: half present; absent ones random, popular or adversarial."""
    present = {(item.color, item.shape) for item in scene.objects}
    if rng.random() < 0.5:
        color, shape = _pick(rng, sorted(present))
        subtype = "positive"
    else:
        colors = {color for color, _ in present}
        shapes = {shape for _, shape in present}
        absent = [(c, s) for c in COLOR_NAMES for s in SHAPES if (c, s) not in present]
        pools = {
            "neg_random": absent,
            "neg_popular": [(c, s) for c, s in absent if (c in colors) != (s in shapes)],
            "neg_adversarial": [(c, s) for c, s in absent if c in colors and s in shapes],
        }
        subtype = _pick(rng, list(pools))
        if not pools[subtype]:
            return None
        color, shape = _pick(rng, pools[subtype])
    answer = "yes" if subtype == "positive" else "no"
    focus = (f"{color} {shape}",) if subtype == "positive" else ()
    return Question("exist", subtype, f"Is there a {color} {shape} in the image?", answer, focus=focus)


def ask_color(scene: Scene, rng: np.random.Generator) -> Question | None:
    """``What color is the circle?`` for a shape that occurs once."""
    candidates = _unique_by_shape(scene)
    if not candidates:
        return None
    item = _pick(rng, candidates)
    return Question("color", "color", f"What color is the {item.shape}?", item.color, focus=(item.name,))


def ask_shape(scene: Scene, rng: np.random.Generator) -> Question | None:
    """``What shape is the red object?`` for a colour that occurs once."""
    candidates = _unique_by_color(scene)
    if not candidates:
        return None
    item = _pick(rng, candidates)
    return Question("shape", "shape", f"What shape is the {item.color} object?", item.shape, focus=(item.name,))


def ask_count(scene: Scene, rng: np.random.Generator) -> Question | None:
    """``How many objects are there?``, ``How many circles are there?`` or ``How many red objects are there?``."""
    subtype = _pick(rng, ["all", "shape", "color"])
    if subtype == "all":
        return Question("count", "all", "How many shapes are there?", COUNT_WORDS[len(scene.objects)])
    if subtype == "shape":
        shape = _pick(rng, list(SHAPES))
        return Question("count", "shape", f"How many {shape}s are there?", COUNT_WORDS[len(scene.find(shape=shape))])
    color = _pick(rng, [item.color for item in scene.objects])
    count = len(scene.find(color=color))
    return Question("count", "color", f"How many {color} shapes are there?", COUNT_WORDS[count])


def ask_position(scene: Scene, rng: np.random.Generator) -> Question | None:
    """``Is the red circle on the left or the right?`` / ``... at the top or the bottom?``."""
    item = _pick(rng, list(scene.objects))
    if rng.random() < 0.5:
        answer = "left" if item.col < GRID // 2 else "right"
        text = f"Is the {item.name} on the left or the right?"
        return Question("position", "left_right", text, answer, focus=(item.name,))
    answer = "top" if item.row < GRID // 2 else "bottom"
    text = f"Is the {item.name} at the top or the bottom?"
    return Question("position", "top_bottom", text, answer, focus=(item.name,))


_RELATIONS: dict[str, Callable[[ToyObject, ToyObject], bool]] = {
    "left of": lambda target, anchor: target.col < anchor.col,
    "right of": lambda target, anchor: target.col > anchor.col,
    "above": lambda target, anchor: target.row < anchor.row,
    "below": lambda target, anchor: target.row > anchor.row,
}


def ask_relation(scene: Scene, rng: np.random.Generator) -> Question | None:
    """``What color is the shape left of the red circle?`` when exactly one shape stands in that relation."""
    found = []
    for relation, holds in _RELATIONS.items():
        for anchor in scene.objects:
            targets = [item for item in scene.objects if item is not anchor and holds(item, anchor)]
            if len(targets) == 1:
                found.append((relation, anchor, targets[0]))
    if not found:
        return None
    relation, anchor, target = _pick(rng, found)
    if rng.random() < 0.5:
        text = f"What color is the shape {relation} the {anchor.name}?"
        return Question("relation", "color", text, target.color, focus=(anchor.name,))
    text = f"What shape is the object {relation} the {anchor.name}?"
    return Question("relation", "shape", text, target.shape, focus=(anchor.name,))


def ask_text(scene: Scene, rng: np.random.Generator) -> Question | None:
    """``What is written on the sign?``."""
    if scene.sign is None:
        return None
    subtype = "single" if len(scene.sign.text) == 1 else "double"
    return Question("text", subtype, "What is written on the sign?", scene.sign.text, focus=("sign",))


def _options(rng: np.random.Generator, correct: str, pool: list[str], count: int) -> tuple[tuple[str, ...], str]:
    distractors = [value for value in pool if value != correct]
    chosen = [distractors[int(index)] for index in rng.permutation(len(distractors))[: count - 1]] + [correct]
    order = rng.permutation(len(chosen))
    options = tuple(chosen[int(index)] for index in order)
    return options, LETTERS[options.index(correct)]


def ask_mc(scene: Scene, rng: np.random.Generator) -> Question | None:
    """MMBench-like: a colour, shape, count or text question with lettered options."""
    subtype = _pick(rng, ["color", "shape", "count", "text"])
    if subtype == "color":
        base = ask_color(scene, rng)
        pool = list(COLOR_NAMES)
    elif subtype == "shape":
        base = ask_shape(scene, rng)
        pool = list(SHAPES)
    elif subtype == "count":
        base = ask_count(scene, rng)
        pool = list(COUNT_WORDS)
    else:
        base = ask_text(scene, rng)
        if base is None:
            return None
        from mmaccel.toy.font import CHARACTERS

        length = len(base.answer)
        pool = [base.answer] + ["".join(_pick(rng, list(CHARACTERS)) for _ in range(length)) for _ in range(6)]
        pool = list(dict.fromkeys(pool))
    if base is None:
        return None
    options, answer = _options(rng, base.answer, pool, min(4, len(pool)))
    return Question("mc", subtype, base.text, answer, options, focus=base.focus)


def ask_science(scene: Scene, rng: np.random.Generator) -> Question | None:
    """ScienceQA-like, with the corner hint as context: one lookup or a comparison, as lettered options.

    Half are ``How many corners does the red object have?`` with the corner counts 0, 3 and 4 as options (one
    lookup: the object's shape, then the hint); half ``Which object has the most corners?`` over two or three
    objects named by colour (a comparison of their shapes).
    """
    candidates = _unique_by_color(scene)
    if not candidates:
        return None
    hint = CORNER_HINT if rng.random() < 0.8 else ""
    if rng.random() < 0.5:
        item = _pick(rng, candidates)
        pool = [str(corners) for corners in sorted(set(CORNERS.values()))]
        options, answer = _options(rng, str(CORNERS[item.shape]), pool, len(pool))
        text = f"How many corners does the {item.color} object have?"
        return Question("science", "corners", text, answer, options, hint, focus=(item.name,))
    by_corners: dict[int, ToyObject] = {}
    for index in rng.permutation(len(candidates)):
        item = candidates[int(index)]
        by_corners.setdefault(CORNERS[item.shape], item)
    if len(by_corners) < 2:
        return None
    items = list(by_corners.values())
    subtype = _pick(rng, ["most", "fewest"])
    pick = max if subtype == "most" else min
    correct = pick(items, key=lambda item: CORNERS[item.shape])
    options, answer = _options(
        rng, f"the {correct.color} object", [f"the {item.color} object" for item in items], len(items)
    )
    text = f"Which object has the {subtype} corners?"
    return Question("science", subtype, text, answer, options, hint, focus=tuple(item.name for item in items))


GENERATORS: dict[str, Callable[[Scene, np.random.Generator], Question | None]] = {
    "exist": ask_exist,
    "color": ask_color,
    "shape": ask_shape,
    "count": ask_count,
    "position": ask_position,
    "relation": ask_relation,
    "text": ask_text,
    "mc": ask_mc,
    "science": ask_science,
}


def ask(kind: str, scene: Scene, rng: np.random.Generator) -> Question | None:
    """Ask a question of type ``kind`` about ``scene`` (``None`` if the scene cannot support it)."""
    return GENERATORS[kind](scene, rng)


def sample_example(kind: str, rng: np.random.Generator, max_tries: int = 100) -> tuple[Scene, Question]:
    """Draw scenes until one supports a question of type ``kind``; return the scene and the question."""
    sign_probability = 1.0 if kind == "text" else 0.5
    for _ in range(max_tries):
        scene = sample_scene(rng, sign_probability=sign_probability)
        question = ask(kind, scene, rng)
        if question is not None:
            return scene, question
    raise RuntimeError(f"no scene supported a {kind!r} question in {max_tries} tries")


def choose_suffix(question: Question, rng: np.random.Generator) -> str:
    """A benchmark-style instruction suffix, drawn so that the model sees all of them in training."""
    if question.options:
        return OPTION_SUFFIX if rng.random() < 0.8 else ""
    if question.text.endswith(YES_NO_SUFFIX):  # MME's form carries its instruction on the question's line
        return ""
    suffixes = ["", SHORT_ANSWER]
    if question.kind == "exist":
        suffixes += [POPE_SUFFIX, YES_NO_SUFFIX]
    return _pick(rng, suffixes)
