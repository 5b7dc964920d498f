"""The shapes world and its question generators: answers follow from the scene, seeds reproduce."""

from __future__ import annotations

import numpy as np
import pytest

from mmaccel.toy.font import CHARACTERS, glyph, render_text
from mmaccel.toy.questions import (
    CORNER_HINT,
    LETTERS,
    QUESTION_TYPES,
    choose_suffix,
    rotate_options,
    sample_example,
)
from mmaccel.toy.world import COLORS, CORNERS, GRID, IMAGE_SIZE, NUM_PATCHES, patch_labels, render, sample_scene


def test_font_covers_digits_and_capitals():
    assert "".join(CHARACTERS) == "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    bitmaps = {character: glyph(character).tobytes() for character in CHARACTERS}
    assert len(set(bitmaps.values())) == len(CHARACTERS)
    assert render_text("K7", scale=2).shape == (14, 22)


def test_scene_and_render_are_reproducible_from_the_seed():
    first = sample_scene(np.random.default_rng(7))
    second = sample_scene(np.random.default_rng(7))
    assert first == second
    np.testing.assert_array_equal(render(first), render(second))
    image = render(first)
    assert image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and image.dtype == np.uint8


def test_render_paints_objects_in_their_colour():
    rng = np.random.default_rng(3)
    for _ in range(20):
        scene = sample_scene(rng)
        image = render(scene).astype(float)
        for item in scene.objects:
            if item.shape == "triangle":
                continue
            pixel = image[
                int(item.center_y) - 1 : int(item.center_y) + 2, int(item.center_x) - 1 : int(item.center_x) + 2
            ]
            assert np.abs(pixel.mean(axis=(0, 1)) - COLORS[item.color]).max() < 45


def test_patch_labels_mark_objects_and_signs():
    scene = sample_scene(np.random.default_rng(11), sign_probability=1.0)
    labels = patch_labels(scene)
    assert labels.color.shape == (NUM_PATCHES,)
    assert set(np.unique(labels.color[labels.color > 0])) <= set(range(1, 7))
    assert labels.sign.sum() > 0 and labels.character.sum() > 0
    assert {CHARACTERS[value - 1] for value in labels.character[labels.character > 0]} <= set(scene.sign.text)


def _recompute_answer(scene, question) -> str:
    """Answer ``question`` again from the scene description alone."""
    words = question.text.rstrip("?").split()
    if question.kind == "exist":
        color, shape = words[3], words[4]
        return "yes" if scene.find(color=color, shape=shape) else "no"
    if question.kind == "color":
        (item,) = scene.find(shape=words[-1])
        return item.color
    if question.kind == "shape":
        (item,) = scene.find(color=words[-2])
        return item.shape
    if question.kind == "count":
        if words[2] == "shapes":
            return str(len(scene.objects))
        if words[3] == "shapes":
            return str(len(scene.find(color=words[2])))
        return str(len(scene.find(shape=words[2][:-1])))
    if question.kind == "position":
        (item,) = scene.find(color=words[2], shape=words[3])
        if "left" in words:
            return "left" if item.col < GRID // 2 else "right"
        return "top" if item.row < GRID // 2 else "bottom"
    if question.kind == "relation":
        (anchor,) = scene.find(color=words[-2], shape=words[-1])
        relation = " ".join(words[5:-3])
        tests = {
            "left of": lambda item: item.col < anchor.col,
            "right of": lambda item: item.col > anchor.col,
            "above": lambda item: item.row < anchor.row,
            "below": lambda item: item.row > anchor.row,
        }
        (target,) = [item for item in scene.objects if item is not anchor and tests[relation](item)]
        return target.color if words[1] == "color" else target.shape
    if question.kind == "text":
        return scene.sign.text
    raise AssertionError(question.kind)


@pytest.mark.parametrize("kind", QUESTION_TYPES)
def test_answers_are_correct_by_construction(kind):
    rng = np.random.default_rng(100 + QUESTION_TYPES.index(kind))
    for _ in range(150):
        scene, question = sample_example(kind, rng)
        assert question.kind == kind
        if kind == "mc":
            inner = question.options[LETTERS.index(question.answer)]
            plain = type(question)(question.subtype, "", question.text, inner)
            assert _recompute_answer(scene, plain) == inner
            assert len(set(question.options)) == len(question.options)
        elif kind == "science" and question.subtype == "corners":
            (item,) = scene.find(color=question.text.split()[-3])
            assert question.options[LETTERS.index(question.answer)] == str(CORNERS[item.shape])
            assert sorted(question.options) == ["0", "3", "4"]
        elif kind == "science":
            corners = {}
            for option in question.options:
                (item,) = scene.find(color=option.split()[1])
                corners[option] = CORNERS[item.shape]
            pick = max if question.subtype == "most" else min
            best = pick(corners.values())
            assert [option for option, value in corners.items() if value == best] == [
                question.options[LETTERS.index(question.answer)]
            ]
            assert question.hint in ("", CORNER_HINT)
        else:
            assert _recompute_answer(scene, question) == question.answer


@pytest.mark.parametrize("kind", QUESTION_TYPES)
def test_focus_names_what_the_answer_is_read_from(kind):
    rng = np.random.default_rng(200 + QUESTION_TYPES.index(kind))
    for _ in range(100):
        scene, question = sample_example(kind, rng)
        names = {item.name for item in scene.objects}
        if question.focus == ("sign",):
            assert scene.sign is not None and question.kind in ("text", "mc")
            continue
        assert set(question.focus) <= names
        if kind == "relation":
            (name,) = question.focus
            assert question.text.endswith(f"the {name}?")
        if kind in ("color", "shape", "position"):
            (name,) = question.focus
            (item,) = [item for item in scene.objects if item.name == name]
            answers = {"color": item.color, "shape": item.shape}
            if kind == "position":
                answers = {"left_right": "left" if item.col < GRID // 2 else "right"}
                answers["top_bottom"] = "top" if item.row < GRID // 2 else "bottom"
                assert question.answer == answers[question.subtype]
            else:
                assert question.answer == answers[kind]
        if kind == "exist":
            assert bool(question.focus) == (question.answer == "yes")


def test_examples_reproduce_from_the_seed():
    for kind in QUESTION_TYPES:
        first = sample_example(kind, np.random.default_rng(5))
        second = sample_example(kind, np.random.default_rng(5))
        assert first == second


def test_exist_negatives_follow_pope():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        scene, question = sample_example("exist", rng)
        seen.add(question.subtype)
        if question.subtype == "neg_adversarial":
            color, shape = question.text.split()[3:5]
            assert scene.find(color=color) and scene.find(shape=shape) and not scene.find(color=color, shape=shape)
    assert seen == {"positive", "neg_random", "neg_popular", "neg_adversarial"}


def test_rotating_options_moves_the_answer():
    _, question = sample_example("mc", np.random.default_rng(1))
    correct = question.options[LETTERS.index(question.answer)]
    for shift in range(len(question.options)):
        rotated = rotate_options(question, shift)
        assert rotated.options[LETTERS.index(rotated.answer)] == correct
    prompt = question.prompt(choose_suffix(question, np.random.default_rng(0)))
    assert "\nA. " in prompt
