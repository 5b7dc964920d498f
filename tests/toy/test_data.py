"""Stage-2 training batches: packed turns compute what single-turn prompts compute; rows fill a fixed length."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, LlavaForConditionalGeneration

from mmaccel.loading import toy_checkpoint_path
from mmaccel.toy.model import toy_config
from mmaccel.toy.questions import LETTERS
from mmaccel.toy.training.data import TRAIN_MIX, TurnEncoder, ask_option_copy, focus_patches, packed_batch
from mmaccel.toy.training.train import packed_loss
from mmaccel.toy.world import COLOR_NAMES, SHAPES, patch_labels, sample_scene

TINY = {"vision_hidden": 32, "vision_layers": 2, "text_hidden": 64, "text_layers": 2, "text_heads": 4}


@pytest.fixture(scope="module")
def encoder():
    return TurnEncoder(AutoTokenizer.from_pretrained(toy_checkpoint_path()))


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return LlavaForConditionalGeneration(toy_config(**TINY)).eval()


def test_rows_are_filled_up_to_a_fixed_length(encoder):
    batch = packed_batch(np.random.default_rng(1), encoder, 6, 16, length=200)
    assert batch.input_ids.shape == (6, 200)
    used = (batch.segments >= 0) | (batch.input_ids == encoder.tokenizer.convert_tokens_to_ids("<image>"))
    assert all(len(kinds) >= 2 for kinds in batch.kinds)
    # every row ends its last turn within the length, and every turn has its answer and </s> as targets
    for row, kinds in enumerate(batch.kinds):
        assert int(batch.segments[row].max()) == len(kinds)
        targets = batch.labels[row][batch.labels[row] >= 0].tolist()
        assert targets.count(encoder.eos_id) == len(kinds)
    assert used.any(dim=1).all()


def test_without_a_length_rows_hold_the_requested_turns(encoder):
    batch = packed_batch(np.random.default_rng(2), encoder, 4, 3)
    assert [len(kinds) for kinds in batch.kinds] == [3, 3, 3, 3]


def test_packed_turns_equal_single_turn_prompts(encoder, tiny_model):
    batch = packed_batch(np.random.default_rng(3), encoder, 2, 16, length=180, drop_probability=0.0)
    with torch.no_grad():
        packed = tiny_model(
            input_ids=batch.input_ids,
            pixel_values=batch.pixel_values,
            attention_mask=batch.attention_mask(),
            position_ids=batch.positions,
        ).logits  # [B, L, V]
    prefix = len(encoder.prefix)
    for row in range(2):
        for turn in range(1, len(batch.kinds[row]) + 1):
            where = (batch.segments[row] == turn).nonzero().squeeze(1)  # [T]
            single_ids = torch.cat([batch.input_ids[row, :prefix], batch.input_ids[row, where]])[None]  # [1, P+T]
            with torch.no_grad():
                single = tiny_model(input_ids=single_ids, pixel_values=batch.pixel_values[row : row + 1]).logits
            torch.testing.assert_close(single[0, prefix:], packed[row, where], atol=2e-5, rtol=0)


def test_packed_loss_counts_answer_tokens_only(encoder, tiny_model):
    batch = packed_batch(np.random.default_rng(4), encoder, 3, 16, length=160)
    loss, correct = packed_loss(tiny_model, batch)
    assert correct.numel() == int((batch.labels >= 0).sum())
    assert torch.isfinite(loss)


def test_option_copy_answers_the_letter_of_the_repeated_option():
    rng = np.random.default_rng(5)
    for _ in range(50):
        question = ask_option_copy(sample_scene(rng), rng)
        word = question.text.removeprefix("Which option is ").removesuffix("?")
        assert question.options[LETTERS.index(question.answer)] == word
        assert len(set(question.options)) == len(question.options) >= 2
    assert "copy" in TRAIN_MIX


def test_verify_questions_are_mme_forms_with_correct_answers():
    from mmaccel.toy.suites.yesno import MME_SUFFIX
    from mmaccel.toy.training.data import VERIFY_WEIGHTS, ask_verify
    from mmaccel.toy.world import GRID

    rng = np.random.default_rng(4)
    seen = set()
    for _ in range(300):
        scene = sample_scene(rng)
        question = ask_verify(scene, rng)
        if question is None:
            continue
        seen.add(question.subtype)
        assert question.kind == "verify" and question.answer in ("yes", "no")
        assert question.prompt() == question.text and "\n" not in question.text
        text = question.text.removesuffix(MME_SUFFIX)
        if question.subtype == "position":  # "Is the red circle on the left of the image?"
            words = text.rstrip("?").split()
            (item,) = scene.find(color=words[2], shape=words[3])
            side = words[6]
            truth = {"left": item.col < GRID // 2, "right": item.col >= GRID // 2,
                     "top": item.row < GRID // 2, "bottom": item.row >= GRID // 2}[side]  # fmt: skip
            assert question.answer == ("yes" if truth else "no")
        if question.subtype == "OCR":
            written = text.split('"')[1]
            assert question.answer == ("yes" if written == scene.sign.text else "no")
    assert seen == set(VERIFY_WEIGHTS)


def test_ocr_line_questions_follow_llava_textvqa_prompts():
    from mmaccel.toy.suites.open_ended import OCR_LINE
    from mmaccel.toy.training.data import ask_ocr_line

    rng = np.random.default_rng(5)
    asked = 0
    for _ in range(100):
        scene = sample_scene(rng)
        question = ask_ocr_line(scene, rng)
        if scene.sign is None:
            assert question is None
            continue
        asked += 1
        first, second = question.text.split("\n")
        assert first == "What is written on the sign?" and second.startswith(OCR_LINE)
        assert question.answer == scene.sign.text
    assert asked > 20


def test_position_heads_read_row_and_column_of_every_visual_token():
    from mmaccel.toy.training.train import PositionHeads

    torch.manual_seed(0)
    heads = PositionHeads(16)
    grid = torch.arange(64)
    # features that carry the row and column one-hot are learnable to zero loss; random ones are not
    informative = torch.cat([torch.nn.functional.one_hot(grid // 8, 8), torch.nn.functional.one_hot(grid % 8, 8)], 1)
    informative = informative.float()[None].expand(2, -1, -1) * 10
    optimizer = torch.optim.Adam(heads.parameters(), lr=0.1)
    for _ in range(100):
        loss = heads.loss(informative)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    features = torch.nn.functional.layer_norm(informative, (16,))
    assert bool(
        (heads.row(features).argmax(-1) == grid // 8).all() and (heads.col(features).argmax(-1) == grid % 8).all()
    )
    # label smoothing bounds the margin: the loss stays above the targets' entropy instead of going to zero
    assert 1.0 < float(heads.loss(informative)) < 0.6 * float(heads.loss(torch.randn(2, 64, 16)))


def test_focus_patches_are_the_named_objects_and_the_sign():
    rng = np.random.default_rng(11)
    for _ in range(60):
        scene = sample_scene(rng, sign_probability=1.0)
        labels = patch_labels(scene)
        for item in scene.objects:
            patches = focus_patches(scene, (item.name,))
            assert patches, item  # every object has at least one patch, also a small one across four
            # every patch labelled with the object is in its focus
            same_color = labels.color == COLOR_NAMES.index(item.color) + 1
            labelled = same_color & (labels.shape == SHAPES.index(item.shape) + 1)
            assert set(np.flatnonzero(labelled).tolist()) <= set(patches)
            rows, cols = np.divmod(np.array(patches), 8)
            assert (rows // 2 == item.row).any() and (cols // 2 == item.col).any()
        sign = focus_patches(scene, ("sign",))
        assert set(np.flatnonzero(labels.character).tolist()) <= set(sign)
        both = focus_patches(scene, (scene.objects[0].name, "sign"))
        assert set(both) == set(sign) | set(focus_patches(scene, (scene.objects[0].name,)))


def test_focus_turns_point_from_the_answer_positions_at_kept_image_tokens(encoder):
    batch = packed_batch(np.random.default_rng(12), encoder, 8, 16, drop_probability=1.0, length=256)
    image_id = encoder.tokenizer.convert_tokens_to_ids("<image>")
    assert len(batch.focus) > 8
    for turn in batch.focus:
        segments = batch.segments[turn.row]
        assert (batch.input_ids[turn.row, list(turn.targets)] == image_id).all()
        assert (segments[list(turn.targets)] == 0).all()  # kept image tokens only
        labels = batch.labels[turn.row, list(turn.queries)]
        assert (labels >= 0).all() and (labels != encoder.eos_id).all()
        # the queries predict every answer token of one turn: the next position predicts </s>
        assert batch.labels[turn.row, turn.queries[-1] + 1] == encoder.eos_id
        assert len(set(segments[list(turn.queries)].tolist())) == 1
