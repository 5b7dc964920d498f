"""Training batches for the toy model: pixel tensors, per-patch targets and packed question turns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from mmaccel.toy.font import CHARACTERS
from mmaccel.toy.processor import CLIP_MEAN, CLIP_STD, NUM_IMAGE_TOKENS
from mmaccel.toy.questions import COUNT_WORDS, GENERATORS, LETTERS, QUESTION_TYPES, Question, ask_text, choose_suffix
from mmaccel.toy.suites.open_ended import OCR_LINE, simulated_ocr
from mmaccel.toy.suites.yesno import MME_QUESTIONS, MME_SUFFIX
from mmaccel.toy.world import (
    COLOR_NAMES,
    SHAPES,
    Scene,
    object_patches,
    patch_labels,
    render,
    sample_scene,
    sign_patches,
)

# Question mix of training: the types that need two steps (binding, letters, comparisons) get more turns.
# ``copy`` is a training-only form (see :func:`ask_option_copy`). ``verify`` and ``ocr`` (:func:`ask_verify`,
# :func:`ask_ocr_line`), the suites' yes/no verifications and TextVQA's OCR line, are available to a mix but not in
# the shipped one (docs/toy-model.md, "Experiments after the shipped run").
TRAIN_MIX: dict[str, float] = {
    "exist": 1.8,
    "color": 0.7,
    "shape": 0.9,
    "count": 1.0,
    "position": 1.2,
    "relation": 1.4,
    "text": 1.2,
    "mc": 2.0,
    "science": 1.6,
    "copy": 0.6,
}
VERIFY_WEIGHTS: dict[str, float] = {"position": 2.0, "OCR": 1.5, "count": 1.0, "color": 1.0, "existence": 0.5}


def ask_option_copy(scene: Scene, rng: np.random.Generator) -> Question:
    """``Which option is blue?`` with lettered options: the letter of the option that repeats the question's word.

    It needs no image; it teaches the step every lettered question ends with (find the matching option, answer its
    letter) directly, so that multiple-choice and science questions only have to learn what to look for.
    """
    pool = list(COLOR_NAMES) if rng.random() < 0.4 else list(SHAPES) if rng.random() < 0.5 else list(COUNT_WORDS)
    count = min(len(pool), int(rng.integers(2, len(LETTERS) + 1)))
    options = tuple(pool[int(index)] for index in rng.permutation(len(pool))[:count])
    correct = int(rng.integers(count))
    return Question("copy", "copy", f"Which option is {options[correct]}?", LETTERS[correct], options)


def ask_verify(scene: Scene, rng: np.random.Generator) -> Question | None:
    """MME-style yes/no verification (``Is the red circle on the left of the image?``), half true, half false.

    The forms are those of ``shapes-mme`` (position, OCR, count, colour, existence); MME's ``Please answer yes or
    no.`` follows the question on the same line, as in MME's files.
    """
    categories = [name for name in VERIFY_WEIGHTS if name != "OCR" or scene.sign is not None]
    weights = np.array([VERIFY_WEIGHTS[name] for name in categories])
    category = categories[int(rng.choice(len(categories), p=weights / weights.sum()))]
    pair = MME_QUESTIONS[category](scene, rng)
    if pair is None:
        return None
    truth = bool(rng.random() < 0.5)
    text = pair[0] if truth else pair[1]
    if rng.random() < 0.7:
        text += MME_SUFFIX
    return Question("verify", category, text, "yes" if truth else "no")


def ask_ocr_line(scene: Scene, rng: np.random.Generator) -> Question | None:
    """TextVQA as LLaVA prompts it: the question, then ``Reference OCR token: k7`` (misread or empty at times)."""
    base = ask_text(scene, rng)
    if base is None:
        return None
    tokens = ", ".join(simulated_ocr(base.answer, rng))
    return Question("ocr", base.subtype, f"{base.text}\n{OCR_LINE}{tokens}", base.answer)


TRAIN_GENERATORS = {**GENERATORS, "copy": ask_option_copy, "verify": ask_verify, "ocr": ask_ocr_line}


def pixel_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 images ``[H, W, 3]`` -> CLIP-normalised ``[B, 3, H, W]`` float32 (what the image processor gives)."""
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0  # [B, 3, H, W]
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (batch - mean) / std


@dataclass
class VisionBatch:
    """Stage-1 batch: pixels ``[B, 3, H, W]``, targets ``[B, 64]`` per patch and, per image, the colour × shape pairs
    present ``[B, 18]``, the object count ``[B]`` and the characters on the sign ``[B, 36]`` (multi-hot)."""

    pixel_values: torch.Tensor
    color: torch.Tensor
    shape: torch.Tensor
    character: torch.Tensor
    sign: torch.Tensor
    presence: torch.Tensor
    count: torch.Tensor
    characters: torch.Tensor


def vision_batch(rng: np.random.Generator, batch_size: int) -> VisionBatch:
    """Random scenes with their per-patch colour, shape, character and sign labels."""
    scenes = [sample_scene(rng) for _ in range(batch_size)]
    labels = [patch_labels(scene) for scene in scenes]
    presence = torch.zeros(batch_size, len(COLOR_NAMES) * len(SHAPES))
    for index, scene in enumerate(scenes):
        for item in scene.objects:
            presence[index, COLOR_NAMES.index(item.color) * len(SHAPES) + SHAPES.index(item.shape)] = 1.0
    characters = torch.zeros(batch_size, len(CHARACTERS))
    for index, scene in enumerate(scenes):
        for character in scene.sign.text if scene.sign is not None else "":
            characters[index, CHARACTERS.index(character)] = 1.0
    return VisionBatch(
        pixel_values=pixel_tensor([render(scene) for scene in scenes]),
        color=torch.from_numpy(np.stack([label.color for label in labels])),
        shape=torch.from_numpy(np.stack([label.shape for label in labels])),
        character=torch.from_numpy(np.stack([label.character for label in labels])),
        sign=torch.from_numpy(np.stack([label.sign for label in labels])),
        presence=presence,
        count=torch.tensor([len(scene.objects) for scene in scenes]),
        characters=characters,
    )


def sample_turns(scene: Scene, rng: np.random.Generator, num_turns: int, mix: dict[str, float]) -> list[Question]:
    """``num_turns`` questions about one scene, types drawn from ``mix`` (types the scene cannot support skipped)."""
    kinds = list(mix)
    weights = np.array([mix[kind] for kind in kinds])
    weights = weights / weights.sum()
    questions: list[Question] = []
    for _ in range(num_turns * 4):
        question = TRAIN_GENERATORS[kinds[int(rng.choice(len(kinds), p=weights))]](scene, rng)
        if question is not None:
            questions.append(question)
            if len(questions) == num_turns:
                break
    return questions


@dataclass(frozen=True)
class OptionTurn:
    """Where the lettered options of one packed turn stand: positions in row ``row`` of a :class:`PackedBatch`.

    ``letters[i]`` is the position of option ``i``'s letter token, ``contents[i]`` those of its text;
    ``query`` is the position from which the answer's letter is predicted and ``correct`` the answer's index.
    """

    row: int
    query: int
    letters: tuple[int, ...]
    contents: tuple[tuple[int, ...], ...]
    correct: int


@dataclass(frozen=True)
class FocusTurn:
    """Where one packed turn's answer is read from: ``queries`` (positions that predict an answer token, ``</s>``
    excluded) and ``targets`` (positions of the image tokens of the question's :attr:`Question.focus`), in ``row``.
    """

    row: int
    queries: tuple[int, ...]
    targets: tuple[int, ...]


def focus_patches(scene: Scene, focus: tuple[str, ...]) -> list[int]:
    """Raster indices of the patches of the objects named in ``focus`` (``red circle``) or of the sign (``sign``).

    An object's patches are those it covers by at least an eighth (its best-covered patch when it covers none that
    much, as a small triangle across four patches can).
    """
    selected = np.zeros(NUM_IMAGE_TOKENS, dtype=bool)
    for name in focus:
        if name == "sign":
            selected |= sign_patches(scene.sign)
            continue
        (item,) = [item for item in scene.objects if item.name == name]
        selected |= object_patches(item)
    return np.flatnonzero(selected).tolist()


def option_token_spans(
    text: str, offsets: list[tuple[int, int]], options: tuple[str, ...]
) -> tuple[list[int], list[list[int]]]:
    """Token indices of each option's letter and of its text in a prompt ``text`` tokenised with ``offsets``.

    The options stand one per line as ``A. red`` (:meth:`Question.prompt`); a token belongs to the option text when
    its characters overlap the text's (a leading space token of its own does not).
    """
    letters, contents, cursor = [], [], 0
    for index, option in enumerate(options):
        line = f"\n{LETTERS[index]}. {option}"
        start = text.index(line, cursor)
        letter_char, content = start + 1, (start + 4, start + len(line))
        cursor = content[1]
        letters.append(next(i for i, (a, b) in enumerate(offsets) if a <= letter_char < b))
        contents.append([i for i, (a, b) in enumerate(offsets) if a < content[1] and b > content[0] and b - a > 0])
        contents[-1] = [i for i in contents[-1] if text[offsets[i][0] : offsets[i][1]].strip()]
    return letters, contents


@dataclass
class PackedBatch:
    """Stage-2 batch: one shared image prefix and several independent turns per row.

    ``input_ids``/``segments``/``positions``/``labels`` are ``[B, L]``; ``segments`` is 0 on the image prefix, ``k``
    on turn ``k`` and -1 on padding and dropped image tokens; ``labels[t]`` is the token to predict *from* position
    ``t`` (already shifted: the answer tokens and ``</s>``), -100 elsewhere; ``kinds`` lists each turn's type.
    """

    pixel_values: torch.Tensor
    input_ids: torch.Tensor
    segments: torch.Tensor
    positions: torch.Tensor
    labels: torch.Tensor
    kinds: list[list[str]]
    options: list[OptionTurn] = field(default_factory=list)
    focus: list[FocusTurn] = field(default_factory=list)

    def attention_mask(self) -> torch.Tensor:
        """4-D bool mask ``[B, 1, L, L]``: causal, each turn sees the prefix and itself, padding sees itself."""
        length = self.segments.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        query, key = self.segments[:, :, None], self.segments[:, None, :]  # [B, L, 1], [B, 1, L]
        mask = causal & ((key == 0) | (key == query)) & (key >= 0)
        mask |= torch.eye(length, dtype=torch.bool)
        return mask[:, None]


class TurnEncoder:
    """Tokenises the shared prefix ``USER: <image>×64\\n`` and turns ``{prompt} ASSISTANT: {answer}</s>``.

    The pieces split at whitespace boundaries of the byte-level pre-tokenizer, so their concatenation equals the
    processor's encoding of the single-turn chat prompt.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer
        head = tokenizer("USER: <image>\n", add_special_tokens=False)["input_ids"]
        image_index = head.index(tokenizer.convert_tokens_to_ids("<image>"))
        self.prefix = (
            head[:image_index] + head[image_index : image_index + 1] * NUM_IMAGE_TOKENS + head[image_index + 1 :]
        )
        self.image_start = image_index
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id
        self._cache: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        if text not in self._cache:
            self._cache[text] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self._cache[text]

    def turn(self, prompt: str, answer: str) -> tuple[list[int], list[int]]:
        """Token ids of the turn and the ids predicted (answer and ``</s>``)."""
        return self.encode(f"{prompt} ASSISTANT:"), [*self.encode(f" {answer}"), self.eos_id]

    def option_spans(self, prompt: str, options: tuple[str, ...]) -> tuple[list[int], list[list[int]]]:
        """Token indices, within :meth:`turn`'s prompt ids, of each option's letter and text."""
        text = f"{prompt} ASSISTANT:"
        offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        return option_token_spans(text, offsets, options)


def packed_batch(
    rng: np.random.Generator,
    encoder: TurnEncoder,
    batch_size: int,
    num_turns: int,
    mix: dict[str, float] | None = None,
    drop_probability: float = 0.0,
    length: int | None = None,
) -> PackedBatch:
    """Scenes with ``num_turns`` independent question turns each, packed behind one image prefix per row.

    With ``length``, every row is filled with turns up to ``length`` tokens instead (``num_turns`` is then an
    upper bound) and the batch is padded to exactly ``length``, so no compute goes to padding and shapes are static.
    With ``drop_probability``, a row keeps all object and sign patches but only a random share of the background
    patches (contiguous positions), so the LM does not rely on the RoPE index of image tokens.
    """
    mix = mix or TRAIN_MIX
    rows, kinds, images = [], [], []
    option_turns: list[OptionTurn] = []
    focus_turns: list[FocusTurn] = []
    for _ in range(batch_size):
        scene = sample_scene(rng)
        images.append(render(scene))
        keep = np.ones(NUM_IMAGE_TOKENS, dtype=bool)
        if drop_probability and rng.random() < drop_probability:
            labels = patch_labels(scene)
            informative = (labels.color > 0) | (labels.sign > 0)
            keep = informative | (rng.random(NUM_IMAGE_TOKENS) < rng.uniform(0.1, 0.9))
        ids = list(encoder.prefix)
        segments = [0] * len(ids)
        for index, kept in enumerate(keep):
            if not kept:
                segments[encoder.image_start + index] = -1
        labels_row = [-100] * len(ids)
        row_kinds = []
        for turn, question in enumerate(sample_turns(scene, rng, num_turns, mix), start=1):
            prompt = question.prompt(choose_suffix(question, rng))
            prompt_ids, answer_ids = encoder.turn(prompt, question.answer)
            if length is not None and len(ids) + len(prompt_ids) + len(answer_ids) > length:
                break
            if question.options:
                letters, contents = encoder.option_spans(prompt, question.options)
                start = len(ids)
                option_turns.append(
                    OptionTurn(
                        row=len(rows),
                        query=start + len(prompt_ids) + len(answer_ids) - 3,  # predicts the last answer token
                        letters=tuple(start + index for index in letters),
                        contents=tuple(tuple(start + index for index in content) for content in contents),
                        correct=LETTERS.index(question.answer),
                    )
                )
            targets = [encoder.image_start + index for index in focus_patches(scene, question.focus) if keep[index]]
            if targets:
                first = len(ids) + len(prompt_ids) - 1  # predicts the first answer token
                queries = tuple(range(first, first + len(answer_ids) - 1))
                focus_turns.append(FocusTurn(len(rows), queries, tuple(targets)))
            ids += prompt_ids + answer_ids
            segments += [turn] * (len(prompt_ids) + len(answer_ids))
            labels_row += [-100] * (len(prompt_ids) - 1) + answer_ids + [-100]
            row_kinds.append(question.kind)
        rows.append((ids, segments, labels_row))
        kinds.append(row_kinds)
    length = length or max(len(ids) for ids, _, _ in rows)
    input_ids = torch.full((batch_size, length), encoder.pad_id, dtype=torch.long)
    segments_t = torch.full((batch_size, length), -1, dtype=torch.long)
    labels_t = torch.full((batch_size, length), -100, dtype=torch.long)
    positions = torch.zeros((batch_size, length), dtype=torch.long)
    for row, (ids, segments, labels_row) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        segments_t[row, : len(ids)] = torch.tensor(segments)
        labels_t[row, : len(ids)] = torch.tensor(labels_row)
        positions[row] = _positions(segments_t[row], len(encoder.prefix))
    return PackedBatch(
        pixel_tensor(images), input_ids, segments_t, positions, labels_t, kinds, option_turns, focus_turns
    )


def _positions(segments: torch.Tensor, prefix_length: int) -> torch.Tensor:
    """Contiguous positions over kept prefix tokens; each turn restarts right after the prefix.  ``[L] -> [L]``."""
    kept_prefix = (segments[:prefix_length] >= 0).long()
    positions = torch.zeros_like(segments)
    positions[:prefix_length] = torch.cumsum(kept_prefix, 0) - 1
    start = int(kept_prefix.sum())
    for turn in segments[prefix_length:].unique().tolist():
        if turn <= 0:
            continue
        where = (segments == turn).nonzero().squeeze(1)
        positions[where] = start + torch.arange(len(where))
    return positions.clamp(min=0)


__all__ = [
    "QUESTION_TYPES",
    "TRAIN_MIX",
    "FocusTurn",
    "OptionTurn",
    "PackedBatch",
    "TurnEncoder",
    "VisionBatch",
    "focus_patches",
    "option_token_spans",
    "packed_batch",
    "vision_batch",
]
