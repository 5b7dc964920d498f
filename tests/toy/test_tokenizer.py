"""The toy tokenizer encodes any text, keeps the vocabulary of the world compact, and matches the processor."""

from __future__ import annotations

import numpy as np
import pytest

from mmaccel.toy.processor import build_processor, user_prompt
from mmaccel.toy.questions import OPTION_SUFFIX, POPE_SUFFIX, SHORT_ANSWER, sample_example
from mmaccel.toy.tokenizer import IMAGE_TOKEN_ID, build_tokenizer
from mmaccel.toy.training.data import TurnEncoder
from mmaccel.toy.world import COLOR_NAMES, SHAPES, render


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.mark.parametrize(
    "text",
    [
        "Ünïcode ✓ 日本語 🙂 tabs\tand\nnewlines",
        "What is the name of the colony shown?\n" + SHORT_ANSWER,
        "Is there a dog in the image? " + POPE_SUFFIX,
        "A. red\nB. blue\n" + OPTION_SUFFIX,
        "",
        "   leading and trailing   ",
    ],
)
def test_round_trip_on_arbitrary_text(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text


def test_world_words_are_single_tokens(tokenizer):
    for word in [*COLOR_NAMES, *SHAPES, "yes", "no", "left", "right", "top", "bottom"]:
        assert len(tokenizer(" " + word, add_special_tokens=False)["input_ids"]) == 1, word
    assert len(tokenizer(" " + OPTION_SUFFIX, add_special_tokens=False)["input_ids"]) <= 14
    assert tokenizer.convert_tokens_to_ids("<image>") == IMAGE_TOKEN_ID


@pytest.mark.parametrize("text", ["A", "D", "3", "K7", "Q"])
def test_standalone_letters_and_digits_are_one_token_each_after_a_space_token(tokenizer, text):
    """An answer letter is the same token as the option letter of ``A. red``, and sign text reads per character."""
    space, *characters = tokenizer(" " + text, add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(space) == "Ġ"
    assert [tokenizer.decode([index]) for index in characters] == list(text)
    in_option = tokenizer(f"\n{text}. red", add_special_tokens=False)["input_ids"]
    assert in_option[1 : 1 + len(text)] == characters


def test_tokenizer_build_is_deterministic(tokenizer):
    assert build_tokenizer().get_vocab() == tokenizer.get_vocab()


def test_training_pieces_match_the_processor(tokenizer):
    processor = build_processor(tokenizer)
    encoder = TurnEncoder(tokenizer)
    for kind in ("mc", "science", "exist", "text"):
        scene, question = sample_example(kind, np.random.default_rng(0))
        prompt = question.prompt(OPTION_SUFFIX if question.options else SHORT_ANSWER)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        assert text == user_prompt(prompt)
        inputs = processor(images=render(scene), text=text, return_tensors="pt")
        prompt_ids, _ = encoder.turn(prompt, question.answer)
        assert inputs["input_ids"][0].tolist() == encoder.prefix + prompt_ids
        assert int((inputs["input_ids"] == IMAGE_TOKEN_ID).sum()) == 64


def test_pixel_tensor_matches_the_image_processor(tokenizer):
    from mmaccel.toy.training.data import pixel_tensor

    processor = build_processor(tokenizer)
    scene, _ = sample_example("color", np.random.default_rng(1))
    image = render(scene)
    expected = processor.image_processor(images=image, return_tensors="pt")["pixel_values"]
    np.testing.assert_allclose(pixel_tensor([image]).numpy(), expected.numpy(), atol=1e-5)
