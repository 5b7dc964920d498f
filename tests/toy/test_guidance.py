"""Option-step attention guidance: spans of lettered options, and the guided heads' attention mass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, LlavaForConditionalGeneration
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from mmaccel.loading import toy_checkpoint_path
from mmaccel.toy.font import CHARACTERS
from mmaccel.toy.model import toy_config
from mmaccel.toy.questions import LETTERS, Question
from mmaccel.toy.training.data import TurnEncoder, packed_batch, vision_batch
from mmaccel.toy.training.guidance import (
    OptionGuidance,
    binding_queries,
    choice_queries,
    content_loss,
    content_targets,
    focus_queries,
)
from mmaccel.toy.training.train import packed_loss
from mmaccel.toy.world import sample_scene

TINY = {"vision_hidden": 32, "vision_layers": 2, "text_hidden": 64, "text_layers": 2, "text_heads": 4}
MC_MIX = {"mc": 1.0, "science": 1.0, "copy": 1.0, "color": 1.0}


@pytest.fixture(scope="module")
def encoder():
    return TurnEncoder(AutoTokenizer.from_pretrained(toy_checkpoint_path()))


@pytest.fixture()
def tiny_model():
    torch.manual_seed(0)
    return LlavaForConditionalGeneration(toy_config(**TINY))


def _decode(encoder: TurnEncoder, ids) -> str:
    return encoder.tokenizer.decode(ids).strip()


def test_option_spans_cover_each_letter_and_option_text(encoder):
    question = Question("mc", "text", "What is written on the sign?", "B", ("K7", "the red object", "3"))
    prompt = question.prompt("Answer with the option's letter from the given choices directly.")
    ids, _ = encoder.turn(prompt, question.answer)
    letters, contents = encoder.option_spans(prompt, question.options)
    assert [_decode(encoder, [ids[index]]) for index in letters] == ["A", "B", "C"]
    assert [_decode(encoder, [ids[index] for index in content]) for content in contents] == list(question.options)
    assert all(letter < content[0] for letter, content in zip(letters, contents, strict=True))


def test_packed_option_turns_point_at_their_tokens(encoder):
    batch = packed_batch(np.random.default_rng(5), encoder, 6, 16, mix=MC_MIX, length=256)
    option_kinds = sum(kind in ("mc", "science", "copy") for kinds in batch.kinds for kind in kinds)
    assert len(batch.options) == option_kinds > 0
    for turn in batch.options:
        ids = batch.input_ids[turn.row]
        letters = [_decode(encoder, [ids[index]]) for index in turn.letters]
        assert letters == list(LETTERS[: len(turn.letters)])
        # the query position predicts the answer letter, which is the correct option's letter
        assert _decode(encoder, [batch.labels[turn.row, turn.query]]).endswith(LETTERS[turn.correct])
        assert batch.labels[turn.row, turn.query + 1] == encoder.eos_id
        # every guided position belongs to the same turn as the query
        turn_segment = batch.segments[turn.row, turn.query]
        for content in turn.contents:
            assert (batch.segments[turn.row, list(content)] == turn_segment).all()


def _reference_mass(capture, queries, mask, head: int) -> torch.Tensor:
    """Attention mass on targets from the full head computation, as the model's attention computes it."""
    attention = capture.attention
    hidden = capture.inputs["hidden"]
    cos, sin = capture.inputs["rope"]
    batch, length, _ = hidden.shape
    query = attention.q_proj(hidden).view(batch, length, -1, attention.head_dim).transpose(1, 2)
    key = attention.k_proj(hidden).view(batch, length, -1, attention.head_dim).transpose(1, 2)
    query, key = apply_rotary_pos_emb(query, key, cos, sin)
    masses = []
    for row, position, targets in zip(queries.rows, queries.positions, queries.targets, strict=True):
        scores = (query[row, head, position] @ key[row, head].T) * attention.scaling  # [L]
        probs = scores.masked_fill(~mask[row, 0, position], float("-inf")).softmax(-1)
        masses.append(probs[targets].sum())
    return torch.stack(masses)


@pytest.mark.parametrize("head", [0, 2])
def test_guidance_loss_is_minus_log_attention_mass_of_the_real_heads(encoder, tiny_model, head):
    batch = packed_batch(np.random.default_rng(6), encoder, 3, 16, mix=MC_MIX, length=200)
    mask = batch.attention_mask()
    with torch.no_grad(), OptionGuidance(tiny_model.model.language_model) as guidance:
        packed_loss(tiny_model, batch)
        captures = (
            (guidance.binding, binding_queries(batch)),
            (guidance.choice, choice_queries(batch)),
            (guidance.focus, focus_queries(batch)),
        )
        for capture, queries in captures:
            expected = -_reference_mass(capture, queries, mask, head).log().mean()
            torch.testing.assert_close(capture.loss(queries, mask, head=head), expected, rtol=1e-5, atol=1e-5)


def test_guidance_gradient_moves_the_heads_onto_their_targets(encoder, tiny_model):
    batch = packed_batch(np.random.default_rng(7), encoder, 4, 16, mix=MC_MIX, length=200)
    mask = batch.attention_mask()
    values = []
    with OptionGuidance(tiny_model.model.language_model) as guidance:
        optimizer = torch.optim.Adam([*tiny_model.parameters(), *guidance.parameters()], lr=3e-3)
        for _ in range(15):
            packed_loss(tiny_model, batch)
            loss, terms = guidance.loss(batch, mask)
            values.append(terms)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert values[-1]["binding"] < 0.5 * values[0]["binding"]
    assert values[-1]["choice"] < 0.5 * values[0]["choice"]
    assert values[-1]["focus"] < 0.5 * values[0]["focus"]
    assert values[-1]["content"] < values[0]["content"]


def test_content_probe_targets_the_distinctive_tokens_of_the_correct_option(encoder):
    batch = packed_batch(np.random.default_rng(10), encoder, 8, 16, mix=MC_MIX, length=256)
    science = packed_batch(np.random.default_rng(10), encoder, 4, 16, mix={"science": 1.0}, length=256)
    seen_science = False
    for each in (science, batch):
        entries = content_targets(each)
        assert len(entries) == len(each.options)  # every option turn of these mixes has a distinctive token
        seen_science |= _check_content_targets(encoder, each, entries)
    assert seen_science
    vocab = len(encoder.tokenizer)
    probe = torch.nn.Linear(8, vocab)
    torch.nn.init.zeros_(probe.weight)
    torch.nn.init.zeros_(probe.bias)
    hidden = torch.randn(*batch.input_ids.shape, 8)
    # a uniform probe costs log(vocab) whatever the targets
    assert float(content_loss(probe, hidden, batch)) == pytest.approx(np.log(vocab), rel=1e-5)


def _check_content_targets(encoder, batch, entries) -> bool:
    seen_science = False
    for (row, query, tokens), turn in zip(entries, batch.options, strict=True):
        assert (row, query) == (turn.row, turn.query)
        correct = _decode(encoder, batch.input_ids[turn.row, list(turn.contents[turn.correct])])
        words = _decode(encoder, tokens)
        if correct.startswith("the "):  # science comparisons: "the red object" -> "red"
            seen_science = True
            assert words == correct.split()[1]
        else:
            assert words.replace(" ", "") == correct.replace(" ", "")
    return seen_science


def test_guided_packed_loss_adds_the_weighted_guidance(encoder, tiny_model):
    batch = packed_batch(np.random.default_rng(8), encoder, 2, 16, mix=MC_MIX, length=200)
    with torch.no_grad(), OptionGuidance(tiny_model.model.language_model) as guidance:
        plain, _ = packed_loss(tiny_model, batch)
        guided, _ = packed_loss(tiny_model, batch, guidance=guidance, guide_weight=0.5)
        extra, _ = guidance.loss(batch, batch.attention_mask())
    torch.testing.assert_close(guided, plain + 0.5 * extra)
    assert float(extra) > 0


def test_hooks_are_removed_on_exit(tiny_model):
    layers = tiny_model.model.language_model.layers
    with OptionGuidance(tiny_model.model.language_model):
        assert layers[0].self_attn._forward_pre_hooks
    assert not any(layer.self_attn._forward_pre_hooks for layer in layers)


def test_vision_batch_marks_the_sign_characters():
    batch = vision_batch(np.random.default_rng(9), 16)
    rng = np.random.default_rng(9)
    scenes = [sample_scene(rng) for _ in range(16)]
    for index, scene in enumerate(scenes):
        expected = {CHARACTERS.index(character) for character in (scene.sign.text if scene.sign else "")}
        assert set(batch.characters[index].nonzero().flatten().tolist()) == expected
