"""The video world: clips reproduce from their seed, and every answer holds in the frames' scenes."""

from __future__ import annotations

import numpy as np
import pytest

from mmaccel.toy.video import (
    ASKERS,
    CLIP_LENGTHS,
    DIRECTIONS,
    LETTERS,
    TEMPORAL_TYPES,
    VIDEO_QUESTION_TYPES,
    ask,
    render_clip,
    sample_clip,
    uniform_frames,
)
from mmaccel.toy.world import IMAGE_SIZE

SEEDS = range(40)


def _scenes(clip):
    return [clip.scene_at(frame) for frame in range(clip.n_frames)]


def _visible(scene, name: str) -> bool:
    return any(item.name == name for item in scene.objects)


def _first_seen(scenes, name: str) -> int:
    return next(frame for frame, scene in enumerate(scenes) if _visible(scene, name))


def test_question_types_have_askers():
    assert set(ASKERS) == set(VIDEO_QUESTION_TYPES) and set(TEMPORAL_TYPES) < set(VIDEO_QUESTION_TYPES)


@pytest.mark.parametrize("kind", VIDEO_QUESTION_TYPES)
def test_a_seed_reproduces_the_clip_and_its_question(kind):
    first = ask(kind, "medium", np.random.default_rng(7))
    second = ask(kind, "medium", np.random.default_rng(7))
    assert first == second
    assert np.array_equal(render_clip(first[0], [0, 5]), render_clip(second[0], [0, 5]))
    assert ask(kind, "medium", np.random.default_rng(8)) != first


@pytest.mark.parametrize("length", list(CLIP_LENGTHS))
@pytest.mark.parametrize("kind", VIDEO_QUESTION_TYPES)
def test_answers_hold_in_the_frames(kind, length):
    for seed in SEEDS:
        clip, question = ask(kind, length, np.random.default_rng(seed))
        scenes = _scenes(clip)
        assert clip.n_frames == CLIP_LENGTHS[length]
        assert question.answer in question.options and len(set(question.options)) == len(question.options)
        assert all(0 <= frame < clip.n_frames for frame in question.evidence)
        _check(kind, clip, scenes, question)


def _check(kind, clip, scenes, question):
    text = question.text
    if kind == "order":
        names = text.removeprefix("Which appeared first, the ").removesuffix("?").split(" or the ")
        seen = {name: _first_seen(scenes, name) for name in names}
        assert min(seen, key=seen.get) == question.answer and len(set(seen.values())) == 2
    elif kind == "count":
        color = text.split(" a ")[1].split(" shape")[0]
        appearances = 0
        for track in clip.tracks:
            was = [any(i.shape == track.shape and i.color == color for i in s.objects if track.color == color)
                   for s in scenes]  # fmt: skip
            appearances += sum(1 for f in range(1, len(was)) if was[f] and not was[f - 1])
        assert str(appearances) == question.answer
    elif kind == "change":
        shape = text.removeprefix("What color did the ").removesuffix(" turn?")
        colors = [next(i.color for i in s.objects if i.shape == shape) for s in scenes if _has_shape(s, shape)]
        assert colors[0] != colors[-1] == question.answer
    elif kind == "motion":
        name = text.removeprefix("Which way did the ").removesuffix(" move?")
        centres = [(i.center_x, i.center_y) for s in scenes for i in s.objects if i.name == name]
        dx, dy = centres[-1][0] - centres[0][0], centres[-1][1] - centres[0][1]
        step = (int(np.sign(dy)), int(np.sign(dx)))
        assert DIRECTIONS[question.answer] == step and (dx == 0) != (dy == 0)
    elif kind == "when":
        sign_text = text.split("showing ")[1].split(":")[0]
        frames = [f for f, s in enumerate(scenes) if s.sign is not None and s.sign.text == sign_text]
        assert frames and {clip.third_of(f) for f in frames} == {question.answer}
    elif kind == "needle":
        frames = [f for f, s in enumerate(scenes) if s.sign is not None and s.sign.text == question.answer]
        assert 1 <= len(frames) <= 2 and tuple(frames) == question.evidence


def _has_shape(scene, shape: str) -> bool:
    return any(item.shape == shape for item in scene.objects)


def test_prompt_lists_lettered_options_and_the_answer_letter_points_at_the_answer():
    _, question = ask("motion", "short", np.random.default_rng(3))
    lines = question.prompt("Answer with the option's letter.").splitlines()
    assert lines[0] == question.text and lines[-1] == "Answer with the option's letter."
    assert lines[1 + LETTERS.index(question.answer_letter)] == f"{question.answer_letter}. {question.answer}"


def test_needles_are_missed_by_a_low_uniform_frame_budget():
    missed = 0
    for seed in SEEDS:
        _, question = ask("needle", "long", np.random.default_rng(seed))
        missed += not set(question.evidence) & set(uniform_frames(CLIP_LENGTHS["long"], 8))
    assert missed >= 0.75 * len(SEEDS)  # 8 of 128 frames sampled: a 1-2 frame needle is mostly missed


def test_temporal_answers_need_more_than_the_middle_frame():
    # the evidence of a temporal question spans frames; the middle frame alone rarely holds all of it
    for kind in ("order", "change", "motion"):
        spans = [ask(kind, "medium", np.random.default_rng(seed))[1].evidence for seed in SEEDS]
        assert all(len(set(span)) >= 2 for span in spans), kind


def test_uniform_frames():
    assert uniform_frames(8, 16) == list(range(8))
    assert uniform_frames(128, 4) == [0, 42, 85, 127]
    assert len(set(uniform_frames(32, 8))) == 8


def test_render_clip_gives_frames_of_the_image_world():
    clip = sample_clip(np.random.default_rng(0), 8)
    pixels = render_clip(clip)
    assert pixels.shape == (8, IMAGE_SIZE, IMAGE_SIZE, 3) and pixels.dtype == np.uint8
    assert not np.array_equal(pixels[0], pixels[1])  # per-frame noise at least


def test_unknown_kind_or_length_is_refused():
    with pytest.raises(ValueError, match="unknown video question type 'colour'"):
        ask("colour", "short", np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown clip length 'huge'"):
        ask("order", "huge", np.random.default_rng(0))
