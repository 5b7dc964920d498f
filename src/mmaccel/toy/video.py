"""The video world: clips of the shapes world in which things happen over time.

A :class:`Clip` is an event script over ``n_frames`` frames: *tracks* (one shape each) that may appear after the
first frame, disappear before the last, change colour once, or move along a row or column of the grid, and
*sign shows* (a sign holding one or two characters for a few frames). Every frame is a
:class:`~mmaccel.toy.world.Scene` of the image world, rendered by :func:`~mmaccel.toy.world.render`, so the
spatial skills of the image model transfer. Questions (:func:`ask`) are computed from the script, never from
pixels, so their answers are correct by construction; each names the frames that hold its evidence
(``Question.evidence``), which tells a temporal question (several frames) from a needle (one or two frames of a
long clip, which uniform sampling at a low frame budget misses).

Everything is a pure function of a ``numpy.random.Generator``: a seed reproduces a clip and its questions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mmaccel.toy.font import CHARACTERS
from mmaccel.toy.world import CELL, COLOR_NAMES, GRID, IMAGE_SIZE, SHAPES, Scene, Sign, ToyObject, render

CLIP_LENGTHS: dict[str, int] = {"short": 8, "medium": 32, "long": 128}
VIDEO_QUESTION_TYPES: tuple[str, ...] = (
    "order",  # which of two shapes appeared first
    "count",  # how many times a shape of a colour appeared
    "change",  # what colour a shape turned
    "motion",  # which way a shape moved
    "when",  # when the sign showed its text: beginning, middle or end
    "needle",  # what a sign showed for one or two frames
)
TEMPORAL_TYPES: tuple[str, ...] = ("order", "count", "change", "motion", "when")
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
THIRDS: tuple[str, ...] = ("beginning", "middle", "end")
LETTERS = "ABCDE"


@dataclass(frozen=True)
class Track:
    """One shape over the clip: visible in frames ``[start, end)``; its colour is ``color`` before
    ``change_frame`` and ``new_color`` from it on; it moves from cell ``cell`` to ``to_cell`` (same row or column)
    during frames ``[move_start, move_end)``, linearly, and stays there."""

    shape: str
    color: str
    cell: tuple[int, int]
    size: int
    start: int
    end: int
    new_color: str | None = None
    change_frame: int | None = None
    to_cell: tuple[int, int] | None = None
    move_start: int | None = None
    move_end: int | None = None

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    def visible(self, frame: int) -> bool:
        return self.start <= frame < self.end

    def color_at(self, frame: int) -> str:
        if self.new_color is not None and self.change_frame is not None and frame >= self.change_frame:
            return self.new_color
        return self.color

    def center_at(self, frame: int) -> tuple[float, float]:
        """(x, y) pixel centre in ``frame``."""
        row, col = self.cell
        if self.to_cell is not None and self.move_start is not None and self.move_end is not None:
            progress = min(max((frame - self.move_start) / max(self.move_end - self.move_start, 1), 0.0), 1.0)
            row = row + progress * (self.to_cell[0] - row)
            col = col + progress * (self.to_cell[1] - col)
        return col * CELL + CELL / 2, row * CELL + CELL / 2

    def direction(self) -> str | None:
        if self.to_cell is None:
            return None
        step = (int(np.sign(self.to_cell[0] - self.cell[0])), int(np.sign(self.to_cell[1] - self.cell[1])))
        return next(name for name, delta in DIRECTIONS.items() if delta == step)


@dataclass(frozen=True)
class SignShow:
    """A sign holding ``text`` in grid cell ``cell`` during frames ``[start, end)``."""

    text: str
    cell: tuple[int, int]
    start: int
    end: int


@dataclass(frozen=True)
class Clip:
    """An event script; :meth:`scene_at` gives the image-world scene of a frame, :func:`render_clip` its pixels."""

    n_frames: int
    tracks: tuple[Track, ...]
    signs: tuple[SignShow, ...]
    background: tuple[int, int, int]
    noise_seed: int

    def scene_at(self, frame: int) -> Scene:
        objects = []
        for track in self.tracks:
            if not track.visible(frame):
                continue
            x, y = track.center_at(frame)
            row, col = min(int(y // CELL), GRID - 1), min(int(x // CELL), GRID - 1)
            objects.append(ToyObject(track.color_at(frame), track.shape, row, col, x, y, track.size))
        sign = None
        for show in self.signs:
            if show.start <= frame < show.end:
                width = 14 if len(show.text) == 1 else 26
                row, col = show.cell
                left, top = col * CELL + (CELL - width) // 2, row * CELL + (CELL - 18) // 2
                sign = Sign(show.text, row, col, left, top, width, 18)
        return Scene(tuple(objects), sign, self.background, self.noise_seed + frame)

    def third_of(self, frame: int) -> str:
        return THIRDS[min(3 * frame // self.n_frames, 2)]


def render_clip(clip: Clip, frames: list[int] | None = None) -> np.ndarray:
    """uint8 pixels ``[F, IMAGE_SIZE, IMAGE_SIZE, 3]`` of ``frames`` (default: every frame)."""
    frames = list(range(clip.n_frames)) if frames is None else frames
    out = np.empty((len(frames), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for index, frame in enumerate(frames):
        out[index] = render(clip.scene_at(frame))
    return out


def uniform_frames(n_frames: int, count: int) -> list[int]:
    """``count`` frame indices spread evenly over ``n_frames`` (``numpy.linspace``, rounded), as video
    benchmarks sample them; every frame when ``count >= n_frames``."""
    if count >= n_frames:
        return list(range(n_frames))
    return [int(x) for x in np.rint(np.linspace(0, n_frames - 1, count))]


# -- sampling a clip ----------------------------------------------------------------------------------------------
def _span(rng: np.random.Generator, n_frames: int, minimum: int) -> tuple[int, int]:
    """A random frame interval [start, end) of at least ``minimum`` frames."""
    length = int(rng.integers(minimum, n_frames + 1))
    start = int(rng.integers(0, n_frames - length + 1))
    return start, start + length


def sample_clip(rng: np.random.Generator, n_frames: int, needle: bool = False, appearances: bool = False) -> Clip:
    """Draw a clip of ``n_frames`` frames: 2-4 shapes with unique (colour, shape) pairs, each maybe appearing,
    disappearing, changing colour or moving; a sign shown for a few frames, or (``needle``) for one or two.
    ``appearances`` makes a shape appear after the first frame half the time (count questions need them)."""
    n_tracks = int(rng.integers(2, 5))
    cells = [divmod(int(c), GRID) for c in rng.permutation(GRID * GRID)]
    pairs = rng.permutation(len(COLOR_NAMES) * len(SHAPES))
    used_colors: set[str] = set()
    tracks, taken = [], set()
    quarter = max(n_frames // 4, 1)
    for pair in pairs:
        if len(tracks) == n_tracks:
            break
        color, shape = COLOR_NAMES[int(pair) // len(SHAPES)], SHAPES[int(pair) % len(SHAPES)]
        cell = next((c for c in cells if c not in taken), None)
        if cell is None:
            break
        event = ("appear", "disappear", "change", "move", "still")[int(rng.integers(0, 5))]
        if appearances and rng.random() < 0.5:
            event = "appear"
        start, end = 0, n_frames
        track = {"shape": shape, "color": color, "cell": cell, "size": int(rng.integers(14, 24))}
        if event == "appear":
            start = int(rng.integers(1, n_frames - quarter + 1)) if n_frames > 2 else 1
        elif event == "disappear":
            end = int(rng.integers(quarter, n_frames)) if n_frames > 2 else 1
        elif event == "change":
            free = [c for c in COLOR_NAMES if c != color and c not in used_colors]
            track.update(new_color=free[int(rng.integers(0, len(free)))], change_frame=int(rng.integers(1, n_frames)))
        elif event == "move":
            target = _move_target(rng, cell, taken)
            if target is not None:
                move_start, move_end = _span(rng, n_frames, max(n_frames // 3, 1))
                track.update(to_cell=target, move_start=move_start, move_end=move_end)
                taken |= _path(cell, target)
        taken.add(cell)
        used_colors.add(color)
        tracks.append(Track(start=start, end=end, **track))
    signs = []
    free_cells = [c for c in cells if c not in taken]
    if free_cells and (needle or rng.random() < 0.6):
        length = 1 if rng.random() < 0.6 else 2
        text = "".join(CHARACTERS[int(i)] for i in rng.integers(0, len(CHARACTERS), size=length))
        duration = int(rng.integers(1, 3)) if needle else max(int(rng.integers(1, 3)) * n_frames // 8, 1)
        start = int(rng.integers(0, n_frames - duration + 1))
        signs.append(SignShow(text, free_cells[0], start, start + duration))
    background = tuple(int(v) for v in rng.integers(0, 70, size=3))
    return Clip(n_frames, tuple(tracks), tuple(signs), background, int(rng.integers(0, 2**31 - 1 - n_frames)))


def _move_target(rng: np.random.Generator, cell: tuple[int, int], taken: set) -> tuple[int, int] | None:
    options = []
    for delta_row, delta_col in DIRECTIONS.values():
        for distance in (1, 2, 3):
            target = (cell[0] + delta_row * distance, cell[1] + delta_col * distance)
            if 0 <= target[0] < GRID and 0 <= target[1] < GRID and not (_path(cell, target) & taken):
                options.append(target)
    return options[int(rng.integers(0, len(options)))] if options else None


def _path(cell: tuple[int, int], target: tuple[int, int]) -> set[tuple[int, int]]:
    """The cells a move from ``cell`` to ``target`` (same row or column) crosses, both ends included."""
    rows = range(min(cell[0], target[0]), max(cell[0], target[0]) + 1)
    cols = range(min(cell[1], target[1]), max(cell[1], target[1]) + 1)
    return {(r, c) for r in rows for c in cols}


# -- questions ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Question:
    """A question about one clip: ``answer`` (a word, digit or text), ``options`` (4 candidates, the answer among
    them) for multiple-choice forms, and ``evidence``: the frames that show what the answer rests on."""

    kind: str
    text: str
    answer: str
    options: tuple[str, ...]
    evidence: tuple[int, ...] = field(default=())

    @property
    def answer_letter(self) -> str:
        return LETTERS[self.options.index(self.answer)]

    def prompt(self, suffix: str = "") -> str:
        """The question, its options one per line (``A. ...``), then ``suffix``."""
        lines = [self.text, *(f"{LETTERS[i]}. {option}" for i, option in enumerate(self.options))]
        return "\n".join([*lines, suffix] if suffix else lines)


def _options(rng: np.random.Generator, answer: str, pool: list[str], count: int = 4) -> tuple[str, ...]:
    distractors = [p for p in dict.fromkeys(pool) if p != answer]
    chosen = [distractors[int(i)] for i in rng.permutation(len(distractors))[: count - 1]]
    options = [answer, *chosen]
    return tuple(options[int(i)] for i in rng.permutation(len(options)))


def _unique(tracks: tuple[Track, ...], key: Callable[[Track], str]) -> list[Track]:
    return [t for t in tracks if sum(key(other) == key(t) for other in tracks) == 1]


def ask_order(clip: Clip, rng: np.random.Generator) -> Question | None:
    """``Which appeared first, the red circle or the blue square?`` (one of them appears after the first frame)."""
    pairs = [(a, b) for a in clip.tracks for b in clip.tracks if a.start < b.start and b.start > 0]
    if not pairs:
        return None
    first, second = pairs[int(rng.integers(0, len(pairs)))]
    names = (first.name, second.name) if rng.random() < 0.5 else (second.name, first.name)
    pool = [t.name for t in clip.tracks] + [f"{c} {s}" for c in COLOR_NAMES for s in SHAPES]
    return Question(
        "order",
        f"Which appeared first, the {names[0]} or the {names[1]}?",
        first.name,
        _options(rng, first.name, [names[1], *pool]),
        (first.start, second.start),
    )


def ask_count(clip: Clip, rng: np.random.Generator) -> Question | None:
    """``How many times did a red shape appear?``: shapes of that colour that came into view after frame 0."""
    counts = {c: sum(t.color == c and t.start > 0 for t in clip.tracks) for c in COLOR_NAMES}
    values = sorted(set(counts.values()))
    if values == [0] and rng.random() < 0.8:  # most clips show no appearance: keep "0" from dominating
        return None
    target = values[int(rng.integers(0, len(values)))]  # answers spread over the counts the clip offers
    colors = [c for c in COLOR_NAMES if counts[c] == target]
    color = colors[int(rng.integers(0, len(colors)))]
    appeared = [t for t in clip.tracks if t.color == color and t.start > 0]
    answer = str(len(appeared))
    return Question(
        "count",
        f"How many times did a {color} shape appear?",
        answer,
        _options(rng, answer, ["0", "1", "2", "3", "4"]),
        tuple(t.start for t in appeared) or (0, clip.n_frames - 1),
    )


def ask_change(clip: Clip, rng: np.random.Generator) -> Question | None:
    """``What colour did the circle turn?`` for a shape that occurs once and changes colour."""
    candidates = [t for t in _unique(clip.tracks, lambda t: t.shape) if t.new_color is not None]
    if not candidates:
        return None
    track = candidates[int(rng.integers(0, len(candidates)))]
    assert track.new_color is not None and track.change_frame is not None
    pool = [c for c in COLOR_NAMES if c != track.color]
    return Question(
        "change",
        f"What color did the {track.shape} turn?",
        track.new_color,
        _options(rng, track.new_color, pool),
        (track.change_frame - 1, track.change_frame),
    )


def ask_motion(clip: Clip, rng: np.random.Generator) -> Question | None:
    """``Which way did the green triangle move?``: left, right, up or down."""
    movers = [t for t in clip.tracks if t.direction() is not None]
    if not movers:
        return None
    track = movers[int(rng.integers(0, len(movers)))]
    direction = track.direction()
    assert direction is not None and track.move_start is not None and track.move_end is not None
    return Question(
        "motion",
        f"Which way did the {track.name} move?",
        direction,
        _options(rng, direction, list(DIRECTIONS)),
        (track.move_start, track.move_end - 1),
    )


def ask_when(clip: Clip, rng: np.random.Generator) -> Question | None:
    """``When was the sign showing 7: at the beginning, in the middle or at the end?``"""
    shows = [s for s in clip.signs if clip.third_of(s.start) == clip.third_of(s.end - 1)]
    if not shows:
        return None
    show = shows[0]
    answer = clip.third_of(show.start)
    return Question(
        "when",
        f"When was the sign showing {show.text}: at the beginning, in the middle or at the end of the video?",
        answer,
        _options(rng, answer, list(THIRDS), count=3),
        tuple(range(show.start, show.end)),
    )


def ask_needle(clip: Clip, rng: np.random.Generator) -> Question | None:
    """``What did the sign show?`` for a sign visible in at most two frames."""
    shows = [s for s in clip.signs if s.end - s.start <= 2]
    if not shows:
        return None
    show = shows[0]
    pool = [
        "".join(CHARACTERS[int(i)] for i in rng.integers(0, len(CHARACTERS), size=len(show.text))) for _ in range(12)
    ]
    return Question(
        "needle",
        "What did the sign show?",
        show.text,
        _options(rng, show.text, pool),
        tuple(range(show.start, show.end)),
    )


ASKERS: dict[str, Callable[[Clip, np.random.Generator], Question | None]] = {
    "order": ask_order,
    "count": ask_count,
    "change": ask_change,
    "motion": ask_motion,
    "when": ask_when,
    "needle": ask_needle,
}


def ask(kind: str, length: str, rng: np.random.Generator, max_tries: int = 200) -> tuple[Clip, Question]:
    """A clip of ``length`` (:data:`CLIP_LENGTHS`) and a question of ``kind`` about it, drawing clips until one
    supports the question."""
    if kind not in ASKERS:
        raise ValueError(f"unknown video question type {kind!r}; known: {', '.join(ASKERS)}")
    if length not in CLIP_LENGTHS:
        raise ValueError(f"unknown clip length {length!r}; known: {', '.join(CLIP_LENGTHS)}")
    for _ in range(max_tries):
        clip = sample_clip(rng, CLIP_LENGTHS[length], needle=kind == "needle", appearances=kind == "count")
        question = ASKERS[kind](clip, rng)
        if question is not None:
            return clip, question
    raise RuntimeError(f"no {length} clip supported a {kind!r} question in {max_tries} draws")
