"""The shipped toy checkpoint: standard layout, offline round trip, ``mmaccel.load`` and an accuracy floor."""

from __future__ import annotations

import time

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, LlavaForConditionalGeneration

import mmaccel
from mmaccel.errors import ConfigError
from mmaccel.loading import toy_checkpoint_path
from mmaccel.toy.processor import user_prompt
from mmaccel.toy.training.data import TurnEncoder
from mmaccel.toy.training.evaluate import heldout_set, score_examples, summarize
from mmaccel.toy.world import render

# Floors well below the measured accuracy (docs/toy-model.md) that a broken checkpoint cannot reach.
# On this subset the shipped model scores 78.7 overall (colour, shape, exist and science 100, text 50).
FLOOR_ALL = 65.0
FLOOR_PER_TYPE = {"exist": 80, "color": 85, "shape": 85, "count": 55, "relation": 50, "text": 30, "science": 70}


@pytest.fixture(scope="module")
def toy():
    return mmaccel.load("toy")


def test_checkpoint_is_small_fp16_in_the_standard_layout():
    path = toy_checkpoint_path()
    names = {item.name for item in path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= names
    assert (path / "model.safetensors").stat().st_size <= 25 * 1024 * 1024
    from safetensors import safe_open

    with safe_open(path / "model.safetensors", "pt") as weights:
        assert {weights.get_slice(key).get_dtype() for key in weights.keys()} == {"F16"}  # noqa: SIM118


def test_round_trip_through_from_pretrained():
    path = toy_checkpoint_path()
    model = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True)
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    assert isinstance(model, LlavaForConditionalGeneration)
    assert model.config.vision_feature_select_strategy == "default"
    assert model.config.vision_feature_layer == -2
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    example = heldout_set(1, kinds=("color",))[0]
    inputs = processor(images=render(example.scene), text=text, return_tensors="pt")
    assert int((inputs["input_ids"] == model.config.image_token_index).sum()) >= 64


def test_load_toy_returns_model_and_processor_in_eval_mode(toy):
    model, processor = toy
    assert not model.training
    assert next(model.parameters()).dtype == torch.float32
    assert processor.tokenizer.decode(processor.tokenizer("any text ✓")["input_ids"]) == "any text ✓"


def test_load_reports_missing_or_invalid_paths(tmp_path):
    with pytest.raises(ConfigError, match="no such directory"):
        mmaccel.load(tmp_path / "missing")
    with pytest.raises(ConfigError, match=r"config\.json"):
        mmaccel.load(tmp_path)


def test_generate_answers_a_held_out_question(toy):
    model, processor = toy
    example = heldout_set(3, kinds=("color",))[0]
    inputs = processor(images=render(example.scene), text=user_prompt(example.prompt), return_tensors="pt")
    start = time.perf_counter()
    output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    elapsed = time.perf_counter() - start
    answer = processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    assert answer in {"red", "green", "blue", "yellow", "purple", "cyan"}
    assert elapsed < 2.0


def test_accuracy_floor_on_a_fixed_held_out_subset(toy):
    model, processor = toy
    examples = heldout_set(12)  # 108 questions, 12 of each type
    table = summarize(examples, score_examples(model, TurnEncoder(processor.tokenizer), examples))
    assert table["all"] >= FLOOR_ALL, table
    for kind, floor in FLOOR_PER_TYPE.items():
        assert table[kind] >= floor, (kind, table)
    blind = summarize(examples, score_examples(model, TurnEncoder(processor.tokenizer), examples, keep=0))
    assert blind["all"] < table["all"] - 20, blind
